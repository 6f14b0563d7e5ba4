"""The MCP tools (SPEC §7): thin translations from arguments to `Conductor` calls.

Tools are built as SDK `Tool` objects (public API) so their published schemas can be the
compact ones of `schemas.py`: `tools/list` is read by every agent on every session, so its
size is a budget (`tests/test_token_budget.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from podium.core.conductor import Conductor
from podium.core.diagnosis_answer import Diagnosis
from podium.core.errors import PodiumError
from podium.core.estimate import Estimate
from podium.core.job_tasks import RUN_JOB_WAIT_SECONDS
from podium.core.models import Decision, JobDetail, JobStatus, JobSummary, SheetStatus
from podium.core.snapshots import SnapshotElsewhere, SnapshotInfo
from podium.core.views import (
    ClearResult,
    ConductorStatus,
    LogChunk,
    SubmittedJob,
    ValidationReport,
)
from podium.server.app_view import JOB_VIEW_URI
from podium.server.guard import RESULT_TEXT, compact_json
from podium.server.schemas import compact_input_schema, model_output_schema
from podium.server.sdk_seams import keep_text_arguments
from podium.server.tool_errors import mapped_errors

SPEC_EXAMPLE = """\
name: demo
sheets:
- name: build
  prompt: make > build.log 2>&1
  validations: [{type: file_exists, path: build.log}]
- name: fix
  depends_on: [build]
  instrument: claude-code
  instrument_config: {permission_mode: accept-edits, timeout_seconds: 900}
  prompt: "Fix the build. Log tail: {{ outputs.build }}"
  validations: [{type: command_succeeds, command: make}]"""

SPEC_RULES = """\
Rules: success = exit 0 and every validation passes (file_exists, file_modified, \
content_contains, content_regex: path+pattern; command_succeeds: command; paths relative to \
the workspace). Prompts, paths, commands are Jinja2 (workspace, sheet_num, variables, \
outputs.NAME = an ancestor's stdout tail). timeout_seconds, env, model, permission_mode go \
under instrument_config. Batch form: sheet {size, total_items} + prompt {template}."""

SpecObject = Annotated[
    dict[str, Any] | None,
    Field(description="the spec (or give spec_yaml or path)"),
]
SpecYaml = Annotated[str | None, Field(description="the spec as YAML/JSON text")]
SpecPath = Annotated[str | None, Field(description="a spec file in an allowed root")]
# Tools whose result an MCP Apps host renders with the job view page.
APP_VIEW: dict[str, Any] = {"ui": {"resourceUri": JOB_VIEW_URI}}
# A DAG is drawn whole: show_job returns every sheet up to this many.
SHOW_SHEET_LIMIT = 1000
JobId = str  # the name says it all; a description here costs every agent, every session


def _one_or_many(value: Any) -> Any:
    """Agents often pass one status as a bare string; it means a list of one."""
    return [value] if isinstance(value, str) else value


JobStatuses = Annotated[
    list[JobStatus] | None,
    BeforeValidator(_one_or_many, json_schema_input_type=JobStatus | list[JobStatus] | None),
]
SheetStatuses = Annotated[
    list[SheetStatus] | None,
    BeforeValidator(_one_or_many, json_schema_input_type=SheetStatus | list[SheetStatus] | None),
]


class JobList(BaseModel):
    jobs: list[JobSummary]
    next_cursor: str | None = Field(description="pass as cursor for the next page")


class SnapshotList(BaseModel):
    snapshots: list[SnapshotInfo]
    elsewhere: list[SnapshotElsewhere] = Field(
        default_factory=list,
        description="on a shared store: snapshots other conductors took, in their own homes "
        "(read them through those conductors)",
    )


class RateLimitsCleared(BaseModel):
    cleared: list[str] = Field(description="instruments whose rate limit was lifted")


def _read_only() -> ToolAnnotations:
    return ToolAnnotations(
        read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
    )


# Bounds of numeric arguments: past them a value means nothing here, and unbounded ones
# reached the engine as OverflowError (1e300 hours) or an SQLite integer overflow (2**63).
MAX_HOURS = 1_000_000.0  # over a century
MAX_SHEETS = 10_000  # sheets per job
MAX_ATTEMPTS = 1_000_000
MAX_OFFSET = 2**53


def _sheet_number_in_range(value: int | str | None) -> int | str | None:
    # Checked here, not by a constrained int in the union: pydantic would then report the
    # number's error and the string's ("should be a valid string") for one wrong number.
    if isinstance(value, int) and not 1 <= value <= MAX_SHEETS:
        raise PydanticCustomError(
            "sheet_range",
            "a sheet number is 1 to {most} (or give the sheet's name), not {value}",
            {"most": MAX_SHEETS, "value": value},
        )
    return value


def _control(*, destructive: bool = False) -> ToolAnnotations:
    return ToolAnnotations(
        read_only_hint=False,
        destructive_hint=destructive,
        idempotent_hint=True,
        open_world_hint=False,
    )


def _run() -> ToolAnnotations:
    # Not idempotent: every call (without a job_id) starts another job.
    return ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
    )


def _tool(
    fn: Callable[..., Any],
    *,
    title: str,
    annotations: ToolAnnotations,
    output: tuple[type[BaseModel], ...] = (),
    description: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Tool:
    tool = Tool.from_function(
        _answered(fn.__name__, mapped_errors(fn.__name__, fn)),
        title=title,
        # Docstrings wrap for the source, not for agents: one line each.
        description=description or " ".join((fn.__doc__ or "").split()),
        annotations=annotations,
        meta=meta,
    )
    tool.parameters = compact_input_schema(tool.parameters)
    # `FuncMetadata` fields are read live.
    if output:
        tool.fn_metadata.output_schema = model_output_schema(*output)
    else:
        model = tool.fn_metadata.output_model
        if isinstance(model, type) and issubclass(model, BaseModel):
            tool.fn_metadata.output_schema = model_output_schema(model)
    # The schema stays published; without a model the SDK passes the `CallToolResult` that
    # `_answered` built as it is, instead of validating the result again, dumping it again
    # and pretty-printing it into a text the guard used to replace.
    tool.fn_metadata.output_model = None
    # A spec given as YAML/JSON text, or a job id like "null", must arrive as sent.
    keep_text_arguments(tool)
    return tool


def _answered(name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """The tool with its result turned into the `CallToolResult` on the wire once: the
    structured content (a model dumped as JSON, or JSON already) and the text, compact JSON
    of it (the log itself for `logs`)."""
    render = RESULT_TEXT.get(name) or compact_json

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> CallToolResult:
        result = await fn(*args, **kwargs)
        data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
        return CallToolResult(
            content=[TextContent(type="text", text=render(data))], structured_content=data
        )

    return call


def client_name(ctx: Context) -> str:
    """Who is calling, as the client names itself (`clientInfo`), for the record of a
    decision; every era of the protocol carries it (the handshake, or each request's
    `_meta`)."""
    try:
        params = ctx.session.client_params
    except (AttributeError, RuntimeError):
        params = None
    info = params.client_info if params is not None else None
    if info is None:
        return "unknown client"
    return f"{info.name} {info.version}".strip() if info.version else info.name


def build_tools(conductor: Conductor) -> list[Tool]:
    async def submit_job(
        spec: SpecObject = None,
        spec_yaml: SpecYaml = None,
        path: SpecPath = None,
        job_id: Annotated[
            str | None, Field(description="resubmitting an id with the same spec is safe")
        ] = None,
        start: Annotated[bool, Field(description="false: register paused")] = True,
    ) -> SubmittedJob:
        try:
            return await conductor.submit_job(
                spec=spec, spec_yaml=spec_yaml, path=path, job_id=job_id, start=start
            )
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc

    async def validate_spec(
        spec: SpecObject = None, spec_yaml: SpecYaml = None, path: SpecPath = None
    ) -> ValidationReport:
        """Check a spec without running it: every error (path: message), or the sheets it
        expands to."""
        try:
            return await conductor.validate_spec(spec=spec, spec_yaml=spec_yaml, path=path)
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc

    async def list_jobs(
        status: JobStatuses = None,
        name: Annotated[str | None, Field(description="spec name")] = None,
        label: str | None = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Field(description="next_cursor of the last page")] = None,
    ) -> dict[str, Any]:
        """Job summaries, newest first; filter by status, name or label; page with cursor."""
        # A JobList's JSON (the published schema), built from the rows without the models.
        try:
            return await conductor.list_jobs_json(
                statuses=status or (), name=name, label=label, limit=limit, cursor=cursor
            )
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc

    async def status(
        ctx: Context,
        job_id: Annotated[str | None, Field(description="omit for the conductor")] = None,
        wait_seconds: Annotated[
            float,
            Field(ge=0, le=50, description="first wait up to this long for a status change"),
        ] = 0,
        sheet_status: SheetStatuses = None,
        sheet_offset: Annotated[int, Field(ge=0, le=MAX_SHEETS)] = 0,
        sheet_limit: Annotated[int, Field(ge=1, le=1000)] = 100,
        include_spec: bool = False,
    ) -> dict[str, Any]:
        """A job and a page of its sheets, or without job_id the conductor. wait_seconds
        long-polls: it returns as soon as the status changes, with progress notifications on
        each sheet transition meanwhile; never poll in a loop."""
        try:
            if wait_seconds > 0:

                async def progress(elapsed: float) -> None:
                    message = await _progress(conductor, job_id)
                    await ctx.report_progress(round(elapsed, 1), wait_seconds, message=message)

                await conductor.wait_for_change(job_id, wait_seconds, on_tick=progress)
            if job_id is None:
                return (await conductor.status()).model_dump(mode="json")
            detail = await conductor.get_job(
                job_id,
                sheet_status=sheet_status,
                sheet_offset=sheet_offset,
                sheet_limit=sheet_limit,
                include_spec=include_spec,
            )
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc
        return detail.model_dump(mode="json")

    async def pause(
        job_id: JobId,
        immediate: Annotated[bool, Field(description="SIGSTOP running sheets")] = False,
    ) -> JobSummary:
        """Pause a queued or running job; running sheets finish (or freeze, with
        immediate)."""
        try:
            return await conductor.pause_job(job_id, immediate=immediate)
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc

    async def resume(
        job_id: JobId,
        spec: SpecObject = None,
        spec_yaml: SpecYaml = None,
        path: SpecPath = None,
        retry_failed: bool = True,
    ) -> JobSummary:
        """Resume a paused, failed or cancelled job. Completed sheets never re-run; failed,
        skipped and cancelled ones do unless retry_failed is false. A changed spec (optional)
        applies to every sheet not completed."""
        try:
            return await conductor.resume_job(
                job_id, spec=spec, spec_yaml=spec_yaml, path=path, retry_failed=retry_failed
            )
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc

    async def cancel(job_id: JobId) -> JobSummary:
        """Cancel a job: its processes are killed, unfinished sheets become cancelled."""
        try:
            return await conductor.cancel_job(job_id)
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc

    async def clear(
        job_ids: list[str] | None = None,
        statuses: JobStatuses = None,
        older_than_hours: Annotated[float | None, Field(ge=0, le=MAX_HOURS)] = None,
        all: Annotated[bool, Field(description="needed when no other filter is given")] = False,
    ) -> ClearResult:
        """Delete finished jobs with their logs and snapshots (filters combine). Never
        active jobs, never workspaces."""
        try:
            return await conductor.clear_jobs(
                job_ids=job_ids,
                statuses=statuses,
                older_than_hours=older_than_hours,
                all_jobs=all,
            )
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc

    async def clear_rate_limits(instrument: str | None = None) -> RateLimitsCleared:
        """Lift rate-limit waits now (every instrument, or one)."""
        try:
            return RateLimitsCleared(cleared=await conductor.clear_rate_limits(instrument))
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc

    async def snapshots(job_id: str | None = None) -> SnapshotList:
        """Snapshots of finished jobs (checkpoint, spec, logs), newest first."""
        try:
            here = await conductor.list_snapshots(job_id)
            mine = {s.job_id for s in here}
            away = await conductor.snapshots.elsewhere(job_id)
            return SnapshotList(snapshots=here, elsewhere=[s for s in away if s.job_id not in mine])
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc

    async def logs(
        job_id: JobId,
        sheet: Annotated[
            int | str | None,
            Field(description="number or name; omit: every sheet's tail"),
            AfterValidator(_sheet_number_in_range),
        ] = None,
        attempt: Annotated[
            int | None, Field(ge=1, le=MAX_ATTEMPTS, description="default latest")
        ] = None,
        tail_lines: Annotated[int, Field(ge=1, le=10_000)] = 200,
        offset: Annotated[
            int | None,
            Field(ge=0, le=MAX_OFFSET, description="read forward from this byte (next_offset)"),
        ] = None,
    ) -> LogChunk:
        """A sheet attempt's output; the result text is the log itself."""
        try:
            return await conductor.read_logs(
                job_id, sheet=sheet, attempt=attempt, tail_lines=tail_lines, offset=offset
            )
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc

    async def run_job(
        ctx: Context,
        spec: SpecObject = None,
        spec_yaml: SpecYaml = None,
        path: SpecPath = None,
        job_id: Annotated[str | None, Field(description="as submit_job's")] = None,
    ) -> JobDetail:
        """Submit a job and wait for it: clients declaring the tasks extension get a durable
        task at once (tasks/get); others wait up to 50 s, or until an approval sheet waits,
        and get the job detail so far (then follow with status)."""
        try:

            async def progress(elapsed: float) -> None:
                await ctx.report_progress(round(elapsed, 1), RUN_JOB_WAIT_SECONDS)

            return await conductor.tasks.run_job(
                spec=spec, spec_yaml=spec_yaml, path=path, job_id=job_id, on_tick=progress
            )
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc

    async def approve(
        ctx: Context,
        job_id: JobId,
        sheet: Annotated[int | str, Field(description="number or name")],
        decision: Decision,
        note: Annotated[str | None, Field(max_length=2000)] = None,
    ) -> JobSummary:
        """Decide an approval sheet that waits (status waiting, waiting_reason approval; its
        output_tail is the question): approve lets the job go on, reject fails the sheet
        (error_category rejected). Recorded in history with your client name and the note."""
        try:
            return await conductor.approvals.approve(
                job_id, sheet, decision, note=note, decided_by=client_name(ctx)
            )
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc

    async def diagnose(job_id: JobId) -> Diagnosis:
        """Why a job failed or is stuck, in one bounded answer: failing sheets with their
        cause, failed validations (expected vs found), log lines around each error, waits,
        and next steps as tool calls."""
        try:
            return await conductor.diagnose(job_id)
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc

    async def estimate(
        spec: SpecObject = None, spec_yaml: SpecYaml = None, path: SpecPath = None
    ) -> Estimate:
        """Expected duration (DAG simulated with the job's concurrency; critical path) and
        cost of a spec, from earlier runs of the same job name or instruments; says how many
        runs it draws on, or that there is no history."""
        try:
            return await conductor.estimate(spec=spec, spec_yaml=spec_yaml, path=path)
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc

    async def show_job(job_id: JobId) -> JobDetail:
        """A job with every sheet (up to 1000), shown as a live view (DAG, timeline, logs,
        controls) by hosts that support MCP Apps."""
        try:
            return await conductor.get_job(job_id, sheet_limit=SHOW_SHEET_LIMIT)
        except PodiumError as exc:
            raise ToolError(str(exc)) from exc

    async def show_jobs(
        status: JobStatuses = None,
        name: Annotated[str | None, Field(description="spec name")] = None,
        label: str | None = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """list_jobs, shown as a live job list by hosts that support MCP Apps."""
        return await list_jobs(status=status, name=name, label=label, limit=limit, cursor=cursor)

    submit_description = (
        "Run a job in the background: sheets (shell commands or AI CLI runs) with "
        "dependencies, validations and retries. Returns at once; follow with "
        "status(wait_seconds). Schema: resource podium://spec/schema. Example:\n"
        f"{SPEC_EXAMPLE}\n{SPEC_RULES}"
    )
    return [
        _tool(
            submit_job,
            title="Submit a job",
            annotations=_control(),
            description=submit_description,
        ),
        _tool(validate_spec, title="Validate a job spec", annotations=_read_only()),
        _tool(list_jobs, title="List jobs", annotations=_read_only(), output=(JobList,)),
        _tool(
            status,
            title="Job or conductor status",
            annotations=_read_only(),
            output=(JobDetail, ConductorStatus),
        ),
        _tool(pause, title="Pause a job", annotations=_control()),
        _tool(resume, title="Resume a job", annotations=_control()),
        _tool(cancel, title="Cancel a job", annotations=_control(destructive=True)),
        _tool(clear, title="Delete finished jobs", annotations=_control(destructive=True)),
        _tool(clear_rate_limits, title="Lift rate limits", annotations=_control()),
        _tool(snapshots, title="List snapshots", annotations=_read_only()),
        _tool(logs, title="Read sheet logs", annotations=_read_only()),
        _tool(run_job, title="Run a job and wait", annotations=_run()),
        _tool(approve, title="Approve or reject a gate", annotations=_control()),
        _tool(diagnose, title="Diagnose a job", annotations=_read_only()),
        _tool(estimate, title="Estimate a spec", annotations=_read_only()),
        _tool(show_job, title="Show a job", annotations=_read_only(), meta=APP_VIEW),
        _tool(
            show_jobs,
            title="Show jobs",
            annotations=_read_only(),
            output=(JobList,),
            meta=APP_VIEW,
        ),
    ]


async def _progress(conductor: Conductor, job_id: str | None) -> str:
    if job_id is None:
        return "waiting for any job's status to change"
    detail = await conductor.get_job(job_id, sheet_status=[SheetStatus.RUNNING], sheet_limit=5)
    running = ", ".join(str(s.sheet_num) for s in detail.sheets)
    return (
        f"job {job_id}: {detail.status.value}, {detail.completed_sheets}/{detail.total_sheets} "
        f"sheets completed" + (f"; running: {running}" if running else "")
    )

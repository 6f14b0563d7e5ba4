"""The MCP tools (SPEC §7): thin translations from arguments to `Conductor` calls."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from podium.core.conductor import Conductor
from podium.core.errors import PodiumError
from podium.core.models import JobDetail, JobStatus, JobSummary, SheetStatus
from podium.core.snapshots import SnapshotInfo
from podium.core.views import (
    ClearResult,
    ConductorStatus,
    LogChunk,
    SubmittedJob,
    ValidationReport,
)

SpecObject = Annotated[
    dict[str, Any] | None,
    Field(description="The job spec as a JSON object (give exactly one of spec, spec_yaml, path)"),
]
SpecYaml = Annotated[str | None, Field(description="The job spec as YAML (or JSON) text")]
SpecPath = Annotated[
    str | None,
    Field(description="Path to a job spec file; must lie inside an allowed root"),
]
JobId = Annotated[str, Field(description="The job id returned by submit_job or list_jobs")]

SPEC_EXAMPLE = """Example spec (YAML):
  name: hello
  sheets:
    - name: list
      prompt: "ls -la /usr/share > listing.txt"
      validations: [{type: file_exists, path: listing.txt}]
    - name: count
      depends_on: [list]
      prompt: "wc -l < listing.txt > count.txt"
      validations: [{type: content_regex, path: count.txt, pattern: "^ *[0-9]+$"}]"""


class JobList(BaseModel):
    jobs: list[JobSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at end")


class SnapshotList(BaseModel):
    snapshots: list[SnapshotInfo]


class RateLimitsCleared(BaseModel):
    cleared: list[str] = Field(description="instruments whose rate limit was lifted")


def _read_only() -> ToolAnnotations:
    return ToolAnnotations(
        read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
    )


def _annotations(*, destructive: bool, idempotent: bool) -> ToolAnnotations:
    return ToolAnnotations(
        read_only_hint=False,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=False,
    )


def _tool_error(exc: PodiumError) -> ToolError:
    return ToolError(str(exc))


def register_tools(mcp: MCPServer[Any], conductor: Conductor) -> None:
    @mcp.tool(title="Submit a job", annotations=_annotations(destructive=False, idempotent=True))
    async def submit_job(
        spec: SpecObject = None,
        spec_yaml: SpecYaml = None,
        path: SpecPath = None,
        job_id: Annotated[
            str | None,
            Field(description="Optional id; resubmitting the same id and spec returns the job"),
        ] = None,
        start: Annotated[
            bool, Field(description="false registers the job paused (resume starts it)")
        ] = True,
    ) -> SubmittedJob:
        """Submit a job: sheets of work with dependencies, validations and retries. Podium runs
        it in the background and returns at once with the job summary and its workspace.
        Follow it with `status` (use `wait_seconds` to wait for changes instead of polling).
        Every problem in an invalid spec is reported at once as `path: message` lines;
        use `validate_spec` to check a spec without running it.

        """
        try:
            return await conductor.submit_job(
                spec=spec, spec_yaml=spec_yaml, path=path, job_id=job_id, start=start
            )
        except PodiumError as exc:
            raise _tool_error(exc) from exc

    submit_job.__doc__ = (submit_job.__doc__ or "") + SPEC_EXAMPLE

    @mcp.tool(title="Validate a job spec", annotations=_read_only())
    async def validate_spec(
        spec: SpecObject = None, spec_yaml: SpecYaml = None, path: SpecPath = None
    ) -> ValidationReport:
        """Check a job spec without running it. Returns `valid`, every error with its field
        path (e.g. `sheets.1.validations.0.pattern`), and the expanded sheet list with
        dependencies and instruments."""
        try:
            return await conductor.validate_spec(spec=spec, spec_yaml=spec_yaml, path=path)
        except PodiumError as exc:
            raise _tool_error(exc) from exc

    @mcp.tool(title="List jobs", annotations=_read_only())
    async def list_jobs(
        status: Annotated[
            list[JobStatus] | None, Field(description="only jobs in these statuses")
        ] = None,
        name: Annotated[str | None, Field(description="only jobs with this spec name")] = None,
        label: Annotated[str | None, Field(description="only jobs carrying this label")] = None,
        limit: Annotated[int, Field(ge=1, le=500, description="page size")] = 50,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
    ) -> JobList:
        """List jobs, newest first, as summaries (status and sheet counts). Filter by status,
        name or label; page with `cursor`."""
        try:
            jobs, next_cursor = await conductor.list_jobs(
                statuses=status or (), name=name, label=label, limit=limit, cursor=cursor
            )
        except PodiumError as exc:
            raise _tool_error(exc) from exc
        return JobList(jobs=jobs, next_cursor=next_cursor)

    @mcp.tool(title="Job or conductor status", annotations=_read_only())
    async def status(
        ctx: Context,
        job_id: Annotated[
            str | None, Field(description="a job id; omit for the conductor's own status")
        ] = None,
        wait_seconds: Annotated[
            float,
            Field(
                ge=0,
                le=50,
                description="wait up to this long for the job's status to change (or any "
                "job's, without job_id) before answering; progress is reported meanwhile",
            ),
        ] = 0,
        sheet_status: Annotated[
            list[SheetStatus] | None, Field(description="only sheets in these statuses")
        ] = None,
        sheet_offset: Annotated[int, Field(ge=0, description="first sheet of the page")] = 0,
        sheet_limit: Annotated[int, Field(ge=1, le=1000, description="sheets per page")] = 100,
        include_spec: Annotated[
            bool, Field(description="include the spec (env values redacted)")
        ] = False,
    ) -> dict[str, Any]:
        """With `job_id`: the job and a page of its sheets (status, attempts, last error,
        duration, output tail, log URI). Without: the conductor (version, jobs by status,
        running sheets, pressure, rate limits, instruments). `wait_seconds` makes this a
        bounded long-poll: it returns as soon as the status changes, so agents never need to
        poll in a tight loop."""
        try:
            if wait_seconds > 0:

                async def tick(elapsed: float) -> None:
                    await ctx.report_progress(
                        round(elapsed, 1), wait_seconds, message=await _progress(conductor, job_id)
                    )

                await conductor.wait_for_change(job_id, wait_seconds, on_tick=tick)
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
            raise _tool_error(exc) from exc
        return detail.model_dump(mode="json")

    status_tool = mcp._tool_manager.get_tool("status")
    if status_tool is not None:
        status_tool.fn_metadata.output_schema = _either_schema(JobDetail, ConductorStatus)

    @mcp.tool(title="Pause a job", annotations=_annotations(destructive=False, idempotent=True))
    async def pause(
        job_id: JobId,
        immediate: Annotated[
            bool,
            Field(description="true stops running sheets at once (SIGSTOP); resume continues them"),
        ] = False,
    ) -> JobSummary:
        """Pause a queued or running job: no new sheets start; running sheets finish and are
        recorded (or, with `immediate`, are frozen in place). Pausing a paused job is a no-op;
        a finished job cannot be paused."""
        try:
            return await conductor.pause_job(job_id, immediate=immediate)
        except PodiumError as exc:
            raise _tool_error(exc) from exc

    @mcp.tool(title="Resume a job", annotations=_annotations(destructive=False, idempotent=True))
    async def resume(
        job_id: JobId,
        spec: SpecObject = None,
        spec_yaml: SpecYaml = None,
        path: SpecPath = None,
        retry_failed: Annotated[
            bool, Field(description="re-run failed, skipped and cancelled sheets")
        ] = True,
    ) -> JobSummary:
        """Resume a paused, failed or cancelled job. Completed sheets never re-run; failed,
        skipped and cancelled ones are retried unless `retry_failed` is false. Optionally give
        a changed spec (validated first; it must keep existing sheets in place): on a running
        job this pauses it and continues with the new spec once running sheets end."""
        try:
            return await conductor.resume_job(
                job_id, spec=spec, spec_yaml=spec_yaml, path=path, retry_failed=retry_failed
            )
        except PodiumError as exc:
            raise _tool_error(exc) from exc

    @mcp.tool(title="Cancel a job", annotations=_annotations(destructive=True, idempotent=True))
    async def cancel(job_id: JobId) -> JobSummary:
        """Cancel a queued, running or paused job: running sheets (and every process they
        started) are terminated, unfinished sheets become cancelled. Returns when done.
        Cancelling a cancelled job is a no-op; a completed or failed job cannot be cancelled."""
        try:
            return await conductor.cancel_job(job_id)
        except PodiumError as exc:
            raise _tool_error(exc) from exc

    @mcp.tool(
        title="Delete finished jobs", annotations=_annotations(destructive=True, idempotent=True)
    )
    async def clear(
        job_ids: Annotated[list[str] | None, Field(description="these jobs")] = None,
        statuses: Annotated[
            list[JobStatus] | None, Field(description="completed, failed and/or cancelled")
        ] = None,
        older_than_hours: Annotated[
            float | None, Field(ge=0, description="finished at least this long ago")
        ] = None,
        all: Annotated[
            bool, Field(description="every finished job (needed with no filter)")
        ] = False,
    ) -> ClearResult:
        """Delete finished jobs (completed, failed, cancelled) with their logs and snapshots.
        Filters combine; at least one is required. Queued, running and paused jobs are never
        deleted, and workspaces are never touched."""
        try:
            return await conductor.clear_jobs(
                job_ids=job_ids,
                statuses=statuses,
                older_than_hours=older_than_hours,
                all_jobs=all,
            )
        except PodiumError as exc:
            raise _tool_error(exc) from exc

    @mcp.tool(
        title="Lift rate limits", annotations=_annotations(destructive=False, idempotent=True)
    )
    async def clear_rate_limits(
        instrument: Annotated[str | None, Field(description="only this instrument")] = None,
    ) -> RateLimitsCleared:
        """Lift active rate-limit waits now (all instruments, or one); waiting sheets of those
        instruments become runnable at once."""
        try:
            return RateLimitsCleared(cleared=await conductor.clear_rate_limits(instrument))
        except PodiumError as exc:
            raise _tool_error(exc) from exc

    @mcp.tool(title="List snapshots", annotations=_read_only())
    async def snapshots(
        job_id: Annotated[str | None, Field(description="only this job's snapshots")] = None,
    ) -> SnapshotList:
        """Snapshots of finished jobs (checkpoint, spec, logs, validation results), newest
        first, with their files and size. Taken automatically when a job ends."""
        try:
            return SnapshotList(snapshots=await conductor.list_snapshots(job_id))
        except PodiumError as exc:
            raise _tool_error(exc) from exc

    @mcp.tool(title="Read sheet logs", annotations=_read_only())
    async def logs(
        job_id: JobId,
        sheet: Annotated[
            int | None, Field(ge=1, description="sheet number; omit for every sheet's tail")
        ] = None,
        attempt: Annotated[int | None, Field(ge=1, description="attempt (default latest)")] = None,
        tail_lines: Annotated[int, Field(ge=1, le=10_000, description="lines from the end")] = 200,
        offset: Annotated[
            int | None, Field(ge=0, description="read forward from this byte offset instead")
        ] = None,
    ) -> LogChunk:
        """Read a sheet attempt's output (stdout and stderr). By default the last
        `tail_lines` of the latest attempt; with `offset`, the next page forward (continue
        from `next_offset`). `truncated` says when there is more than `text` shows."""
        try:
            return await conductor.read_logs(
                job_id, sheet=sheet, attempt=attempt, tail_lines=tail_lines, offset=offset
            )
        except PodiumError as exc:
            raise _tool_error(exc) from exc


async def _progress(conductor: Conductor, job_id: str | None) -> str:
    if job_id is None:
        return "waiting for any job's status to change"
    detail = await conductor.get_job(job_id, sheet_limit=1)
    return (
        f"job {job_id}: {detail.status.value}, {detail.completed_sheets}/{detail.total_sheets} "
        "sheets completed"
    )


def _either_schema(*models: type[BaseModel]) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    variants = []
    for model in models:
        schema = model.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        variants.append(schema)
    return {"type": "object", "anyOf": variants, "$defs": defs}

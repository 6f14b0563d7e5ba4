"""The MCP tasks extension (`io.modelcontextprotocol/tasks`, protocol 2026-07-28) over
Podium's durable tasks (`podium.core.tasks`), built on the SDK's public `Extension`:

- `run_job` called by a request that declares the extension answers at once with a task
  handle (`resultType: "task"`); the task row and its job are committed before the answer.
  Any other request gets the synchronous tool (`server/tools.py`).
- `tasks/get` (the task as its job is now: `working`, `input_required` with one elicitation
  per approval sheet that waits, `completed` inlining the final tool result, `cancelled`,
  `failed`; once ended, as it ended, read from its stored final state), `tasks/update`
  (answers to those elicitations decide the approvals), `tasks/cancel` (cancels the job;
  idempotent). A request that did not declare the extension gets -32021; an unknown or
  expired task id -32602; over HTTP an `Mcp-Name` header that is not the task id, -32020.
- `subscriptions/listen` with `taskIds` streams `notifications/tasks`: `server/task_listen.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    RequestParams,
    TextContent,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

from podium.core.conductor import Conductor
from podium.core.errors import PodiumError
from podium.core.models import Decision, format_time
from podium.core.tasks import TaskNotFoundError, TaskState
from podium.server.guard import compact_json

log = structlog.get_logger("podium.tasks")

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
TASK_TOOLS = frozenset({"run_job"})
TASK_METHODS = ("tasks/get", "tasks/update", "tasks/cancel")
MCP_NAME_HEADER = "mcp-name"
JOB_META_KEY = "podium/job_id"
MAX_LISTENED_TASKS = 100
# The elicitation an approval sheet's question becomes: approve or reject, and why.
DECISION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "decision": {
            "type": "string",
            "enum": ["approve", "reject"],
            "description": "approve lets the job go on; reject fails the sheet",
        },
        "note": {"type": "string", "description": "why (kept in the job's history)"},
    },
    "required": ["decision"],
}


class TaskParams(RequestParams):
    # Typed loosely and checked by `_task_id`: the SDK answers a params model's validation
    # error with a bare "Invalid request parameters" that names no field.
    task_id: Any = Field(None, alias="taskId")


class UpdateTaskParams(TaskParams):
    input_responses: Any = Field(None, alias="inputResponses")


def _task_id(params: TaskParams) -> str:
    if not isinstance(params.task_id, str):
        got = "missing" if params.task_id is None else f"got {type(params.task_id).__name__}"
        raise MCPError(
            code=INVALID_PARAMS,
            message=f"taskId: required, the string id of a task run_job answered with ({got})",
        )
    return params.task_id


def _input_responses(params: UpdateTaskParams) -> Mapping[str, Any]:
    if not isinstance(params.input_responses, Mapping):
        got = "missing" if params.input_responses is None else "not an object"
        raise MCPError(
            code=INVALID_PARAMS,
            message="inputResponses: required, an object keyed by the task's inputRequests "
            f"keys, each an elicitation result ({got})",
        )
    return params.input_responses


def declared(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request declared the extension (2026-07-28: in its own `_meta`)."""
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return False
    capabilities = ctx.session.client_capabilities
    extensions = capabilities.extensions if capabilities is not None else None
    if extensions and TASKS_EXTENSION in extensions:
        return True
    meta = ctx.meta or {}
    declared_caps = meta.get(CLIENT_CAPABILITIES_META_KEY)
    found = declared_caps.get("extensions") if isinstance(declared_caps, Mapping) else None
    return isinstance(found, Mapping) and TASKS_EXTENSION in found


def _client_name(ctx: ServerRequestContext[Any, Any]) -> str:
    params = ctx.session.client_params
    info = params.client_info if params is not None else None
    if info is None:
        return "unknown client"
    return f"{info.name} {info.version}".strip() if info.version else info.name


def tool_result(state: TaskState) -> dict[str, Any]:
    """The final `run_job` result a completed task inlines: the job detail; a job that did
    not complete is a tool error (`isError: true`), still a completed task."""
    detail = state.detail.model_dump(mode="json") if state.detail is not None else {}
    return {
        "content": [{"type": "text", "text": compact_json(detail)}],
        "structuredContent": detail,
        "isError": state.job_failed,
    }


def task_fields(state: TaskState, *, detailed: bool) -> dict[str, Any]:
    """The task on the wire: the handle (`detailed` false), or the `DetailedTask` of
    `tasks/get` and `notifications/tasks` with what its status carries."""
    task = state.task
    fields: dict[str, Any] = {
        "taskId": task.task_id,
        "status": state.status,
        "statusMessage": state.message,
        "createdAt": format_time(task.created_at),
        "lastUpdatedAt": format_time(state.last_updated_at),
        "ttlMs": task.ttl_ms,
        "pollIntervalMs": task.poll_interval_ms,
        # The job the task runs: what `status`, `resume` or `approve` take.
        "_meta": {JOB_META_KEY: task.job_id},
    }
    if not detailed:
        return fields
    if state.status == "completed":
        fields["result"] = tool_result(state)
    elif state.status == "failed":
        fields["error"] = {"code": INTERNAL_ERROR, "message": state.error or state.message}
    elif state.status == "input_required":
        fields["inputRequests"] = {
            a.key: {
                "method": "elicitation/create",
                "params": {
                    "mode": "form",
                    "message": a.question
                    or f"Approve sheet {a.name or a.sheet_num} of job {task.job_id}?",
                    "requestedSchema": DECISION_SCHEMA,
                },
            }
            for a in state.approvals
        }
    return fields


def _answers(responses: Mapping[str, Any]) -> tuple[dict[str, Decision], dict[str, str | None]]:
    """Elicitation results to decisions: `accept` with `decision` approve/reject, `decline`
    rejects; `cancel` (the person dismissed the question) leaves it waiting."""
    decisions: dict[str, Decision] = {}
    notes: dict[str, str | None] = {}
    for key, response in responses.items():
        if not isinstance(response, Mapping):
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"inputResponses.{key}: expected an elicitation result object",
            )
        action = response.get("action")
        content = response.get("content")
        content = content if isinstance(content, Mapping) else {}
        note = content.get("note")
        if note is not None and not isinstance(note, str):
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"inputResponses.{key}.content.note: expected a string",
            )
        notes[key] = note
        if action == "decline":
            decisions[key] = Decision.REJECT
        elif action == "accept":
            # No default: an accepted form without the required decision approves nothing.
            try:
                decisions[key] = Decision(str(content.get("decision")))
            except ValueError:
                raise MCPError(
                    code=INVALID_PARAMS,
                    message=f"inputResponses.{key}.content.decision: required with accept; "
                    "use 'approve' or 'reject'",
                ) from None
        elif action != "cancel":
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"inputResponses.{key}.action: expected accept, decline or cancel",
            )
    return decisions, notes


class TasksExtension(Extension):
    identifier = TASKS_EXTENSION

    def __init__(self, conductor: Conductor) -> None:
        self.conductor = conductor

    def methods(self) -> Sequence[MethodBinding]:
        return (
            MethodBinding("tasks/get", TaskParams, self._get),
            MethodBinding("tasks/update", UpdateTaskParams, self._update),
            MethodBinding("tasks/cancel", TaskParams, self._cancel),
        )

    async def intercept_tool_call(
        self,
        params: CallToolRequestParams,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
    ) -> HandlerResult:
        if params.name not in TASK_TOOLS or not declared(ctx):
            return await call_next(ctx)
        arguments = dict(params.arguments or {})
        try:
            state = await self.conductor.tasks.start(
                spec=arguments.get("spec"),
                spec_yaml=arguments.get("spec_yaml"),
                path=arguments.get("path"),
                job_id=arguments.get("job_id"),
                created_by=_client_name(ctx),
            )
        except PodiumError as exc:
            # Refused before any task exists (a bad spec): the answer is immediate.
            return CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)
        log.info("task created", task_id=state.task.task_id, job_id=state.task.job_id)
        return {"resultType": "task", **task_fields(state, detailed=False)}

    # ----- methods -------------------------------------------------------------------------

    async def _state(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> TaskState:
        require_client_extension(ctx, TASKS_EXTENSION)
        task_id = _task_id(params)
        _check_name_header(ctx, task_id)
        try:
            return await self.conductor.tasks.get(task_id)
        except TaskNotFoundError as exc:
            raise MCPError(code=INVALID_PARAMS, message=f"Failed to retrieve task: {exc}") from exc

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> HandlerResult:
        state = await self._state(ctx, params)
        return {"resultType": "complete", **task_fields(state, detailed=True)}

    async def _update(
        self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams
    ) -> HandlerResult:
        state = await self._state(ctx, params)
        decisions, notes = _answers(_input_responses(params))
        try:
            await self.conductor.tasks.answer(
                state.task.task_id, decisions, notes, _client_name(ctx)
            )
        except TaskNotFoundError as exc:
            raise MCPError(code=INVALID_PARAMS, message=f"Failed to update task: {exc}") from exc
        except PodiumError as exc:
            raise MCPError(code=INTERNAL_ERROR, message=str(exc)) from exc
        return {"resultType": "complete"}

    async def _cancel(
        self, ctx: ServerRequestContext[Any, Any], params: TaskParams
    ) -> HandlerResult:
        state = await self._state(ctx, params)
        try:
            await self.conductor.tasks.cancel(state.task.task_id)
        except TaskNotFoundError as exc:
            raise MCPError(code=INVALID_PARAMS, message=f"Failed to cancel task: {exc}") from exc
        except PodiumError as exc:
            raise MCPError(code=INTERNAL_ERROR, message=str(exc)) from exc
        return {"resultType": "complete"}


def _check_name_header(ctx: ServerRequestContext[Any, Any], task_id: str) -> None:
    """Over HTTP, `Mcp-Name` routes a task request; one naming another task is refused."""
    headers = getattr(ctx.request, "headers", None)
    if headers is None:
        return
    name = headers.get(MCP_NAME_HEADER)
    if name is not None and name.strip() != task_id:
        raise MCPError(
            code=HEADER_MISMATCH,
            message="Mcp-Name header does not match the request body's 'taskId' parameter",
        )

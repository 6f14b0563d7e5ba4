"""`notifications/tasks` on `subscriptions/listen` (the tasks extension): a listen request
whose `notifications` has `taskIds`, served by a middleware beside the SDK's own listen
handler (which serves every other listen).

- Every id must name a task that exists now. An unknown or expired one is refused with
  -32602 naming each such id (`data.taskIds`), as `tasks/get` answers it and as a listen for
  a resource that does not exist is refused: a stream never waits on a task that can no
  longer change.
- The acknowledgement names the tasks served; each is pushed at once as it is now, then each
  time its status (or the approvals it waits on) changes. Resource notifications asked for
  share the stream.
- A task whose `ttlMs` passes while it is listened to is no longer served. One that had not
  ended is pushed once more, `failed`, its error saying it expired (the extension lets a
  server fail a task after its TTL; the job itself goes on); one that had ended keeps the
  final status it was pushed with. A stream left with nothing to serve ends with its listen
  result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import require_client_extension
from mcp.server.subscriptions import SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import (
    SUBSCRIPTION_ID_META_KEY,
    ServerEvent,
    event_matches,
    event_to_notification,
)
from mcp_types import (
    INVALID_PARAMS,
    SubscriptionFilter,
    SubscriptionsAcknowledgedNotification,
    SubscriptionsAcknowledgedNotificationParams,
    SubscriptionsListenResult,
)

from podium.core.conductor import Conductor
from podium.core.errors import quoted
from podium.core.events import ChangeEvent
from podium.core.models import utcnow
from podium.core.tasks import (
    TaskExpiredError,
    TaskNotFoundError,
    TaskState,
    expired_state,
    task_state,
)
from podium.server.sdk_seams import send_extension_notification
from podium.server.tasks import MAX_LISTENED_TASKS, TASKS_EXTENSION, declared, task_fields

# What a push is about: the status, and for input_required which questions wait.
Signature = tuple[str, tuple[str, ...]]


def _signature(state: TaskState) -> Signature:
    return state.status, tuple(a.key for a in state.approvals)


class TaskListen:
    """The middleware: `subscriptions/listen` requests that ask for `taskIds` are served
    here, every other request goes on down the chain."""

    def __init__(self, conductor: Conductor, bus: SubscriptionBus) -> None:
        self.conductor = conductor
        self.bus = bus

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method != "subscriptions/listen" or not isinstance(ctx.params, dict):
            return await call_next(ctx)
        wanted = ctx.params.get("notifications")
        task_ids = wanted.get("taskIds") if isinstance(wanted, dict) else None
        if task_ids is None:
            return await call_next(ctx)
        if not declared(ctx):
            require_client_extension(ctx, TASKS_EXTENSION)
        if not isinstance(task_ids, list):
            raise MCPError(
                code=INVALID_PARAMS,
                message="notifications.taskIds: expected a list of task id strings "
                f"(got {type(task_ids).__name__})",
            )
        for i, task_id in enumerate(task_ids):
            if not isinstance(task_id, str):
                raise MCPError(
                    code=INVALID_PARAMS,
                    message=f"notifications.taskIds.{i}: expected a task id string, as "
                    f"run_job answered (got {type(task_id).__name__})",
                )
        if len(task_ids) > MAX_LISTENED_TASKS:
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"notifications.taskIds: at most {MAX_LISTENED_TASKS} tasks per stream",
            )
        assert isinstance(wanted, dict)
        states = await self._existing(task_ids)
        return await _Stream(self.conductor, ctx, states).serve(self.bus, wanted)

    async def _existing(self, task_ids: list[str]) -> dict[str, TaskState]:
        """Each task as it is now, or the -32602 error naming every id that names none."""
        states: dict[str, TaskState] = {}
        problems: list[str] = []
        unknown: list[str] = []
        for index, task_id in enumerate(task_ids):
            if task_id in states or task_id in unknown:
                continue  # asked twice: served once
            try:
                states[task_id] = await self.conductor.tasks.get(task_id)
            except TaskNotFoundError as exc:
                why = (
                    "has expired (its ttlMs passed)"
                    if isinstance(exc, TaskExpiredError)
                    else "not found (never made, or expired and purged)"
                )
                problems.append(f"notifications.taskIds.{index}: task {quoted(task_id)} {why}")
                unknown.append(task_id)
        if problems:
            raise MCPError(
                code=INVALID_PARAMS,
                message="\n".join([*problems, "listen again without them"]),
                data={"taskIds": unknown},
            )
        return states


class _Stream:
    """One listen stream for tasks: the tasks it serves, each as last read and as last
    pushed."""

    def __init__(
        self,
        conductor: Conductor,
        ctx: ServerRequestContext[Any, Any],
        states: dict[str, TaskState],
    ) -> None:
        self.conductor = conductor
        self.ctx = ctx
        self.meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: ctx.request_id}
        self.watched = dict(states)
        self.pushed: dict[str, Signature] = {}

    async def serve(self, bus: SubscriptionBus, wanted: dict[str, Any]) -> HandlerResult:
        ctx = self.ctx
        requested = SubscriptionFilter.model_validate(
            {k: v for k, v in wanted.items() if k != "taskIds"}
        )
        honored = SubscriptionFilter(
            tools_list_changed=True if requested.tools_list_changed else None,
            prompts_list_changed=True if requested.prompts_list_changed else None,
            resources_list_changed=True if requested.resources_list_changed else None,
            resource_subscriptions=list(requested.resource_subscriptions)
            if requested.resource_subscriptions
            else None,
            taskIds=list(self.watched),
        )
        uris = frozenset(requested.resource_subscriptions or ())
        # Without these, the stream is the tasks' alone and ends once none is served.
        serves_more = bool(
            honored.tools_list_changed
            or honored.prompts_list_changed
            or honored.resources_list_changed
            or uris
        )
        jobs = {state.task.job_id for state in self.watched.values()}
        send, receive = anyio.create_memory_object_stream[ServerEvent | ChangeEvent](1024)

        def deliver(event: ServerEvent | ChangeEvent) -> None:
            # A reader that stopped reading loses pushes; the engine never waits for it.
            with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError):
                send.send_nowait(event)

        def on_bus(event: ServerEvent) -> None:
            if event_matches(honored, uris, event):
                deliver(event)

        unsubscribe: Callable[[], None] = bus.subscribe(on_bus)
        try:
            async with (
                self.conductor.events.subscribe() as changes,
                anyio.create_task_group() as tg,
            ):

                async def forward_changes() -> None:
                    async for change in changes:
                        if change.job_id in jobs:
                            deliver(change)

                tg.start_soon(forward_changes)
                await ctx.session.send_notification(
                    SubscriptionsAcknowledgedNotification(
                        params=SubscriptionsAcknowledgedNotificationParams(
                            notifications=honored, _meta=self.meta
                        )
                    ),
                    related_request_id=ctx.request_id,
                )
                # Each task as it is now, first: a listener that joined after a change (say,
                # the gate opened before the stream did) still hears of it.
                for task_id in list(self.watched):
                    await self._refresh(task_id)
                while self.watched or serves_more:
                    item: ServerEvent | ChangeEvent | None = None
                    with anyio.move_on_after(self._seconds_to_next_expiry()):
                        try:
                            item = await receive.receive()
                        except anyio.EndOfStream:
                            break
                    if item is None:
                        await self._expire_due()
                    elif isinstance(item, ChangeEvent):
                        for task_id, state in list(self.watched.items()):
                            if state.task.job_id == item.job_id:
                                await self._refresh(task_id)
                    else:
                        await ctx.session.send_notification(
                            event_to_notification(item, self.meta),
                            related_request_id=ctx.request_id,
                        )
                tg.cancel_scope.cancel()
        finally:
            unsubscribe()
            send.close()
            receive.close()
        return SubscriptionsListenResult(_meta=self.meta)

    def _seconds_to_next_expiry(self) -> float | None:
        due = min((s.task.expires_at for s in self.watched.values()), default=None)
        return None if due is None else max(0.0, (due - utcnow()).total_seconds())

    async def _refresh(self, task_id: str) -> None:
        """Read the task again; push it if it is not as it was last pushed."""
        try:
            state = await self.conductor.tasks.get(task_id)
        except TaskNotFoundError:
            await self._gone(task_id)
            return
        self.watched[task_id] = state
        await self._push(task_id, state)

    async def _expire_due(self) -> None:
        now = utcnow()
        for task_id, state in list(self.watched.items()):
            if state.task.expires_at <= now:
                await self._gone(task_id)

    async def _gone(self, task_id: str) -> None:
        """The task expired (or its row is gone): it is served no more, after a last push
        for one that had not ended (`failed`, saying it expired) or that ended unpushed."""
        row = await self.conductor.store.get_task(task_id)
        if row is not None and row.expires_at > utcnow():
            self.watched[task_id].task = row  # still valid after all (its TTL moved)
            return
        last = self.watched.pop(task_id)
        ended = await task_state(self.conductor.store, row) if row is not None else last
        if not ended.terminal:
            ended = expired_state(row or last.task)
        await self._push(task_id, ended)

    async def _push(self, task_id: str, state: TaskState) -> None:
        signature = _signature(state)
        if self.pushed.get(task_id) == signature:
            return
        self.pushed[task_id] = signature
        fields = task_fields(state, detailed=True)
        params = {**fields, "_meta": {**fields["_meta"], **self.meta}}
        await send_extension_notification(
            self.ctx.session, "notifications/tasks", params, related_request_id=self.ctx.request_id
        )

"""A client side of the MCP tasks extension for the tests: the SDK 2.3.0 client has none,
so this declares the extension through the SDK's public `ClientExtension` (a claim for the
`task` result shape, a binding for `notifications/tasks`) and sends `tasks/*` and
`subscriptions/listen` with `taskIds` as plain requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import mcp_types as types
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, NotificationBinding, ResultClaim
from pydantic import BaseModel, ConfigDict

TASKS = "io.modelcontextprotocol/tasks"
TERMINAL = ("completed", "failed", "cancelled")


class TaskHandle(types.Result):
    model_config = ConfigDict(extra="allow")
    result_type: Literal["task"] = "task"


class AnyResult(types.Result):
    model_config = ConfigDict(extra="allow")


class TaskNote(BaseModel):
    model_config = ConfigDict(extra="allow")


class TasksClient(ClientExtension):
    """Declares the extension; records every `notifications/tasks` it receives."""

    identifier = TASKS

    def __init__(self) -> None:
        self.pushes: list[dict[str, Any]] = []
        self.pushed = anyio.Event()

    def claims(self) -> list[ResultClaim[Any]]:
        async def resolve(handle: TaskHandle, ctx: ClaimContext) -> types.CallToolResult:
            raise AssertionError("tests take the task handle itself (allow_claimed=True)")

        return [ResultClaim(result_type="task", model=TaskHandle, resolve=resolve)]

    def notifications(self) -> list[NotificationBinding[Any]]:
        async def record(params: TaskNote) -> None:
            self.pushes.append(params.model_dump(by_alias=True))
            self.pushed.set()
            self.pushed = anyio.Event()

        return [
            NotificationBinding(method="notifications/tasks", params_type=TaskNote, handler=record)
        ]

    async def wait_push(self, task_id: str, status: str, timeout: float = 20) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            while True:
                for push in self.pushes:
                    if push.get("taskId") == task_id and push.get("status") == status:
                        return push
                await self.pushed.wait()


async def request(client: Client, method: str, params: dict[str, Any]) -> dict[str, Any]:
    req = types.Request[dict[str, Any], str](method=method, params=params)
    result = await client.session.send_request(req, AnyResult)
    return result.model_dump(by_alias=True)


async def start_task(client: Client, spec: dict[str, Any], **arguments: Any) -> dict[str, Any]:
    handle = await client.session.call_tool(
        "run_job", {"spec": spec, **arguments}, allow_claimed=True
    )
    assert isinstance(handle, TaskHandle), handle
    return handle.model_dump(by_alias=True)


async def get_task(client: Client, task_id: str) -> dict[str, Any]:
    return await request(client, "tasks/get", {"taskId": task_id})


async def wait_task(
    client: Client, task_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 30
) -> dict[str, Any]:
    """Poll `tasks/get` at the task's own `pollIntervalMs` (capped for test speed)."""
    with anyio.fail_after(timeout):
        while True:
            task = await get_task(client, task_id)
            if task["status"] in statuses:
                return task
            await anyio.sleep(min(task["pollIntervalMs"], 200) / 1000)


@asynccontextmanager
async def listening(
    client: Client, extension: TasksClient, task_ids: list[str], timeout: float = 20
) -> AsyncIterator[None]:
    """A `subscriptions/listen` stream for `task_ids` while the block runs; the block starts
    once the stream has pushed each task as it is now (so a change made in the block is
    pushed, never missed)."""
    start = len(extension.pushes)

    def each_task_pushed() -> bool:
        seen = {p.get("taskId") for p in extension.pushes[start:]}
        return all(task_id in seen for task_id in task_ids)

    async with anyio.create_task_group() as tg:

        async def listen() -> None:
            await request(client, "subscriptions/listen", {"notifications": {"taskIds": task_ids}})

        tg.start_soon(listen)
        with anyio.fail_after(timeout):
            while not each_task_pushed():
                await extension.pushed.wait()
        yield
        tg.cancel_scope.cancel()

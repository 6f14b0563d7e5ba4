"""`subscriptions/listen` with `taskIds` (the tasks extension's `notifications/tasks`) through
a real SDK client: ids that name no task (never made, expired) are refused at once naming
each, never waited on; a task that expires while it is listened to ends visibly (`failed`
for one still going, and the stream ends once it serves nothing)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from task_client import TasksClient, get_task, listening, request, start_task, wait_task

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio

QUICK = {"name": "quick", "sheets": [{"name": "one", "prompt": "echo done"}]}
SLOW = {"name": "slow", "sheets": [{"name": "nap", "prompt": "sleep 30"}]}
# Long enough for QUICK to end well before, short enough to wait for.
TTL_SECONDS = 4.0


class Acks:
    """Every `notifications/subscriptions/acknowledged` the client receives."""

    def __init__(self) -> None:
        self.seen: list[types.SubscriptionFilter] = []

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.SubscriptionsAcknowledgedNotification):
            self.seen.append(message.params.notifications)


@asynccontextmanager
async def serving(
    config: PodiumConfig, acks: Acks | None = None
) -> AsyncIterator[tuple[Client, TasksClient]]:
    conductor = Conductor(config)
    await conductor.start()
    try:
        server = PodiumServer(conductor)
        extension = TasksClient()
        async with (
            server.running(),
            Client(server.mcp, extensions=[extension], message_handler=acks) as client,
        ):
            yield client, extension
    finally:
        await conductor.stop()


async def listen(client: Client, task_ids: list[str]) -> dict[str, Any]:
    """The listen request's answer: its result once the stream ends, or its error."""
    return await request(client, "subscriptions/listen", {"notifications": {"taskIds": task_ids}})


async def test_a_listen_for_task_ids_that_name_no_task_is_refused_naming_each(
    make_config: Callable[..., PodiumConfig],
) -> None:
    acks = Acks()
    async with serving(make_config(), acks) as (client, extension):
        with anyio.fail_after(10), pytest.raises(MCPError) as never_made:
            await listen(client, ["task-never-made"])
        assert never_made.value.error.code == -32602
        message = never_made.value.error.message
        assert "notifications.taskIds.0: task 'task-never-made' not found" in message, message
        assert never_made.value.error.data == {"taskIds": ["task-never-made"]}

        # One unknown id among known ones refuses the stream too, naming that one only.
        known = (await start_task(client, SLOW))["taskId"]
        with anyio.fail_after(10), pytest.raises(MCPError) as mixed:
            await listen(client, [known, "task-gone", known])
        assert mixed.value.error.code == -32602
        assert "notifications.taskIds.1: task 'task-gone' not found" in mixed.value.error.message
        assert known not in mixed.value.error.message
        assert mixed.value.error.data == {"taskIds": ["task-gone"]}
        assert not extension.pushes and not acks.seen

        # Without it, the known task is served: acknowledged by id, pushed as it is.
        async with listening(client, extension, [known]):
            pass
        assert [a.model_dump(by_alias=True).get("taskIds") for a in acks.seen] == [[known]]
        assert [p["status"] for p in extension.pushes] == ["working"]
        await request(client, "tasks/cancel", {"taskId": known})


async def test_malformed_task_ids_are_refused_naming_the_item(
    make_config: Callable[..., PodiumConfig],
) -> None:
    async with serving(make_config(), Acks()) as (client, _):
        for ids, where, got in (("task-x", "taskIds", "str"), (["task-a", 7], "taskIds.1", "int")):
            with anyio.fail_after(10), pytest.raises(MCPError) as refused:
                await request(client, "subscriptions/listen", {"notifications": {"taskIds": ids}})
            message = refused.value.error.message
            assert refused.value.error.code == -32602
            assert message.startswith(f"notifications.{where}: expected a"), message
            assert f"(got {got})" in message, message


async def test_a_task_that_expires_while_listened_to_ends_and_so_does_the_stream(
    make_config: Callable[..., PodiumConfig],
) -> None:
    config = make_config(task_ttl_hours=TTL_SECONDS / 3600)
    async with serving(config) as (client, extension):
        going = (await start_task(client, SLOW))["taskId"]
        ended = (await start_task(client, QUICK))["taskId"]
        answer: dict[str, Any] = {}
        answered = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def stream() -> None:
                answer.update(await listen(client, [going, ended]))
                answered.set()

            tg.start_soon(stream)
            assert (await extension.wait_push(ended, "completed"))["result"]["isError"] is False
            # The task still going when its ttlMs passes is pushed failed, saying why...
            expired = await extension.wait_push(going, "failed", timeout=TTL_SECONDS + 10)
            assert expired["error"]["code"] == -32603
            assert "task expired: its ttlMs" in expired["error"]["message"], expired
            assert expired["statusMessage"] == expired["error"]["message"]
            assert "the job goes on" in expired["statusMessage"]
            # ...and the stream, with nothing left to serve, ends with its listen result.
            with anyio.fail_after(10):
                await answered.wait()
        assert answer["resultType"] == "complete"
        by_task = {
            t: [p["status"] for p in extension.pushes if p["taskId"] == t] for t in (going, ended)
        }
        # The ended task keeps its final status: nothing more is pushed for it.
        assert by_task == {going: ["working", "failed"], ended: by_task[ended]}
        assert by_task[ended][-1] == "completed" and by_task[ended].count("completed") == 1
        assert "failed" not in by_task[ended]
        # A listen for it now is refused: it expired (or was purged since).
        with anyio.fail_after(10), pytest.raises(MCPError) as late:
            await listen(client, [going])
        assert late.value.error.code == -32602
        assert "has expired" in late.value.error.message or "not found" in late.value.error.message


async def test_a_task_that_completed_is_served_until_it_expires(
    make_config: Callable[..., PodiumConfig],
) -> None:
    """A stream for tasks that all ended stays open (one may still be read), then ends with
    the last task's TTL, with no push contradicting its final status."""
    config = make_config(task_ttl_hours=TTL_SECONDS / 3600)
    async with serving(config) as (client, extension):
        task_id = (await start_task(client, QUICK))["taskId"]
        await wait_task(client, task_id)
        with anyio.fail_after(TTL_SECONDS + 10):
            answer = await listen(client, [task_id])
        assert answer["resultType"] == "complete"
        assert [p["status"] for p in extension.pushes] == ["completed"]
        with pytest.raises(MCPError):
            await get_task(client, task_id)

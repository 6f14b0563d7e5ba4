"""A durable task that ended stays ended (the tasks extension: terminal statuses are final,
and the result stays what it was), through real MCP clients on real SQLite files: after a
resume of its failed or cancelled job, after `clear`, and across a restart of the conductor.
A resumed job is followed with a new task: `run_job` with its `job_id` and spec. A gate
cancelled (or skipped by `on_failure: stop`, or failed with its job when the job's stored
spec no longer loads) while it waits is asked again under a new input key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import Client
from task_client import TasksClient, get_task, request, start_task, wait_task
from test_approvals import gate_spec
from test_spec_defects import corrupt_stored_spec
from test_transports import call

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.job_tasks import JobTasks
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio

# Fails on its first run; once resumed, runs a moment and completes.
FLAKY = {
    "name": "flaky",
    "retry": {"max_retries": 0},
    "sheets": [
        {
            "name": "try",
            "prompt": "if [ -f tried ]; then sleep 1; echo fine; else touch tried; exit 3; fi",
        }
    ],
}
LONG = {"name": "long", "sheets": [{"name": "nap", "prompt": "sleep 30"}]}
# What a client compares: everything the task answers but the poll hint.
KEPT = ("status", "statusMessage", "lastUpdatedAt", "result", "error", "inputRequests")


def kept(task: dict[str, Any]) -> dict[str, Any]:
    return {k: task.get(k) for k in KEPT}


async def approved_under_a_new_key(
    client: Client, spec: dict[str, Any], job_id: str, first_key: str
) -> None:
    """A task for the resumed job asks its gate again under a key of its own; approved, the
    job completes."""
    follow = (await start_task(client, spec, job_id=job_id))["taskId"]
    again = await wait_task(client, follow, ("input_required",))
    [second_key] = again["inputRequests"]
    assert second_key != first_key, (first_key, second_key)
    answer = {second_key: {"action": "accept", "content": {"decision": "approve"}}}
    await request(client, "tasks/update", {"taskId": follow, "inputResponses": answer})
    done = await wait_task(client, follow)
    assert done["status"] == "completed" and done["result"]["isError"] is False


@asynccontextmanager
async def serving(config: PodiumConfig) -> AsyncIterator[tuple[Conductor, Client]]:
    conductor = Conductor(config)
    await conductor.start()
    try:
        server = PodiumServer(conductor)
        async with server.running(), Client(server.mcp, extensions=[TasksClient()]) as client:
            yield conductor, client
    finally:
        await conductor.stop()


@pytest.fixture
def no_eager_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the guards before a resume or a clear store a final state (not the job's end):
    what protects a task nobody read before its job was resumed or cleared."""

    async def idle(self: JobTasks) -> None:
        await anyio.sleep_forever()

    monkeypatch.setattr(JobTasks, "finish_ended", idle)


async def wait_job(client: Client, job_id: str, statuses: tuple[str, ...]) -> dict[str, Any]:
    with anyio.fail_after(30):
        while True:
            detail = await call(client, "status", {"job_id": job_id})
            if detail["status"] in statuses:
                return detail
            await anyio.sleep(0.05)


async def test_a_failed_task_stays_completed_with_its_result_after_resume_and_a_new_task_follows(
    make_config: Callable[..., PodiumConfig],
) -> None:
    async with serving(make_config()) as (_, client):
        task_id = (await start_task(client, FLAKY))["taskId"]
        ended = await wait_task(client, task_id)
        assert ended["status"] == "completed" and ended["result"]["isError"] is True
        job_id = ended["_meta"]["podium/job_id"]
        await call(client, "resume", {"job_id": job_id})
        assert (await call(client, "status", {"job_id": job_id}))["status"] in ("queued", "running")
        assert kept(await get_task(client, task_id)) == kept(ended)
        # The resumed run, followed by a new task on the same job.
        follow = (await start_task(client, FLAKY, job_id=job_id))["taskId"]
        assert follow != task_id
        assert (await get_task(client, follow))["status"] == "working"
        done = await wait_task(client, follow)
        assert done["status"] == "completed" and done["result"]["isError"] is False
        assert done["result"]["structuredContent"]["sheets"][0]["output_tail"] == "fine\n"
        # The first task still answers the failed run.
        first = await get_task(client, task_id)
        assert kept(first) == kept(ended)
        assert first["result"]["structuredContent"]["status"] == "failed"
        [sheet] = first["result"]["structuredContent"]["sheets"]
        assert (sheet["status"], sheet["attempts"]) == ("failed", 1)


async def test_a_task_nobody_read_before_its_job_was_resumed_keeps_how_it_ended(
    make_config: Callable[..., PodiumConfig], no_eager_finish: None
) -> None:
    async with serving(make_config()) as (conductor, client):
        task_id = (await start_task(client, FLAKY))["taskId"]
        job_id = (await conductor.store.get_task(task_id)).job_id  # type: ignore[union-attr]
        await wait_job(client, job_id, ("failed",))
        await call(client, "resume", {"job_id": job_id})
        await wait_job(client, job_id, ("completed",))
        task = await get_task(client, task_id)
        assert task["status"] == "completed" and task["result"]["isError"] is True
        assert task["result"]["structuredContent"]["status"] == "failed"
        assert "failed" in task["statusMessage"]


async def test_a_cancelled_task_stays_cancelled_after_resume_and_its_cancel_spares_the_new_run(
    make_config: Callable[..., PodiumConfig],
) -> None:
    async with serving(make_config()) as (_, client):
        task_id = (await start_task(client, LONG))["taskId"]
        await request(client, "tasks/cancel", {"taskId": task_id})
        ended = await wait_task(client, task_id)
        assert ended["status"] == "cancelled"
        job_id = ended["_meta"]["podium/job_id"]
        await call(client, "resume", {"job_id": job_id})
        await wait_job(client, job_id, ("running",))
        assert kept(await get_task(client, task_id)) == kept(ended)
        # Cancelling the ended task again is a no-op: it does not reach the resumed run.
        await request(client, "tasks/cancel", {"taskId": task_id})
        assert (await call(client, "status", {"job_id": job_id}))["status"] == "running"
        follow = (await start_task(client, LONG, job_id=job_id))["taskId"]
        assert (await get_task(client, follow))["status"] == "working"
        await request(client, "tasks/cancel", {"taskId": follow})
        assert (await wait_task(client, follow))["status"] == "cancelled"
        assert kept(await get_task(client, task_id)) == kept(ended)


@pytest.mark.parametrize("read_first", [True, False])
async def test_clear_keeps_a_completed_task_with_its_result(
    make_config: Callable[..., PodiumConfig], no_eager_finish: None, read_first: bool
) -> None:
    spec = {"name": "cleared", "sheets": [{"name": "say", "prompt": "printf 'kept %s' ok"}]}
    async with serving(make_config()) as (conductor, client):
        task_id = (await start_task(client, spec))["taskId"]
        job_id = (await conductor.store.get_task(task_id)).job_id  # type: ignore[union-attr]
        await wait_job(client, job_id, ("completed",))
        before = await wait_task(client, task_id) if read_first else None
        cleared = await call(client, "clear", {"job_ids": [job_id]})
        assert cleared["job_ids"] == [job_id]
        task = await get_task(client, task_id)
        assert task["status"] == "completed" and "error" not in task
        assert task["result"]["isError"] is False
        detail = task["result"]["structuredContent"]
        assert detail["job_id"] == job_id and detail["sheets"][0]["output_tail"] == "kept ok"
        assert json.loads(task["result"]["content"][0]["text"]) == detail
        if before is not None:
            assert kept(task) == kept(before)


async def test_a_restart_in_between_keeps_the_ended_task(
    make_config: Callable[..., PodiumConfig],
) -> None:
    config = make_config()
    async with serving(config) as (_, client):
        task_id = (await start_task(client, FLAKY))["taskId"]
        ended = await wait_task(client, task_id)
        job_id = ended["_meta"]["podium/job_id"]
    # Another conductor on the same files: the task answers from what was stored...
    async with serving(config) as (_, client):
        assert kept(await get_task(client, task_id)) == kept(ended)
        await call(client, "resume", {"job_id": job_id})
        await wait_job(client, job_id, ("completed",))
        assert kept(await get_task(client, task_id)) == kept(ended)
    # ...and again after the resumed run completed and the job was cleared.
    async with serving(config) as (_, client):
        await call(client, "clear", {"job_ids": [job_id]})
    async with serving(config) as (_, client):
        assert kept(await get_task(client, task_id)) == kept(ended)


async def test_a_gate_cancelled_while_it_waits_is_asked_again_under_a_new_key(
    make_config: Callable[..., PodiumConfig],
) -> None:
    spec = gate_spec("recall")
    async with serving(make_config()) as (conductor, client):
        task_id = (await start_task(client, spec))["taskId"]
        asked = await wait_task(client, task_id, ("input_required",))
        [first_key] = asked["inputRequests"]
        job_id = asked["_meta"]["podium/job_id"]
        await request(client, "tasks/cancel", {"taskId": task_id})
        ended = await wait_task(client, task_id)
        assert ended["status"] == "cancelled" and "inputRequests" not in ended
        await call(client, "resume", {"job_id": job_id})
        follow = (await start_task(client, spec, job_id=job_id))["taskId"]
        again = await wait_task(client, follow, ("input_required",))
        [second_key] = again["inputRequests"]
        assert second_key != first_key
        # The old task asks nothing, and an answer under its key decides nothing.
        assert kept(await get_task(client, task_id)) == kept(ended)
        stale = {first_key: {"action": "accept", "content": {"decision": "approve"}}}
        await request(client, "tasks/update", {"taskId": follow, "inputResponses": stale})
        await request(client, "tasks/update", {"taskId": task_id, "inputResponses": stale})
        assert (await get_task(client, follow))["status"] == "input_required"
        answer = {second_key: {"action": "accept", "content": {"decision": "approve"}}}
        await request(client, "tasks/update", {"taskId": follow, "inputResponses": answer})
        done = await wait_task(client, follow)
        assert done["status"] == "completed" and done["result"]["isError"] is False
        # The question taken back by the cancel is in the history, unanswered.
        history, _ = await conductor.get_execution_history(job_id, sheet_num=2)
        assert [(e.outcome.value if e.outcome else None, e.decision) for e in history] == [
            ("cancelled", None),
            ("completed", "approve"),
        ]
        assert kept(await get_task(client, task_id)) == kept(ended)


async def test_a_gate_skipped_while_it_waits_is_asked_again_under_a_new_key(
    make_config: Callable[..., PodiumConfig],
) -> None:
    """`on_failure: stop`: another sheet fails while the gate waits, so the gate is skipped
    unanswered. Like a cancel, that takes its question back (a cancelled attempt in the
    history), so the resumed run asks under a new key: a key never names two questions."""
    spec = {
        "name": "stopped-gate",
        "retry": {"max_retries": 0},
        "sheets": [
            {"name": "ask", "instrument": "approval", "prompt": "Go ahead?"},
            {
                # The first run fails once the gate is open (the test says when); a resumed
                # one completes.
                "name": "flaky",
                "prompt": "if [ -f tried ]; then echo fine; else touch tried; "
                "while [ ! -f fail-now ]; do sleep 0.05; done; exit 3; fi",
            },
        ],
    }
    async with serving(make_config()) as (conductor, client):
        task_id = (await start_task(client, spec))["taskId"]
        asked = await wait_task(client, task_id, ("input_required",))
        [first_key] = asked["inputRequests"]
        job_id = asked["_meta"]["podium/job_id"]
        workspace = (await call(client, "status", {"job_id": job_id}))["workspace"]
        await anyio.Path(workspace, "fail-now").touch()
        ended = await wait_task(client, task_id)
        assert ended["status"] == "completed" and ended["result"]["isError"] is True
        gate = ended["result"]["structuredContent"]["sheets"][0]
        assert gate["status"] == "skipped", gate
        assert (await call(client, "status", {}))["pending_approvals_total"] == 0

        await call(client, "resume", {"job_id": job_id})
        await approved_under_a_new_key(client, spec, job_id, first_key)
        # The question the skip took back is in the history, unanswered.
        history, _ = await conductor.get_execution_history(job_id, sheet_num=1)
        assert [(e.outcome.value if e.outcome else None, e.decision) for e in history] == [
            ("cancelled", None),
            ("completed", "approve"),
        ]


async def test_a_gate_whose_stored_spec_stops_loading_is_asked_again_under_a_new_key(
    make_config: Callable[..., PodiumConfig],
) -> None:
    """The job's stored spec no longer loads while its gate waits (a damaged store, an
    upgrade that no longer reads it): the job fails for its spec, and the gate's question is
    taken back as at a cancel or a skip, so the resume that brings a good spec asks under a
    new key."""
    config = make_config()
    spec = gate_spec("unloadable")
    async with serving(config) as (_, client):
        task_id = (await start_task(client, spec))["taskId"]
        asked = await wait_task(client, task_id, ("input_required",))
        [first_key] = asked["inputRequests"]
        job_id = asked["_meta"]["podium/job_id"]
    corrupt_stored_spec(config, job_id, "not json at all {")

    async with serving(config) as (conductor, client):
        if (await call(client, "status", {"job_id": job_id}))["status"] == "paused":
            await call(client, "resume", {"job_id": job_id})  # the stop paused it
        ended = await wait_task(client, task_id)
        assert ended["status"] == "completed" and ended["result"]["isError"] is True
        detail = ended["result"]["structuredContent"]
        assert "stored spec no longer loads" in detail["error"]
        gate = detail["sheets"][1]
        assert (gate["status"], gate["error_category"]) == ("failed", "spec_invalid")
        assert "inputRequests" not in ended
        assert (await call(client, "status", {}))["pending_approvals_total"] == 0
        # The question is in the history, taken back unanswered.
        history, _ = await conductor.get_execution_history(job_id, sheet_num=2)
        assert [(e.outcome.value if e.outcome else None, e.decision) for e in history] == [
            ("cancelled", None)
        ]
        assert history[0].error_category is not None
        assert history[0].error_category.value == "spec_invalid"

        await call(client, "resume", {"job_id": job_id, "spec": spec})
        await approved_under_a_new_key(client, spec, job_id, first_key)
        history, _ = await conductor.get_execution_history(job_id, sheet_num=2)
        assert [(e.outcome.value if e.outcome else None, e.decision) for e in history] == [
            ("cancelled", None),
            ("completed", "approve"),
        ]
        assert kept(await get_task(client, task_id)) == kept(ended)

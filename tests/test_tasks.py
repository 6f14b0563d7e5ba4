"""Durable MCP tasks (issue 12, SPEC §7) through real SDK clients: in memory for the protocol
rules, the HTTP conductor (`podium start --detach`) for kill -9, and `podium serve` (the stdio
bridge) for the same flow through the bridge."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import Implementation
from task_client import (
    TasksClient,
    get_task,
    listening,
    request,
    start_task,
    wait_task,
)
from test_approvals import gate_spec
from test_conductor import conductor_pid
from test_transports import PODIUM, call, make_home, podium_cli

from podium.core.conductor import Conductor
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio

QUICK = {"name": "quick", "sheets": [{"name": "one", "prompt": "echo done"}]}
FAILING = {"name": "failing", "retry": {"max_retries": 0}, "sheets": [{"prompt": "exit 3"}]}
SLOW = {"name": "slow", "sheets": [{"name": "nap", "prompt": "sleep 30"}]}


@pytest.fixture
async def server(conductor: Conductor) -> AsyncIterator[PodiumServer]:
    s = PodiumServer(conductor)
    async with s.running():
        yield s


@pytest.fixture
async def tasks_client(server: PodiumServer) -> AsyncIterator[tuple[Client, TasksClient]]:
    extension = TasksClient()
    info = Implementation(name="task-host", version="2.1")
    async with Client(server.mcp, extensions=[extension], client_info=info) as client:
        yield client, extension


async def test_the_extension_is_advertised(tasks_client: tuple[Client, TasksClient]) -> None:
    client, _ = tasks_client
    extensions = client.server_capabilities.extensions or {}
    assert "io.modelcontextprotocol/tasks" in extensions


async def test_a_declaring_client_gets_a_task_and_a_push_when_it_completes(
    tasks_client: tuple[Client, TasksClient], conductor: Conductor
) -> None:
    client, extension = tasks_client
    spec = {"name": "brief", "sheets": [{"name": "one", "prompt": "sleep 0.5; echo done"}]}
    handle = await start_task(client, spec)
    task_id = handle["taskId"]
    assert handle["resultType"] == "task" and handle["status"] == "working"
    assert len(task_id) >= 32 and "result" not in handle
    assert isinstance(handle["ttlMs"], int) and handle["ttlMs"] > 0
    assert isinstance(handle["pollIntervalMs"], int)
    assert handle["createdAt"].endswith("Z")
    # Durable before the answer: the row is in the store.
    assert await conductor.store.get_task(task_id) is not None
    async with listening(client, extension, [task_id]):
        push = await extension.wait_push(task_id, "completed")
    # The stream first said how the task was, then pushed the change to completed.
    assert [p["status"] for p in extension.pushes] == ["working", "completed"]
    assert push["result"]["isError"] is False
    assert push["result"]["structuredContent"]["status"] == "completed"
    got = await get_task(client, task_id)
    assert got["resultType"] == "complete" and got["status"] == "completed"
    detail = got["result"]["structuredContent"]
    assert detail["job_id"] and detail["sheets"][0]["output_tail"] == "done\n"
    assert json.loads(got["result"]["content"][0]["text"]) == detail


async def test_a_failed_job_is_a_completed_task_whose_result_is_an_error(
    tasks_client: tuple[Client, TasksClient],
) -> None:
    client, _ = tasks_client
    task_id = (await start_task(client, FAILING))["taskId"]
    done = await wait_task(client, task_id)
    assert done["status"] == "completed" and done["result"]["isError"] is True
    assert done["result"]["structuredContent"]["status"] == "failed"
    assert "error" not in done


async def test_a_client_without_the_extension_gets_the_synchronous_answer(
    server: PodiumServer,
) -> None:
    for mode in ("auto", "legacy"):
        async with Client(server.mcp, mode=mode) as client:
            result = await client.call_tool("run_job", {"spec": QUICK})
            assert not result.is_error, result
            detail = result.structured_content
            assert isinstance(detail, dict) and "taskId" not in detail
            assert detail["status"] == "completed" and detail["sheets"][0]["status"] == "completed"
            with pytest.raises(MCPError) as refused:
                await request(client, "tasks/get", {"taskId": "task-x"})
            assert refused.value.error.code in (-32021, -32601), refused.value.error
            # Every other tool is as it was.
            assert (await call(client, "status", {}))["ready"] is True


async def test_a_synchronous_run_returns_at_an_approval_gate(server: PodiumServer) -> None:
    async with Client(server.mcp) as client:
        with anyio.fail_after(15):
            detail = await call(client, "run_job", {"spec": gate_spec()})
        assert detail["status"] == "running"
        assert detail["sheets"][1]["waiting_reason"] == "approval"


async def test_protocol_errors(tasks_client: tuple[Client, TasksClient]) -> None:
    client, _ = tasks_client
    with pytest.raises(MCPError) as unknown:
        await get_task(client, "task-does-not-exist")
    assert unknown.value.error.code == -32602 and "not found" in unknown.value.error.message
    for removed in ("tasks/list", "tasks/result"):
        with pytest.raises(MCPError) as gone:
            await request(client, removed, {"taskId": "x"})
        assert gone.value.error.code == -32601
    with pytest.raises(MCPError) as bad:
        await request(client, "tasks/get", {})
    assert bad.value.error.code == -32602
    # A bad spec is refused at once, before any task exists.
    result = await client.session.call_tool("run_job", {"spec": {"name": "x"}}, allow_claimed=True)
    assert getattr(result, "is_error", False) is True


async def test_cancel_cancels_the_job_and_is_idempotent(
    tasks_client: tuple[Client, TasksClient],
) -> None:
    client, _ = tasks_client
    task_id = (await start_task(client, SLOW))["taskId"]
    ack = await request(client, "tasks/cancel", {"taskId": task_id})
    assert ack["resultType"] == "complete" and "status" not in ack and "taskId" not in ack
    done = await wait_task(client, task_id)
    assert done["status"] == "cancelled"
    again = await request(client, "tasks/cancel", {"taskId": task_id})
    assert again["resultType"] == "complete"


async def test_an_approval_sheet_asks_through_the_task_and_tasks_update_answers(
    tasks_client: tuple[Client, TasksClient],
) -> None:
    client, extension = tasks_client
    approved = (await start_task(client, gate_spec("yes")))["taskId"]
    rejected = (await start_task(client, gate_spec("no")))["taskId"]
    async with listening(client, extension, [approved, rejected]):
        asked = await extension.wait_push(approved, "input_required")
        [(key, question)] = asked["inputRequests"].items()
        assert question["method"] == "elicitation/create"
        assert question["params"]["message"] == "Ship v1.2.3 to production?"
        assert question["params"]["requestedSchema"]["required"] == ["decision"]
        got = await wait_task(client, approved, ("input_required",))
        assert list(got["inputRequests"]) == [key]

        ack = await request(
            client,
            "tasks/update",
            {
                "taskId": approved,
                "inputResponses": {
                    key: {"action": "accept", "content": {"decision": "approve", "note": "ok"}},
                    "no-such-key": {"action": "accept", "content": {"decision": "reject"}},
                },
            },
        )
        assert ack == {"resultType": "complete", "_meta": ack.get("_meta")}
        done = await extension.wait_push(approved, "completed")
        assert done["result"]["isError"] is False

        other = await wait_task(client, rejected, ("input_required",))
        [other_key] = other["inputRequests"]
        await request(
            client,
            "tasks/update",
            {"taskId": rejected, "inputResponses": {other_key: {"action": "decline"}}},
        )
        failed = await wait_task(client, rejected)
    assert failed["status"] == "completed" and failed["result"]["isError"] is True
    gate = failed["result"]["structuredContent"]["sheets"][1]
    assert gate["error_category"] == "rejected" and "task-host 2.1" in gate["last_error"]
    history = json.loads(
        (
            await client.read_resource(
                f"podium://jobs/{done['result']['structuredContent']['job_id']}/history"
            )
        )
        .contents[0]
        .text  # type: ignore[union-attr]
    )
    [entry] = [e for e in history["entries"] if e["sheet_num"] == 2]
    assert (entry["decision"], entry["decided_by"], entry["note"]) == (
        "approve",
        "task-host 2.1",
        "ok",
    )


async def test_a_task_past_its_ttl_answers_invalid_params_and_is_purged(
    make_config: Any,
) -> None:
    conductor = Conductor(make_config(task_ttl_hours=1.5 / 3600))
    await conductor.start()
    try:
        server = PodiumServer(conductor)
        async with server.running(), Client(server.mcp, extensions=[TasksClient()]) as client:
            task_id = (await start_task(client, QUICK))["taskId"]
            assert (await get_task(client, task_id))["taskId"] == task_id
            with anyio.fail_after(10):
                while True:
                    try:
                        await get_task(client, task_id)
                    except MCPError as exc:
                        assert exc.error.code == -32602
                        break
                    await anyio.sleep(0.1)
            with anyio.fail_after(10):
                while await conductor.store.get_task(task_id) is not None:
                    await anyio.sleep(0.1)
    finally:
        await conductor.stop()


async def test_a_ttl_shorter_than_making_the_task_still_answers_the_handle(
    make_config: Any,
) -> None:
    """A task that expired before run_job could answer: the job runs, so the answer is its
    handle (ttlMs says it is over), not a tool error that reads as if nothing was submitted
    (a client would submit the job again)."""
    conductor = Conductor(make_config(task_ttl_hours=1e-7))  # 0.36 ms
    await conductor.start()
    try:
        server = PodiumServer(conductor)
        async with server.running(), Client(server.mcp, extensions=[TasksClient()]) as client:
            handle = await start_task(client, SLOW)
            assert handle["resultType"] == "task" and handle["ttlMs"] == 1
            job_id = handle["_meta"]["podium/job_id"]
            assert (await conductor.get_job(job_id)).status.value in ("queued", "running")
            with pytest.raises(MCPError) as expired:
                await get_task(client, handle["taskId"])
            # Expired, or already purged as expired: either way the message says so.
            message = expired.value.error.message
            assert expired.value.error.code == -32602
            assert "has expired" in message or "expired and purged" in message, message
            await conductor.cancel_job(job_id)
    finally:
        await conductor.stop()


# ----- through real processes: the HTTP conductor and the stdio bridge -----------------------


@asynccontextmanager
async def http_client(home: Path, extension: TasksClient) -> AsyncIterator[Client]:
    """A tasks client straight to the conductor's HTTP endpoint."""
    info = json.loads((home / "conductor.json").read_text())
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {info['token']}"})
    transport = streamable_http_client(info["url"], http_client=http)
    async with http, Client(transport, extensions=[extension]) as client:
        yield client


async def test_a_task_survives_kill_9_of_the_conductor(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    assert podium_cli(home, "start", "--detach").returncode == 0
    spec = {
        "name": "durable",
        "sheets": [
            {"name": "first", "prompt": "echo one"},
            {"name": "long", "depends_on": ["first"], "prompt": "sleep 30"},
        ],
    }
    extension = TasksClient()
    async with http_client(home, extension) as client:
        task_id = (await start_task(client, spec))["taskId"]
        with anyio.fail_after(20):
            while True:
                detail = (await get_task(client, task_id))["statusMessage"]
                if "1/2" in detail:
                    break
                await anyio.sleep(0.1)
    os.kill(conductor_pid(home), signal.SIGKILL)
    assert podium_cli(home, "start", "--detach").returncode == 0
    async with http_client(home, TasksClient()) as client:
        after = await get_task(client, task_id)
        assert after["taskId"] == task_id and after["status"] == "working"
        assert "paused (interrupted)" in after["statusMessage"]
        job_id = after["_meta"]["podium/job_id"]
        assert f"job {job_id} paused (interrupted)" in after["statusMessage"]
        # A shorter second sheet, so the resumed job ends quickly.
        changed = {**spec, "sheets": [spec["sheets"][0], {**spec["sheets"][1], "prompt": "true"}]}
        await call(client, "resume", {"job_id": job_id, "spec": changed})
        done = await wait_task(client, task_id)
        assert done["status"] == "completed" and done["result"]["isError"] is False


async def test_tasks_through_the_stdio_bridge(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    params = StdioServerParameters(
        command=PODIUM,
        args=["serve"],
        env={"PODIUM_HOME": str(home), "PATH": os.environ["PATH"]},
    )
    extension = TasksClient()
    # Pinned to 2026-07-28: on a loaded machine the bridge's first start of the conductor can
    # outlast the client's version probe, which would fall back to the 2025-11-25 handshake.
    async with Client(params, extensions=[extension], mode="2026-07-28") as client:
        discovered = await request(client, "server/discover", {})
        assert "io.modelcontextprotocol/tasks" in discovered["capabilities"]["extensions"]
        # A listen for a task that does not exist is refused through the bridge too.
        with anyio.fail_after(20), pytest.raises(MCPError) as unknown:
            listen = {"notifications": {"taskIds": ["task-nope"]}}
            await request(client, "subscriptions/listen", listen)
        assert unknown.value.error.code == -32602, unknown.value.error
        assert "'task-nope' not found" in unknown.value.error.message
        task_id = (await start_task(client, gate_spec("bridge")))["taskId"]
        async with listening(client, extension, [task_id]):
            asked = await extension.wait_push(task_id, "input_required")
            [key] = asked["inputRequests"]
            await request(
                client,
                "tasks/update",
                {
                    "taskId": task_id,
                    "inputResponses": {
                        key: {"action": "accept", "content": {"decision": "approve"}}
                    },
                },
            )
            done = await extension.wait_push(task_id, "completed")
        assert done["result"]["isError"] is False
        assert (await get_task(client, task_id))["status"] == "completed"


async def test_the_synchronous_run_is_bounded(conductor: Conductor) -> None:
    """run_job without a task waits at most its bound (50 s for the tool; shortened here),
    then answers with the job as it is; the job goes on."""
    with anyio.fail_after(10):
        detail = await conductor.tasks.run_job(spec=SLOW, wait_seconds=0.5)
    assert detail.status.value == "running" and detail.sheets[0].status.value == "running"
    await conductor.cancel_job(detail.job_id)


async def test_bad_task_requests_name_the_field_and_decide_nothing(
    tasks_client: tuple[Client, TasksClient], conductor: Conductor
) -> None:
    """Each malformed `tasks/*` request is -32602 naming what is wrong; an `accept` that
    carries no decision is not taken as an approval (the schema requires one), and the gate
    still waits afterwards."""
    client, _ = tasks_client
    task_id = (await start_task(client, gate_spec("strict")))["taskId"]
    task = await wait_task(client, task_id, ("input_required",))
    [key] = task["inputRequests"]
    bad: list[tuple[str, dict[str, Any], str]] = [
        ("tasks/get", {}, "taskId"),
        ("tasks/get", {"taskId": 7}, "taskId"),
        ("tasks/cancel", {"taskId": None}, "taskId"),
        ("tasks/update", {"taskId": task_id}, "inputResponses"),
        ("tasks/update", {"taskId": task_id, "inputResponses": [key]}, "inputResponses"),
        (
            "tasks/update",
            {"taskId": task_id, "inputResponses": {key: {"action": "accept"}}},
            f"inputResponses.{key}.content.decision",
        ),
        (
            "tasks/update",
            {"taskId": task_id, "inputResponses": {key: {"action": "accept", "content": {}}}},
            f"inputResponses.{key}.content.decision",
        ),
        (
            "tasks/update",
            {
                "taskId": task_id,
                "inputResponses": {
                    key: {"action": "accept", "content": {"decision": "approve", "note": 42}}
                },
            },
            f"inputResponses.{key}.content.note",
        ),
    ]
    for method, params, field in bad:
        with pytest.raises(MCPError) as refused:
            await request(client, method, params)
        assert refused.value.error.code == -32602, (method, params)
        assert field in refused.value.error.message, (method, params, refused.value.error)
    job_id = task["_meta"]["podium/job_id"]
    gate = (await conductor.get_job(job_id)).sheets[1]
    assert gate.status.value == "waiting" and gate.attempts == 0
    assert (await get_task(client, task_id))["status"] == "input_required"

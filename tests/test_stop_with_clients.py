"""`podium stop` while agents are attached over HTTP: a 2025-11-25 client (its standalone
GET stream stays open for as long as it is connected) and a 2026-07-28 client listening
for a durable task's changes (`subscriptions/listen`). Streams the server holds open must
not hold the conductor up: the stop succeeds promptly, and a new conductor serves the
task and its approval to the clients that come back."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from task_client import TasksClient, get_task, request, start_task, wait_task
from test_transports import call, make_home, podium_cli

pytestmark = pytest.mark.anyio

GATE = {
    "name": "held-open",
    "sheets": [
        {"name": "sign-off", "instrument": "approval", "prompt": "Release 7.0?"},
        {"name": "after", "depends_on": ["sign-off"], "prompt": "echo released"},
    ],
}


@asynccontextmanager
async def attached(home: Path, **options: Any) -> AsyncIterator[Client]:
    info = json.loads((home / "conductor.json").read_text())
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {info['token']}"})
    transport = streamable_http_client(info["url"], http_client=http)
    async with http, Client(transport, **options) as client:
        yield client


async def test_stop_is_not_held_up_by_open_client_streams(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    assert podium_cli(home, "start", "--detach").returncode == 0
    extension = TasksClient()
    async with attached(home, extensions=[extension]) as watcher:
        task_id = (await start_task(watcher, GATE))["taskId"]
        await wait_task(watcher, task_id, ("input_required",))
        async with attached(home, mode="legacy") as legacy, anyio.create_task_group() as tg:
            assert (await call(legacy, "status", {}))["ready"] is True

            async def listen() -> None:
                # Ends with an error once the conductor is gone; that is the point.
                with contextlib.suppress(Exception):
                    await request(
                        watcher, "subscriptions/listen", {"notifications": {"taskIds": [task_id]}}
                    )

            tg.start_soon(listen)
            with anyio.fail_after(20):
                await extension.wait_push(task_id, "input_required")
            started = time.monotonic()
            stopped = await anyio.to_thread.run_sync(lambda: podium_cli(home, "stop", "--force"))
            took = time.monotonic() - started
            tg.cancel_scope.cancel()
        assert stopped.returncode == 0, stopped.stderr
        assert took < 15, f"podium stop took {took:.1f}s with clients attached"

    assert podium_cli(home, "start", "--detach").returncode == 0
    async with attached(home, extensions=[TasksClient()]) as client:
        task = await get_task(client, task_id)
        assert task["status"] == "input_required"
        [key] = task["inputRequests"]
        answer = {key: {"action": "accept", "content": {"decision": "approve"}}}
        await request(client, "tasks/update", {"taskId": task_id, "inputResponses": answer})
        await call(client, "resume", {"job_id": task["_meta"]["podium/job_id"]})
        done = await wait_task(client, task_id)
        assert done["status"] == "completed" and done["result"]["isError"] is False
    assert podium_cli(home, "stop", "--force").returncode == 0

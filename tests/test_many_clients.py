"""Many clients at once (issue 10): 20 streamable-HTTP clients (both protocol eras) against a
real `podium serve` process, each submitting jobs and following them with the bounded
long-poll; every call is answered, every job completes, none is lost or duplicated, and the
server outlives them all. 3 jobs each by default, 50 each (1,000 jobs) with --long."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from test_transports import call, http_server, make_home

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

CLIENTS = 20


async def one_client(url: str, n: int, jobs: int, out: dict[str, Any]) -> None:
    # Both protocol eras: a handshake on every other connection, 2026-07-28 on the rest.
    async with Client(url, mode="legacy" if n % 2 else "auto") as client:
        ids = []
        for k in range(jobs):
            spec = {"name": f"c{n}", "sheets": [{"prompt": f"echo client-{n}-job-{k}"}]}
            submitted = await call(client, "submit_job", {"spec": spec, "job_id": f"c{n}-j{k}"})
            ids.append(submitted["job_id"])
        calls = 0
        for job_id in ids:
            while True:
                detail = await call(client, "status", {"job_id": job_id, "wait_seconds": 20})
                calls += 1
                if detail["status"] not in ("queued", "running"):
                    break
            out[job_id] = (detail["status"], detail["sheets"][0]["output_tail"])
        out[f"calls-{n}"] = calls


async def test_twenty_http_clients_submit_and_all_jobs_complete(
    tmp_path: Path, long_run: bool
) -> None:
    jobs = 50 if long_run else 3
    home = make_home(tmp_path)
    results: dict[str, Any] = {}
    with http_server(home) as server:
        url = f"{server.base}/mcp"
        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            for n in range(CLIENTS):
                tg.start_soon(one_client, url, n, jobs, results)
        took = time.monotonic() - t0
        async with Client(url) as observer:
            listed = await call(observer, "list_jobs", {"limit": 500})
            status = await call(observer, "status", {})
        assert server.proc.poll() is None, "the server must outlive its clients"
    expected = {f"c{n}-j{k}" for n in range(CLIENTS) for k in range(jobs)}
    done = {k: v for k, v in results.items() if not k.startswith("calls-")}
    assert set(done) == expected
    for job_id, (state, tail) in done.items():
        client, job = job_id[1:].split("-j")
        assert state == "completed", (job_id, state)
        assert f"client-{client}-job-{job}" in tail
    assert status["jobs_by_status"].get("completed") == len(expected), status["jobs_by_status"]
    if len(expected) <= 500:
        assert {j["job_id"] for j in listed["jobs"]} == expected
    # The long-poll did the waiting: a handful of status calls per job, never a tight loop.
    polls = sum(v for k, v in results.items() if k.startswith("calls-"))
    assert polls <= 4 * len(expected), polls
    print(f"{CLIENTS} HTTP clients, {len(expected)} jobs completed in {took:.1f}s, {polls} polls")

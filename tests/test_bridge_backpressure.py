"""The bridge's bounds on what a client has it hold: at most `MAX_IN_FLIGHT` of the client's
requests unanswered (past that it stops reading stdin), and an HTTP connection pool with
room for every one of them. Real `podium serve` processes attached to a real conductor.

Before: the only bound was the 1,024-message outbox, and the HTTP client's pool held 100
connections. A client with more than ~100 requests in flight (long-polls) had the rest wait
on the pool; after 30 s its PoolTimeout took the bridge's connection down as if the
conductor had died, and every request in flight, the long-polls the conductor was serving
included, got "the Podium conductor stopped"."""

from __future__ import annotations

import fcntl
import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from test_bridge_pipelining import (
    INITIALIZED,
    PODIUM,
    Serve,
    bridge,
    initialize,
    ok,
    request,
    serve_env,
    started_conductor,
    tool,
)

from podium.server.bridge import MAX_IN_FLIGHT

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

# httpx's pool timeout as the MCP SDK sets it (MCP_DEFAULT_TIMEOUT).
POOL_TIMEOUT = 30.0


async def handshake(serve: Serve) -> None:
    await serve.write(initialize("init"), INITIALIZED)
    ok((await serve.answers_for("init"))["init"])


def run_a_job(home: Path, tmp: Path, n: int) -> None:
    """A job that starts and completes: status changes that wake conductor-wide waits."""
    spec = tmp / f"wake-{n}.yaml"
    spec.write_text(json.dumps({"name": f"wake-{n}", "sheets": [{"prompt": "true"}]}))
    done = subprocess.run(
        [PODIUM, "run", str(spec)], env=serve_env(home), capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections from process `pid` to the conductor's port."""
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr[1] == port
    )


async def end_the_waits(serve: Serve, home: Path, tmp: Path, ids: list[Any]) -> None:
    """Status changes end the waits in flight; then the ones the bridge held go out and are
    woken by the next change."""
    with anyio.fail_after(120):
        n = 0
        while not all(i in serve.answers for i in [*ids, "ping"]):
            await anyio.to_thread.run_sync(run_a_job, home, tmp, n)
            n += 1
            # Not long: what is still unanswered needs another change, and a job is cheap.
            with anyio.move_on_after(1):
                await serve.answers_for(*ids, "ping")
    for request_id in ids:
        assert ok(serve.answers[request_id])["structuredContent"]["pid"] > 0
    assert ok(serve.answers["ping"]) == {}


async def test_as_many_long_polls_as_the_bridge_holds_are_all_at_the_conductor_at_once(
    home: Path, tmp_path: Path
) -> None:
    """Every request the bridge holds unanswered has its own connection to the conductor:
    none waits on the pool (which, at httpx's default 100, failed the rest after 30 s; the
    `--long` variant below waits that long)."""
    _, port = started_conductor(home)
    polls = [tool(f"poll-{n}", "status", wait_seconds=45) for n in range(MAX_IN_FLIGHT + 12)]
    async with bridge(home) as serve:
        await handshake(serve)
        await serve.write(*polls, request("ping", "ping"))
        with anyio.move_on_after(30):
            while connections_to(serve.proc.pid, port) < MAX_IN_FLIGHT:
                await anyio.sleep(0.2)
        held = connections_to(serve.proc.pid, port)
        assert held >= MAX_IN_FLIGHT, f"{held} connections: the rest wait on the pool"
        assert list(serve.answers) == ["init"], list(serve.answers.values())[1:4]
        await end_the_waits(serve, home, tmp_path, [p["id"] for p in polls])
        await serve.finish()


async def test_more_long_polls_than_a_default_pool_holds_are_all_served(
    home: Path, tmp_path: Path, long_run: bool
) -> None:
    if not long_run:
        pytest.skip("waits out httpx's 30 s pool timeout: run with --long")
    started_conductor(home)
    polls = [tool(f"poll-{n}", "status", wait_seconds=45) for n in range(MAX_IN_FLIGHT + 12)]
    async with bridge(home) as serve:
        await handshake(serve)
        await serve.write(*polls, request("ping", "ping"))
        # No status changes: nothing may be answered before the waits end. A request that
        # waits on the pool fails at its timeout; give it that long, and a margin.
        with anyio.move_on_after(POOL_TIMEOUT + 5):
            await serve.answers_for("ping", timeout=POOL_TIMEOUT + 10)
        assert list(serve.answers) == ["init"], list(serve.answers.values())[1:4]
        await end_the_waits(serve, home, tmp_path, [p["id"] for p in polls])
        await serve.finish()


def pipe_size(fd: int) -> int:
    return fcntl.fcntl(fd, 1032)  # F_GETPIPE_SZ


async def test_a_flood_is_read_no_faster_than_it_is_answered(home: Path) -> None:
    """Thousands of requests written as fast as the pipe takes them, answers read as they
    come: each is answered once with its own answer, and the bridge holds no more than
    `MAX_IN_FLIGHT` unanswered (what the client has written and not had answered is that,
    plus what the pipes between them hold); its memory stays flat."""
    pad = "x" * 2000  # long lines, so that the stdin pipe holds few of them
    flood: list[dict[str, Any]] = []
    for n in range(2000):
        if n % 10 == 0:
            flood.append(tool(n, "status", job_id=f"nope-{n}"))
        else:
            flood.append({**request(n, "ping"), "params": {"_meta": {"pad": pad}}})
    started_conductor(home)
    async with bridge(home) as serve:
        await handshake(serve)
        assert serve.stdin is not None
        in_pipe = pipe_size(serve.stdin) // len(json.dumps(flood[1])) + 1
        process = psutil.Process(serve.proc.pid)
        rss_before = process.memory_info().rss
        written = 0
        widest = 0
        rss_peak = rss_before

        async def write() -> None:
            nonlocal written
            for message in flood:
                await serve.write(message)
                written += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            with anyio.fail_after(150):
                while len(serve.answers) < len(flood) + 1:
                    assert await serve._next(), "stdout closed"
                    widest = max(widest, written - (len(serve.answers) - 1))
                    if len(serve.answers) % 100 == 0:
                        rss_peak = max(rss_peak, process.memory_info().rss)
        # The answers the test has not read yet sit in the stdout pipe: it reads them as they
        # come, so few; 200 is room for it lagging behind.
        assert widest <= MAX_IN_FLIGHT + in_pipe + 200, (widest, in_pipe)
        assert rss_peak - rss_before < 64 * 2**20, (rss_before, rss_peak)
        for n, message in enumerate(flood):
            answer = serve.answers[n]
            if message["method"] == "ping":
                assert ok(answer) == {}, answer
            else:
                assert answer["result"]["isError"] is True, answer
                assert f"'nope-{n}' not found" in answer["result"]["content"][0]["text"], answer
        await serve.finish()
        assert len(serve.order) == len(flood) + 1

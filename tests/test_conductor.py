"""The always-on conductor (issue 8), with real processes: stdio bridges launched as mcp.json
says, detached conductors, the CLI, kill -9, and the embedded engine's shutdown. Every home
is a temp dir; conftest stops any conductor a test leaves behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from test_transports import (
    MODERN,
    PODIUM,
    Inbox,
    call,
    echo_pid,
    kill_group_of,
    make_home,
    podium_cli,
    running,
    server_env,
)

from podium.core.config import load_config
from podium.core.store.open import open_store

pytestmark = pytest.mark.anyio


def bridge_params(home: Path, **env: str) -> StdioServerParameters:
    """`podium serve` exactly as mcp.json launches it, with PODIUM_HOME in a temp dir."""
    entry = json.loads((Path(__file__).resolve().parents[1] / "mcp.json").read_text())
    assert entry["mcpServers"]["podium"]["args"] == ["serve"]
    return StdioServerParameters(
        command=PODIUM,
        args=["serve"],
        env={"PODIUM_HOME": str(home), "PATH": os.environ["PATH"], **env},
    )


def conductor_pid(home: Path) -> int:
    pid: int = json.loads((home / "conductor.json").read_text())["pid"]
    return pid


def engines_on(home: Path) -> list[int]:
    """Processes running an engine on this home (a conductor child or a serve)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "environ", "status"]):
        with suppress(psutil.Error):
            cmd = proc.info["cmdline"] or []
            if proc.info["status"] == psutil.STATUS_ZOMBIE or "start" not in cmd:
                continue
            if str(home) in cmd:
                found.append(proc.pid)
    return found


async def wait_until(predicate: Any, timeout: float = 30, what: str = "condition") -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.05)


async def wait_job(client: Client, job_id: str, wanted: set[str], timeout: float = 60) -> Any:
    with anyio.fail_after(timeout):
        while True:
            detail = await call(client, "status", {"job_id": job_id, "wait_seconds": 5})
            if detail["status"] in wanted:
                return detail


@asynccontextmanager
async def conductor_client(home: Path) -> AsyncIterator[Client]:
    """An MCP client straight to the conductor's HTTP endpoint (as the CLI connects)."""
    info = json.loads((home / "conductor.json").read_text())
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {info['token']}"})
    async with http, Client(streamable_http_client(info["url"], http_client=http)) as client:
        yield client


# ----- two sessions and the CLI: one engine ---------------------------------------------------


async def test_two_stdio_sessions_and_the_cli_share_one_conductor(tmp_path: Path) -> None:
    """Two `podium serve` started at the same moment on a fresh home race to start the
    conductor; the OS lock decides: one engine, both sessions and `podium list` see the same
    job, and each sheet runs exactly once."""
    home = make_home(tmp_path)
    runs = tmp_path / "runs.txt"
    spec = {
        "name": "shared",
        "sheets": [{"name": f"s{i}", "prompt": f"echo s{i} >> {runs}"} for i in range(1, 4)],
    }
    clients: list[Client] = []
    release = anyio.Event()

    async def open_session() -> None:
        # Each session is opened and closed by its own task (the SDK's scopes need that).
        async with Client(bridge_params(home)) as client:
            clients.append(client)
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(open_session)
        tg.start_soon(open_session)
        await wait_until(lambda: len(clients) == 2, what="both sessions")
        first, second = clients
        pids = {(await call(c, "status", {}))["pid"] for c in clients}
        assert len(pids) == 1, f"two engines: {pids}"
        (pid,) = pids
        assert conductor_pid(home) == pid
        # The child that lost the start race exits as soon as it finds the lock taken.
        await wait_until(lambda: engines_on(home) == [pid], what="a single conductor process")
        assert (home / "conductor.lock").read_text().strip() == str(pid)

        submitted = await call(first, "submit_job", {"spec": spec, "job_id": "shared"})
        assert submitted["job_id"] == "shared"
        done = await wait_job(second, "shared", {"completed"})
        assert done["completed_sheets"] == 3
        listed = podium_cli(home, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [j["job_id"] for j in json.loads(listed.stdout)["jobs"]] == ["shared"]
        text = podium_cli(home, "list")
        assert text.stdout.splitlines()[0].split()[:3] == ["JOB", "STATUS", "SHEETS"]
        assert "shared" in text.stdout and "completed" in text.stdout
        release.set()
    assert sorted(runs.read_text().split()) == ["s1", "s2", "s3"], "each sheet once"
    history = json.loads(podium_cli(home, "status", "shared", "--json").stdout)
    assert [s["attempts"] for s in history["sheets"]] == [1, 1, 1]
    assert running(pid), "the conductor outlives both sessions"


# ----- the starting session leaves mid-job ----------------------------------------------------


def processes_of(home: Path) -> list[str]:
    """Live processes (not this test's) whose command line or environment names `home`:
    bridges, conductors, sheets and anything they left behind."""
    needle = str(home)
    found = []
    for proc in psutil.process_iter(["cmdline", "environ", "status"]):
        with suppress(psutil.Error):
            if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = proc.info["cmdline"] or []
            env = proc.info["environ"] or {}
            if any(needle in part for part in (*cmd, *env.values())):
                found.append(f"{proc.pid}: {' '.join(cmd)}")
    return found


@pytest.mark.parametrize(
    "termination_timeout",
    [
        # The SDK's own timing: stdin closed, SIGTERM to the group only if the bridge is still
        # there 2 s later.
        None,
        # SIGTERM at once, so the signal surely lands while the bridge lives.
        0.0,
    ],
    ids=["sdk-default-timing", "sigterm-at-once"],
)
async def test_starting_session_exits_mid_job_and_the_job_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, termination_timeout: float | None
) -> None:
    """The session that started the conductor goes away as the SDK does it (stdin closed,
    then SIGTERM to the server's whole process group): the job goes on and completes; a new
    session sees it completed; after `podium stop` no process of that home and no open
    attempt is left."""
    import mcp.client.stdio as sdk_stdio

    if termination_timeout is None:
        assert sdk_stdio.PROCESS_TERMINATION_TIMEOUT == 2.0  # the timing issue 8 names
    else:
        monkeypatch.setattr(sdk_stdio, "PROCESS_TERMINATION_TIMEOUT", termination_timeout)
    home = make_home(tmp_path)
    pid_file = tmp_path / "sheet.pid"
    release = tmp_path / "release"
    # The sheet runs until the test releases it: a fixed `sleep 4` could end before the
    # check that it outlived the session when the session took long to go (under load).
    hold = f"while [ ! -e {release} ]; do sleep 0.05; done"
    spec = {
        "name": "walkaway",
        "sheets": [
            {"name": "slow", "prompt": f"{echo_pid(pid_file)}; {hold}; echo slow-done"},
            {"name": "after", "depends_on": ["slow"], "prompt": "echo after-done"},
        ],
    }
    async with Client(bridge_params(home)) as starter:
        pid = (await call(starter, "status", {}))["pid"]
        await call(starter, "submit_job", {"spec": spec, "job_id": "walkaway"})
        await wait_until(pid_file.exists, what="the sheet started")
        bridge_gone_at = time.monotonic()
    # The SDK waited for the bridge to exit (or SIGTERMed it after 2 s): it is gone now.
    assert time.monotonic() - bridge_gone_at < 10
    sheet_pid = int(pid_file.read_text())
    assert running(pid) and running(sheet_pid), "the job stopped with the session"
    release.touch()

    async with Client(bridge_params(home), mode="legacy") as later:
        assert (await call(later, "status", {}))["pid"] == pid
        done = await wait_job(later, "walkaway", {"completed", "failed"})
        assert done["status"] == "completed", done
        assert "slow-done" in (done["sheets"][0]["output_tail"] or "")
    # The scan sees the conductor while it runs (so an empty scan below means something).
    assert any(line.startswith(f"{pid}: ") for line in processes_of(home))
    stopped = podium_cli(home, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not running(pid) and not running(sheet_pid)
    assert not (home / "conductor.json").exists()
    assert processes_of(home) == []
    store = await open_store(load_config(home=home, env={}))
    try:
        assert await store.in_flight_attempts() == []
    finally:
        await store.close()


# ----- notifications and long-polls through the bridge ----------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_notification_and_long_poll_through_the_bridge(tmp_path: Path, mode: str) -> None:
    home = make_home(tmp_path)
    inbox = Inbox()
    spec = {"name": "notify", "sheets": [{"prompt": "echo hi"}]}
    uri = "podium://jobs/notify/checkpoint"
    async with Client(bridge_params(home), mode=mode, message_handler=inbox.handler) as client:
        assert (client.protocol_version == MODERN) is (mode == "auto")
        await call(client, "submit_job", {"spec": spec, "job_id": "notify", "start": False})
        got = anyio.Event()
        progress: list[float] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(done)

        async def long_poll() -> dict[str, Any]:
            started = time.monotonic()
            result = await client.call_tool(
                "status", {"job_id": "notify", "wait_seconds": 40}, progress_callback=on_progress
            )
            assert not result.is_error, result
            assert time.monotonic() - started < 30, "the long-poll did not wake on the change"
            assert isinstance(result.structured_content, dict)
            return result.structured_content

        async with AsyncExitStack() as stack:
            if mode == "auto":
                sub = await stack.enter_async_context(client.listen(resource_subscriptions=[uri]))

                async def consume() -> None:
                    async for event in sub:
                        if isinstance(event, ResourceUpdated) and event.uri == uri:
                            got.set()
                            return

            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MCPDeprecationWarning)
                    await client.subscribe_resource(uri)

                async def consume() -> None:
                    await inbox.wait_for(uri, timeout=30)
                    got.set()

            polled: dict[str, Any] = {}
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)

                async def poll() -> None:
                    polled.update(await long_poll())

                tg.start_soon(poll)
                # The long-poll is waiting: its first progress tick (5 s in) came through the
                # bridge. A fixed 6 s sleep raced that tick under load.
                await wait_until(lambda: bool(progress), timeout=30, what="a progress tick")
                await call(client, "resume", {"job_id": "notify"})
                with anyio.fail_after(30):
                    await got.wait()
            assert polled["status"] in {"queued", "running", "completed"}
            assert progress, "no progress notification while the long-poll waited"
    assert not inbox.errors, inbox.errors


# ----- kill -9 of the conductor with a client attached ----------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_kill_9_of_the_conductor_with_a_client_attached(tmp_path: Path, mode: str) -> None:
    """The pending request gets an error; the next request starts a new conductor, whose
    recovery leaves the job `paused` (`interrupted`); `resume` completes it."""
    home = make_home(tmp_path)
    pid_file = tmp_path / "sheet.pid"
    marker = tmp_path / "second-run"
    prompt = (
        f"if [ -e {marker} ]; then echo second-run; else touch {marker}; "
        f"{echo_pid(pid_file)}; exec sleep 60; fi"
    )
    spec = {"name": "crash", "sheets": [{"prompt": prompt}]}
    try:
        async with Client(bridge_params(home), mode=mode) as client:
            old = (await call(client, "status", {}))["pid"]
            await call(client, "submit_job", {"spec": spec, "job_id": "crash"})
            await wait_until(pid_file.exists, what="the sheet started")
            sheet_pid = int(pid_file.read_text())
            outcome: dict[str, Any] = {}

            async def pending_request() -> None:
                started = time.monotonic()
                try:
                    result = await client.call_tool(
                        "status", {"job_id": "crash", "wait_seconds": 45}
                    )
                    outcome["error"] = result.is_error
                except MCPError as exc:
                    outcome["error"] = str(exc)
                outcome["after"] = time.monotonic() - started

            async with anyio.create_task_group() as tg:
                tg.start_soon(pending_request)
                await anyio.sleep(1)
                os.kill(old, signal.SIGKILL)
            assert outcome["error"], outcome
            assert outcome["after"] < 20, "the pending request waited out its long-poll"

            detail = await call(client, "status", {"job_id": "crash"})
            assert (detail["status"], detail["pause_reason"]) == ("paused", "interrupted")
            new = (await call(client, "status", {}))["pid"]
            assert new != old and running(new)
            assert not running(sheet_pid), "recovery left the old sheet running"
            await call(client, "resume", {"job_id": "crash"})
            done = await wait_job(client, "crash", {"completed", "failed"})
            assert done["status"] == "completed", done
            assert "second-run" in done["sheets"][0]["output_tail"]
    finally:
        kill_group_of(pid_file)


# ----- podium stop ------------------------------------------------------------------------------


async def test_stop_refuses_with_an_active_job_and_force_pauses_it(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    pid_file = tmp_path / "sheet.pid"
    started = podium_cli(home, "start", "--detach")
    assert started.returncode == 0, started.stderr
    pid = conductor_pid(home)
    assert (home / "conductor.json").stat().st_mode & 0o777 == 0o600
    try:
        async with conductor_client(home) as client:
            spec = {"name": "busy", "sheets": [{"prompt": f"{echo_pid(pid_file)}; exec sleep 60"}]}
            await call(client, "submit_job", {"spec": spec, "job_id": "busy-job"})
            await wait_until(pid_file.exists, what="the sheet started")
        refused = podium_cli(home, "stop")
        assert refused.returncode != 0
        assert "busy-job" in refused.stderr and "--force" in refused.stderr, refused.stderr
        assert running(pid) and running(int(pid_file.read_text()))

        forced = podium_cli(home, "stop", "--force")
        assert forced.returncode == 0, forced.stderr
        assert not running(pid)
        assert not running(int(pid_file.read_text()))
        assert not (home / "conductor.json").exists()
        job = json.loads(podium_cli(home, "status", "busy-job", "--json").stdout)
        assert (job["status"], job["pause_reason"]) == ("paused", "shutdown"), job
        again = podium_cli(home, "stop")
        assert again.returncode == 0 and "no conductor is running" in again.stdout
    finally:
        kill_group_of(pid_file)


async def test_long_polls_are_answered_when_the_conductor_stops(tmp_path: Path) -> None:
    """`podium stop` while clients long-poll (on a paused job, and on the conductor): each
    wait returns the status as it is, not an error from a connection cut after uvicorn's
    grace period; and the stop does not sit out that grace period."""
    home = make_home(tmp_path)
    started = podium_cli(home, "start", "--detach")
    assert started.returncode == 0, started.stderr
    pid = conductor_pid(home)
    answers: dict[str, Any] = {}
    async with conductor_client(home) as client:
        spec = {"name": "held", "sheets": [{"prompt": "echo never"}]}
        await call(client, "submit_job", {"spec": spec, "job_id": "held-job", "start": False})
        await call(client, "pause", {"job_id": "held-job"})

        async def wait(name: str, arguments: dict[str, Any]) -> None:
            result = await client.call_tool("status", {**arguments, "wait_seconds": 40})
            answers[name] = (result.is_error, result.structured_content, time.monotonic())

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, "job", {"job_id": "held-job"})
            tg.start_soon(wait, "conductor", {})
            await anyio.sleep(1)
            began = time.monotonic()
            stopped = await anyio.to_thread.run_sync(podium_cli, home, "stop")
            took = time.monotonic() - began
    assert stopped.returncode == 0, stopped.stderr
    assert not running(pid)
    job_error, job, job_at = answers["job"]
    assert not job_error and job["status"] == "paused", job
    conductor_error, conductor, conductor_at = answers["conductor"]
    assert not conductor_error and conductor["pid"] == pid, conductor
    assert max(job_at, conductor_at) - began < 2.5 and took < 2.5, (job_at, conductor_at, took)


async def test_idle_conductor_stops_by_itself(tmp_path: Path) -> None:
    """idle_exit_minutes: no active job and no client for that long -> a clean stop; an active
    job keeps it up."""
    home = make_home(tmp_path)
    env = server_env(home, PODIUM_IDLE_EXIT_MINUTES="0.02")  # 1.2 s
    spec = tmp_path / "slow.yaml"
    spec.write_text("name: slow\nsheets:\n  - prompt: sleep 3\n")
    started = time.monotonic()
    run = subprocess.Popen(
        [PODIUM, "run", str(spec)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Read while the job keeps it up: once `run` returns, the conductor may be gone
    # (idle for 1.2 s) before a slow machine gets to look.
    await wait_until(lambda: (home / "conductor.json").exists(), timeout=30, what="conductor")
    pid = conductor_pid(home)
    output, _ = await anyio.to_thread.run_sync(lambda: run.communicate(timeout=60))
    assert run.returncode == 0, output
    assert time.monotonic() - started >= 3
    await wait_until(lambda: not running(pid), timeout=30, what="idle exit")
    assert not (home / "conductor.json").exists()
    assert "idle" in (home / "logs" / "conductor.log").read_text()


# ----- the embedded engine: a second SIGTERM during shutdown ----------------------------------


def _rpc(proc: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write((json.dumps(message) + "\n").encode())
    proc.stdin.flush()


def _answer(proc: subprocess.Popen[bytes], request_id: int) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        assert line, "the server closed stdout"
        message: dict[str, Any] = json.loads(line)
        if message.get("id") == request_id:
            return message


async def test_embedded_second_sigterm_does_not_cut_the_kill_sequence(tmp_path: Path) -> None:
    """A sheet that ignores SIGTERM needs the full SIGTERM -> grace -> SIGKILL sequence; a
    second SIGTERM to the embedded server during its graceful stop must not end it early."""
    home = make_home(tmp_path)
    pid_file = tmp_path / "stubborn.pid"
    with (tmp_path / "embedded.log").open("wb") as log:
        proc = subprocess.Popen(
            [PODIUM, "serve", "--embedded"],
            env=server_env(home),  # kill_grace_seconds 2
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    try:
        _rpc(
            proc,
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"},
                },
            },
        )
        assert "result" in _answer(proc, 1)
        _rpc(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        prompt = f"trap '' TERM; {echo_pid(pid_file)}; while true; do sleep 0.2; done"
        spec = {"name": "stubborn", "sheets": [{"prompt": prompt}]}
        _rpc(
            proc,
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "submit_job", "arguments": {"spec": spec, "job_id": "st"}},
            },
        )
        assert not _answer(proc, 2)["result"].get("isError")
        await wait_until(pid_file.exists, what="the sheet started")
        sheet = int(pid_file.read_text())
        assert proc.stdin is not None
        proc.stdin.close()
        await anyio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        await anyio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        assert code == 0, (tmp_path / "embedded.log").read_text()
        assert not running(sheet), "the stubborn sheet was orphaned"
        assert "already stopping" in (tmp_path / "embedded.log").read_text()
        job = json.loads(podium_cli(home, "status", "st", "--json").stdout)
        assert (job["status"], job["pause_reason"]) == ("paused", "shutdown"), job
        store = await open_store(load_config(home=home, env={}))
        try:
            assert await store.in_flight_attempts() == []
        finally:
            await store.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        kill_group_of(pid_file)


# ----- the bridge lets a lost conductor go before it looks again ------------------------------


async def test_the_bridge_waits_for_a_lost_conductor_to_be_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGKILLed conductor closes its sockets before its pid goes; the bridge looks for a
    conductor again only once that pid is gone (or after the grace, for a conductor whose
    connection alone broke)."""
    from podium.server import bridge

    dying = subprocess.Popen(["sleep", "60"])
    try:
        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:

            async def kill_soon() -> None:
                await anyio.sleep(0.5)
                dying.kill()  # reaped by _let_go: it is our child

            tg.start_soon(kill_soon)
            await bridge._let_go(dying.pid)
        waited = time.monotonic() - t0
        assert 0.5 <= waited < bridge.LOST_GRACE_SECONDS, waited
        assert not running(dying.pid)
    finally:
        if dying.poll() is None:
            dying.kill()
        dying.wait()

    alive = subprocess.Popen(["sleep", "60"])
    try:
        monkeypatch.setattr(bridge, "LOST_GRACE_SECONDS", 0.3)
        t0 = time.monotonic()
        await bridge._let_go(alive.pid)
        assert 0.3 <= time.monotonic() - t0 < 5
        assert running(alive.pid)
    finally:
        alive.kill()
        alive.wait()


async def test_the_bridge_lets_the_lost_conductor_go_before_it_looks_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The order in Bridge.run: attach, lose the conductor, let that pid go, look again."""
    from datetime import UTC, datetime

    from podium.core.home import ConductorInfo
    from podium.server import bridge

    def info(pid: int) -> ConductorInfo:
        return ConductorInfo(
            pid=pid, url=f"http://127.0.0.1:1/{pid}/mcp", token=None, version="0",
            started_at=datetime.now(UTC),
        )  # fmt: skip

    found = iter([info(111), info(222)])
    events: list[tuple[str, int]] = []

    async def ensure(config: Any, **_: Any) -> tuple[ConductorInfo, bool]:
        got = next(found)
        events.append(("look", got.pid))
        return got, False

    async def attach(self: Any, got: ConductorInfo, *_: Any) -> None:
        events.append(("attach", got.pid))
        if got.pid == 111:
            raise bridge.UpstreamLost("conductor pid 111 exited")
        # 222: the client closes stdin

    async def let_go(pid: int) -> None:
        events.append(("let go", pid))

    async def next_message(self: Any, client_read: Any) -> object:
        return object()  # the client's next request, carried to the next conductor

    @asynccontextmanager
    async def stdio() -> AsyncIterator[tuple[Any, Any]]:
        send, receive = anyio.create_memory_object_stream[Any](1)
        yield receive, send

    monkeypatch.setattr(bridge, "ensure_conductor", ensure)
    monkeypatch.setattr(bridge.Bridge, "_attach", attach)
    monkeypatch.setattr(bridge.Bridge, "_next_message", next_message)
    monkeypatch.setattr(bridge, "_let_go", let_go)
    monkeypatch.setattr(bridge, "guarded_stdio_server", stdio)
    assert await bridge.Bridge(load_config(home=make_home(tmp_path), env={})).run() == 0
    assert events == [("look", 111), ("attach", 111), ("let go", 111), ("look", 222),
                      ("attach", 222)]  # fmt: skip

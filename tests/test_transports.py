"""Transports and their security (SPEC §7, §8): real `podium serve` processes on 127.0.0.1,
driven by the SDK's own clients (stdio, streamable HTTP, SSE) and by raw HTTP for the security
checks. Every server gets its own temp PODIUM_HOME and is killed in `finally`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import psutil
import pytest
from cli_zygote import run_podium
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import ResourceUpdatedNotification

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
MODERN = "2026-07-28"
INIT_BODY = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw-http", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


# ----- processes ------------------------------------------------------------------------------


def mcp_json_server() -> tuple[str, list[str]]:
    """The `podium` entry of mcp.json, its command resolved to this venv's executable."""
    entry = json.loads((REPO / "mcp.json").read_text())["mcpServers"]["podium"]
    command = shutil.which(entry["command"], path=str(VENV_BIN)) or shutil.which(
        entry["command"], path=str(REPO / ".venv" / "bin")
    )
    assert command, f"{entry['command']!r} from mcp.json is not installed in {VENV_BIN}"
    return command, list(entry["args"])


PODIUM = mcp_json_server()[0]


def running(pid: int) -> bool:
    """Alive and not a zombie (a detached conductor's parent may be gone, leaving init to
    reap it whenever it does)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_env(home: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any PODIUM_* setting, plus a temp home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    env.update(PODIUM_HOME=str(home), PODIUM_KILL_GRACE_SECONDS="2", **extra)
    return env


def make_home(tmp_path: Path, name: str = "home") -> Path:
    home = tmp_path / name
    home.mkdir()
    return home


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL to its whole session (it was started in a new one)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def echo_pid(pid_file: Path | str) -> str:
    """Shell that writes its pid to pid_file in one step: a plain `echo $$ > f` creates the
    file empty first, and a test that saw it exist could read "" before the pid lands."""
    return f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}"


def kill_group_of(pid_file: Path) -> None:
    """Kill a sheet's process group (its leader wrote `$$` to pid_file), if still there."""
    with suppress(FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        pgid = int(pid_file.read_text().strip())
        if pgid > 1 and pgid != os.getpgid(0):
            os.killpg(pgid, signal.SIGKILL)


@dataclass
class HttpServer:
    proc: subprocess.Popen[bytes]
    port: int
    home: Path
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_serve(
    home: Path, args: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    log = home.parent / f"{home.name}-serve-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PODIUM, "serve", *args],
            env=env or server_env(home),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, log


def bound_port(proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> int:
    """The port a `podium serve --port 0` bound, from its log's `serving` line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if found := re.search(r"event='serving'.*? port=(\d+)", text):
            return int(found.group(1))
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{text}")
        time.sleep(0.05)
    pytest.fail(f"no 'serving' line after {timeout}s:\n{log.read_text(errors='replace')}")


def wait_healthy(
    server: HttpServer, timeout: float = 15, token: str | None = None
) -> dict[str, Any]:
    """/healthz with the token when there is one: readiness is told only to those who hold it."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"server exited with {server.proc.returncode}:\n{server.output()}")
        with suppress(httpx2.TransportError):
            r = httpx2.get(f"{server.base}/healthz", timeout=2, headers=headers)
            if r.status_code == 200:
                body: dict[str, Any] = r.json()
                return body
        time.sleep(0.1)
    pytest.fail(f"/healthz not ready after {timeout}s:\n{server.output()}")


@contextmanager
def http_server(
    home: Path,
    transport: str = "streamable-http",
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[HttpServer]:
    # Port 0, read back from the server's "serving" line: a port found free here could be
    # taken (by another xdist worker's server or conductor) before the server binds it.
    args = ["--transport", transport, "--host", "127.0.0.1", "--port", "0", *(extra or [])]
    proc, log = start_serve(home, args, env)
    try:
        server = HttpServer(proc, bound_port(proc, log), home, log)
        extra_args = extra or []
        token = (env or {}).get("PODIUM_TOKEN")
        if "--token" in extra_args:
            token = extra_args[extra_args.index("--token") + 1]
        body = wait_healthy(server, token=token)
        assert body["alive"] is True and body["ready"] is True, body
        yield server
    finally:
        stop_process(proc)


def podium_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A `podium` command as a process of its own (forked from tests/cli_zygote.py)."""
    return run_podium(list(args), server_env(home), timeout=30)


# ----- MCP round trip -------------------------------------------------------------------------


def dag_spec(tag: str) -> dict[str, Any]:
    """Three shell sheets; sheets 2 and 3 depend on sheet 1."""
    return {
        "name": "dag",
        "sheets": [
            {
                "name": "first",
                "prompt": f"echo first-{tag}; echo {tag} > one.txt",
                "validations": [{"type": "file_exists", "path": "one.txt"}],
            },
            {"name": "second", "depends_on": ["first"], "prompt": "echo second-$(cat one.txt)"},
            {"name": "third", "depends_on": [1], "prompt": f"echo third-{tag}"},
        ],
    }


@dataclass
class Inbox:
    """What a client's message handler received: resource updates and transport errors (a
    non-protocol line on a stdio server's stdout arrives here as an exception)."""

    updated: list[str] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)

    async def handler(self, message: Any) -> None:
        if isinstance(message, Exception):
            self.errors.append(message)
        elif isinstance(message, ResourceUpdatedNotification):
            self.updated.append(str(message.params.uri))
            self.changed.set()
            self.changed = anyio.Event()

    async def wait_for(self, uri: str, timeout: float = 10) -> None:
        with anyio.fail_after(timeout):
            while uri not in self.updated:
                await self.changed.wait()


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, f"{tool} failed: {result.content}"
    assert isinstance(result.structured_content, dict), result
    return result.structured_content


async def read_text(client: Client, uri: str) -> str:
    result = await client.read_resource(uri)
    text = getattr(result.contents[0], "text", None)
    assert isinstance(text, str), result
    return text


async def wait_status(
    client: Client, job_id: str, wanted: set[str], timeout: float = 30
) -> dict[str, Any]:
    """Follow a job with the bounded long-poll (`wait_seconds`), never a tight loop."""
    calls = 0
    with anyio.fail_after(timeout):
        while True:
            detail = await call(client, "status", {"job_id": job_id, "wait_seconds": 10})
            calls += 1
            if detail["status"] in wanted:
                assert calls <= 10, f"{calls} status calls: wait_seconds does not wait"
                return detail
            assert detail["status"] not in {"failed", "cancelled"}, detail


async def round_trip(client: Client, inbox: Inbox, job_id: str) -> dict[str, Any]:
    """Submit a 3-sheet DAG paused, subscribe to its checkpoint, resume it, follow it to the end
    through `status`, read the checkpoint and a sheet log, and see the change notification."""
    uri = f"podium://jobs/{job_id}/checkpoint"
    submitted = await call(
        client, "submit_job", {"spec": dag_spec(job_id), "job_id": job_id, "start": False}
    )
    assert submitted["status"] == "paused" and submitted["pause_reason"] == "not_started"
    assert submitted["total_sheets"] == 3

    async def run_job() -> dict[str, Any]:
        resumed = await call(client, "resume", {"job_id": job_id})
        assert resumed["status"] in {"queued", "running", "completed"}, resumed
        return await wait_status(client, job_id, {"completed"})

    if client.protocol_version == MODERN:
        got = anyio.Event()
        async with client.listen(resource_subscriptions=[uri]) as sub:

            async def consume() -> None:
                async for event in sub:
                    if isinstance(event, ResourceUpdated) and event.uri == uri:
                        got.set()
                        return

            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                detail = await run_job()
                with anyio.fail_after(10):
                    await got.wait()
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.subscribe_resource(uri)
        detail = await run_job()
        await inbox.wait_for(uri)

    assert detail["completed_sheets"] == 3 and detail["failed_sheets"] == 0, detail
    assert [s["status"] for s in detail["sheets"]] == ["completed"] * 3

    checkpoint = json.loads(await read_text(client, uri))
    assert checkpoint["job_id"] == job_id and checkpoint["status"] == "completed"
    assert {s["sheet_num"]: s["depends_on"] for s in checkpoint["sheets"]} == {
        1: [],
        2: [1],
        3: [1],
    }
    log = await read_text(client, f"podium://jobs/{job_id}/sheets/2/log")
    assert f"second-{job_id}" in log, log
    assert not inbox.errors, inbox.errors
    return checkpoint


# ----- 1. stdio, as mcp.json launches it ------------------------------------------------------


def stdio_params(home: Path, *extra_args: str) -> StdioServerParameters:
    command, args = mcp_json_server()
    assert args == ["serve"]
    return StdioServerParameters(
        command=command,
        args=[*args, *extra_args],
        env={
            "PODIUM_HOME": str(home),
            "PATH": os.environ["PATH"],
            "PODIUM_KILL_GRACE_SECONDS": "2",
        },
    )


async def _round_trip_then_long_job(
    tmp_path: Path, params: StdioServerParameters, pid_file: Path
) -> tuple[int, float]:
    """A DAG round trip, then a long sheet left running when the client closes stdin.
    Returns the engine's pid (from `status`) and how long the server took to exit."""
    import mcp.client.session as sdk_session

    inbox = Inbox()
    # The SDK's `server/discover` probe gives up after 10 s and settles for the legacy
    # protocol; a first `podium serve` starts the conductor before it can answer, which on a
    # machine running several suites at once took longer than that. The protocol is what
    # this checks, not the machine's speed.
    saved_timeout = sdk_session.DISCOVER_TIMEOUT_SECONDS
    sdk_session.DISCOVER_TIMEOUT_SECONDS = 60.0
    try:
        return await _round_trip_then_long_job_within(tmp_path, params, pid_file, inbox)
    finally:
        sdk_session.DISCOVER_TIMEOUT_SECONDS = saved_timeout


async def _round_trip_then_long_job_within(
    tmp_path: Path, params: StdioServerParameters, pid_file: Path, inbox: Inbox
) -> tuple[int, float]:
    with (tmp_path / "stderr.log").open("w") as errlog:
        client = Client(stdio_client(params, errlog=errlog), message_handler=inbox.handler)
        async with client:
            assert client.protocol_version == MODERN
            status = await call(client, "status", {})
            engine_pid: int = status["pid"]
            assert Path(status["home"]) == Path(params.env["PODIUM_HOME"])  # type: ignore[index]
            await round_trip(client, inbox, "stdio-dag")
            spec = {"name": "long", "sheets": [{"prompt": f"{echo_pid(pid_file)}; exec sleep 60"}]}
            long = await call(client, "submit_job", {"job_id": "long", "spec": spec})
            assert long["status"] in {"queued", "running"}
            # The sheet runs, then its shell writes the pid file: a long-poll on the status
            # would sleep out its 5 s for the file (no status changes by then).
            with anyio.fail_after(30):
                while True:
                    detail = await call(client, "status", {"job_id": "long", "wait_seconds": 5})
                    if detail["sheets"][0]["status"] == "running":
                        break
                while not pid_file.exists():
                    await anyio.sleep(0.05)
            assert not inbox.errors, inbox.errors
            closing = time.monotonic()
        return engine_pid, time.monotonic() - closing


async def test_stdio_as_mcp_json_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`podium serve` as mcp.json launches it attaches to the home's conductor (starting it):
    the host closing stdin ends only the bridge, never a job (SPEC §3). Changed premise: this
    test used to expect the running job to be paused (`shutdown`) with the server."""
    import mcp.client.stdio as sdk_stdio

    # The SDK closes stdin, waits PROCESS_TERMINATION_TIMEOUT, then SIGTERMs. Make the wait
    # long, so a quick exit proves the bridge stopped on stdin EOF by itself.
    monkeypatch.setattr(sdk_stdio, "PROCESS_TERMINATION_TIMEOUT", 30.0)
    home = make_home(tmp_path)
    pid_file = tmp_path / "long.pid"
    try:
        conductor_pid, took = await _round_trip_then_long_job(
            tmp_path, stdio_params(home), pid_file
        )
        assert took < 10, f"the bridge needed {took:.1f}s to exit after stdin EOF"
        assert running(conductor_pid), "the conductor must outlive the session"
        assert running(int(pid_file.read_text())), "the running sheet was stopped"
        info = json.loads((home / "conductor.json").read_text())
        assert info["pid"] == conductor_pid
        assert "conductor started" in (home / "logs" / "conductor.log").read_text()
        job = json.loads(podium_cli(home, "status", "long", "--json").stdout)
        assert (job["status"], job["sheets"][0]["status"]) == ("running", "running"), job
        dag = json.loads(podium_cli(home, "status", "stdio-dag", "--json").stdout)
        assert dag["status"] == "completed"
        stopped = podium_cli(home, "stop", "--force")
        assert stopped.returncode == 0, stopped.stderr
        assert not running(conductor_pid)
        assert not running(int(pid_file.read_text()))
    finally:
        kill_group_of(pid_file)


async def test_embedded_stdio_stops_with_its_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`podium serve --embedded` keeps the engine in the stdio process: when the host closes
    stdin the conductor stops gracefully, the running sheet is ended and its job paused."""
    import mcp.client.stdio as sdk_stdio

    monkeypatch.setattr(sdk_stdio, "PROCESS_TERMINATION_TIMEOUT", 30.0)
    home = make_home(tmp_path)
    pid_file = tmp_path / "long.pid"
    server_pid: int | None = None
    try:
        server_pid, took = await _round_trip_then_long_job(
            tmp_path, stdio_params(home, "--embedded"), pid_file
        )
        assert took < 10, f"server needed {took:.1f}s to exit after stdin EOF"
        assert not psutil.pid_exists(server_pid)
        assert not psutil.pid_exists(int(pid_file.read_text())), "the sheet outlived the server"
        assert not (home / "conductor.json").exists()
        assert "conductor started" in (home / "logs" / "conductor.log").read_text()
        job = json.loads(podium_cli(home, "status", "long", "--json").stdout)
        assert (job["status"], job["pause_reason"]) == ("paused", "shutdown"), job
        dag = json.loads(podium_cli(home, "status", "stdio-dag", "--json").stdout)
        assert dag["status"] == "completed"
    finally:
        if server_pid is not None and psutil.pid_exists(server_pid):
            with suppress(ProcessLookupError):
                os.kill(server_pid, signal.SIGKILL)
        kill_group_of(pid_file)


# ----- 2. streamable HTTP ---------------------------------------------------------------------


async def test_streamable_http_round_trip_and_shared_engine(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    with http_server(home) as server:
        health = httpx2.get(f"{server.base}/healthz").json()
        assert health["alive"] is True and health["ready"] is True
        url = f"{server.base}/mcp"
        modern, legacy = Inbox(), Inbox()
        async with (
            Client(url, message_handler=modern.handler) as first,
            Client(url, mode="legacy", message_handler=legacy.handler) as second,
        ):
            assert first.protocol_version == MODERN
            assert second.protocol_version != MODERN
            await round_trip(first, modern, "http-modern")
            await round_trip(second, legacy, "http-legacy")

            # One engine behind both connections: each sees the job the other submitted.
            seen_by_first = await call(first, "list_jobs", {})
            seen_by_second = await call(second, "list_jobs", {})
            ids = {"http-modern", "http-legacy"}
            assert ids <= {j["job_id"] for j in seen_by_first["jobs"]}
            assert ids <= {j["job_id"] for j in seen_by_second["jobs"]}
            other = json.loads(await read_text(second, "podium://jobs/http-modern/checkpoint"))
            assert other["status"] == "completed"
            jobs = json.loads(await read_text(first, "podium://jobs"))
            assert ids <= {j["job_id"] for j in jobs["jobs"]}
        assert server.proc.poll() is None, "the server must outlive its clients"
    assert "conductor started" in (home / "logs" / "conductor.log").read_text()


async def test_http_server_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM to an HTTP server is a graceful stop (SPEC §6): the conductor stops, the running
    sheet is ended and its job paused with `shutdown`. (uvicorn re-raises a captured SIGTERM
    after serve() returns, which once killed the process before `conductor.stop()`.)"""
    home = make_home(tmp_path)
    pid_file = tmp_path / "long.pid"
    try:
        with http_server(home) as server:
            async with Client(f"{server.base}/mcp") as client:
                spec = {
                    "name": "long",
                    "sheets": [{"prompt": f"{echo_pid(pid_file)}; exec sleep 60"}],
                }
                await call(client, "submit_job", {"job_id": "long", "spec": spec})
                with anyio.fail_after(20):
                    while not pid_file.exists():
                        await call(client, "status", {"job_id": "long", "wait_seconds": 2})
            server.proc.terminate()
            code = server.proc.wait(15)
            time.sleep(0.2)
            problems = []
            if code != 0:
                problems.append(f"exit code {code}")
            if "conductor stopped" not in (home / "logs" / "conductor.log").read_text():
                problems.append("conductor.stop() never ran")
            if psutil.pid_exists(int(pid_file.read_text())):
                problems.append("the running sheet outlived the server")
            job = json.loads(podium_cli(home, "status", "long", "--json").stdout)
            if (job["status"], job["pause_reason"]) != ("paused", "shutdown"):
                problems.append(f"job is {job['status']}/{job['pause_reason']}")
            assert not problems, problems
    finally:
        kill_group_of(pid_file)


# ----- 3. SSE ---------------------------------------------------------------------------------


async def test_sse_round_trip(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    with http_server(home, transport="sse") as server:
        inbox = Inbox()
        async with Client(sse_client(f"{server.base}/sse"), message_handler=inbox.handler) as c:
            await round_trip(c, inbox, "sse-dag")
        # A second SSE connection sees the same engine (SSE runs a lifespan per connection).
        async with Client(sse_client(f"{server.base}/sse"), mode="legacy") as c:
            listed = await call(c, "list_jobs", {})
            assert [j["job_id"] for j in listed["jobs"]] == ["sse-dag"]
            status = await call(c, "status", {})
            assert status["jobs_by_status"] == {"completed": 1}


# ----- 4. bearer token ------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["flag", "env"])
async def test_token_required(tmp_path: Path, via: str) -> None:
    home = make_home(tmp_path)
    token = "s3cret"
    if via == "flag":
        ctx = http_server(home, extra=["--token", token])
    else:
        ctx = http_server(home, env=server_env(home, PODIUM_TOKEN=token))
    with ctx as server:
        url = f"{server.base}/mcp"
        async with httpx2.AsyncClient(timeout=10) as http:
            missing = await http.post(url, json=INIT_BODY, headers=MCP_HEADERS)
            assert missing.status_code == 401, missing.text
            assert "bearer" in missing.headers.get("www-authenticate", "").lower()
            wrong = await http.post(
                url, json=INIT_BODY, headers={**MCP_HEADERS, "Authorization": "Bearer nope"}
            )
            assert wrong.status_code == 401, wrong.text
            # /healthz is for supervisors: no token needed, and it reveals no job data.
            assert (await http.get(f"{server.base}/healthz")).status_code == 200

        auth = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=auth) as http,
            Client(streamable_http_client(url, http_client=http)) as c,
        ):
            status = await call(c, "status", {})
            assert status["ready"] is True
            submitted = await call(
                c, "submit_job", {"spec": dag_spec("auth"), "job_id": "auth-dag"}
            )
            assert submitted["job_id"] == "auth-dag"


# ----- 5. DNS rebinding -----------------------------------------------------------------------


async def test_dns_rebinding_refused(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    with http_server(home) as server:
        url = f"{server.base}/mcp"
        async with httpx2.AsyncClient(timeout=10) as http:
            ok = await http.post(url, json=INIT_BODY, headers=MCP_HEADERS)
            assert ok.status_code == 200, ok.text
            host = await http.post(
                url, json=INIT_BODY, headers={**MCP_HEADERS, "Host": "evil.example"}
            )
            assert 400 <= host.status_code < 500, (host.status_code, host.text)
            host_port = await http.post(
                url,
                json=INIT_BODY,
                headers={**MCP_HEADERS, "Host": f"evil.example:{server.port}"},
            )
            assert 400 <= host_port.status_code < 500, (host_port.status_code, host_port.text)
            origin = await http.post(
                url, json=INIT_BODY, headers={**MCP_HEADERS, "Origin": "http://evil.example"}
            )
            assert 400 <= origin.status_code < 500, (origin.status_code, origin.text)
            local_origin = await http.post(
                url,
                json=INIT_BODY,
                headers={**MCP_HEADERS, "Origin": f"http://localhost:{server.port}"},
            )
            assert local_origin.status_code == 200, local_origin.text


# ----- 6. non-loopback bind without a token ---------------------------------------------------


def test_non_loopback_bind_needs_token(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    port = free_port()
    proc, log = start_serve(
        home, ["--transport", "streamable-http", "--host", "0.0.0.0", "--port", str(port)]
    )
    try:
        started = time.monotonic()
        code = proc.wait(15)
        took = time.monotonic() - started
        output = log.read_text()
        assert code != 0, output
        assert took < 10
        assert "token" in output.lower(), output
        assert "0.0.0.0" in output, output
    finally:
        stop_process(proc)


# ----- 7. one conductor per home --------------------------------------------------------------


async def test_second_serve_on_same_home_attaches(tmp_path: Path) -> None:
    """Changed premise: a stdio `podium serve` on a home whose engine serves streamable HTTP
    used to exit ("home locked"); it now attaches to that engine (SPEC §3)."""
    home = make_home(tmp_path)
    with http_server(home) as first:
        async with Client(stdio_client(stdio_params(home))) as client:
            status = await call(client, "status", {})
            assert status["pid"] == first.proc.pid
        # The running server is unharmed.
        assert httpx2.get(f"{first.base}/healthz").status_code == 200


def test_serve_on_a_home_owned_by_an_embedded_engine_refused(tmp_path: Path) -> None:
    """An embedded engine serves nothing another process can attach to: a second serve exits
    with a message naming the pid and the home."""
    home = make_home(tmp_path)
    first = subprocess.Popen(
        [PODIUM, "serve", "--embedded"],
        env=server_env(home),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not (home / "conductor.json").exists():
            assert time.monotonic() < deadline and first.poll() is None, "no conductor.json"
            time.sleep(0.05)
        second, log = start_serve(home, [])
        try:
            code = second.wait(30)
            output = log.read_text()
            assert code != 0, output
            assert f"pid {first.pid}" in output, output
            assert str(home) in output, output
        finally:
            stop_process(second)
    finally:
        assert first.stdin is not None
        first.stdin.close()
        first.wait(20)


# ----- 8. conformance suite + Inspector (Node tools; opt-in) ----------------------------------


@pytest.mark.skipif(
    not os.environ.get("PODIUM_CONFORMANCE"),
    reason="set PODIUM_CONFORMANCE=1 to run the MCP conformance suite and Inspector (Node 22)",
)
@pytest.mark.timeout(600)
def test_mcp_conformance_script() -> None:
    script = REPO / "tests" / "mcp_conformance.sh"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    env["PODIUM"] = PODIUM
    result = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_reload_applies_config_to_the_running_server(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    with http_server(home) as server:
        (home / "config.yaml").write_text("max_concurrent_sheets: 3\nauto_resume: true\n")
        done = podium_cli(home, "reload")
        assert done.returncode == 0, done.stderr
        assert f"pid {server.proc.pid}" in done.stdout
        log = home / "logs" / "conductor.log"
        deadline = time.monotonic() + 10
        while "configuration reloaded" not in log.read_text():
            assert time.monotonic() < deadline, "the server did not reload"
            time.sleep(0.1)
        line = next(x for x in log.read_text().splitlines() if "configuration reloaded" in x)
        assert "max_concurrent_sheets" in line and "auto_resume" in line
        assert wait_healthy(server)["ready"] is True
    nobody = podium_cli(home, "reload")
    assert nobody.returncode != 0 and "no conductor is running" in nobody.stderr

"""The conductor's descriptor limit (RLIMIT_NOFILE). Each stdio bridge may hold 136 HTTP
connections to it, so it raises its soft limit toward the hard limit at start (bounded,
never lowered: core/runner/descriptors.py); the processes of its sheets get the soft limit
it was started with back (a raised one breaks programs that use select()). And when it runs
out of descriptors anyway, it keeps serving the connections it has, does not spin (Python
3.11's accept retries multiplied until they took a core), and accepts again once
descriptors are free. Real conductors (`podium start --detach`) started under the limits
each test sets, read through /proc/<pid>/limits."""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import wait_until
from test_bridge_pipelining import PODIUM, serve_env

from podium.core.runner.descriptors import CEILING

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

# The most CPU time a conductor may spend in six seconds out of descriptors.
SPIN_SECONDS = 0.6
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "descriptors", "version": "0"},
}


def open_files_limit(pid: int) -> tuple[int, int]:
    """(soft, hard) of `Max open files` in /proc/<pid>/limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open files limit for pid {pid}")


@contextmanager
def conductor_under(home: Path, soft: int, hard: int) -> Iterator[dict[str, Any]]:
    """A conductor started (detached) by a `podium start` that runs with these limits;
    conductor.json's contents. Stopped (forced) after."""

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    # preexec_fn: this test process forks once, for `podium start`; the conductor that one
    # spawns inherits its limits.
    done = subprocess.run(
        [PODIUM, "start", "--detach"],
        env=serve_env(home),
        capture_output=True,
        timeout=90,
        preexec_fn=limited,
    )
    assert done.returncode == 0, done.stderr.decode()
    try:
        yield json.loads((home / "conductor.json").read_text())
    finally:
        stop = subprocess.run(
            [PODIUM, "stop", "--force"], env=serve_env(home), capture_output=True, timeout=90
        )
        assert stop.returncode == 0, stop.stderr.decode()


def can_raise_hard_limit(to: int) -> bool:
    """Whether this process may start a child with a hard limit of `to` (raising one
    needs CAP_SYS_RESOURCE, and the kernel's nr_open caps it)."""
    try:
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    except OSError:
        return False
    try:
        subprocess.run(
            ["true"],
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, to)),
            check=True,
        )
    except (subprocess.SubprocessError, OSError):
        return False
    return to <= nr_open


def limit_log_lines(home: Path) -> list[str]:
    log = (home / "logs" / "conductor.log").read_text()
    return [line for line in log.splitlines() if "descriptor limit" in line]


@pytest.mark.parametrize(
    ("started", "expected", "event"),
    [
        ((512, 4096), (4096, 4096), "descriptor limit raised"),
        ((300, 300), (300, 300), "descriptor limit kept"),
        # A hard limit past the ceiling: raised to the ceiling only.
        ((1024, 200_000), (CEILING, 200_000), "descriptor limit raised"),
        # A soft limit already past the ceiling is never lowered.
        ((CEILING + 4464, 200_000), (CEILING + 4464, 200_000), "descriptor limit kept"),
    ],
)
def test_the_conductor_raises_its_soft_limit_within_bounds(
    home: Path, started: tuple[int, int], expected: tuple[int, int], event: str
) -> None:
    if started[1] > resource.getrlimit(resource.RLIMIT_NOFILE)[1] and not (
        can_raise_hard_limit(started[1])
    ):
        pytest.skip(f"cannot start a process with a hard limit of {started[1]} here")
    with conductor_under(home, *started) as info:
        assert open_files_limit(info["pid"]) == expected
        lines = limit_log_lines(home)
        assert len(lines) == 1 and f"event='{event}'" in lines[0], lines
        assert f"soft={expected[0]} found={started[0]} hard={started[1]}" in lines[0], lines


@pytest.mark.parametrize(
    ("started", "ceiling", "expected"),
    [((1024, 4096), 2000, 2000), ((3000, 4096), 2000, 3000), ((1024, 4096), 8192, 4096)],
)
def test_the_raise_is_bounded_by_the_ceiling_and_never_lowers(
    started: tuple[int, int], ceiling: int, expected: int
) -> None:
    """`raise_descriptor_limit` itself, in a process of its own, with a ceiling below the
    hard limit (raising a hard limit past this one's, to try `CEILING`, needs privileges)."""
    code = (
        "import resource; from podium.core.runner.descriptors import raise_descriptor_limit; "
        f"raise_descriptor_limit(ceiling={ceiling}); "
        "print(*resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, started),
    )
    assert done.stdout.split() == [str(expected), str(started[1])], done


async def test_a_sheet_gets_the_limit_the_conductor_was_started_with(
    home: Path, tmp_path: Path
) -> None:
    """Its process and one it starts later, both alive while the test reads them."""
    marks = tmp_path / "marks"
    marks.mkdir()
    spec = tmp_path / "limits.json"
    script = f"echo $$ > {marks}/leader.pid; sleep 60 & echo $! > {marks}/child.pid; wait"
    spec.write_text(json.dumps({"name": "limits", "sheets": [{"prompt": script}]}))
    with conductor_under(home, 512, 4096) as info:
        assert open_files_limit(info["pid"]) == (4096, 4096)
        run = subprocess.Popen(
            [PODIUM, "run", str(spec), "--job-id", "limits"],
            env=serve_env(home),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            pid_files = [marks / "leader.pid", marks / "child.pid"]

            async def started() -> bool:
                return all(f.exists() and f.read_text().strip() for f in pid_files)

            await wait_until(started, timeout=60)
            pids = [int(f.read_text()) for f in pid_files]

            async def restored() -> bool:
                return all(open_files_limit(pid) == (512, 4096) for pid in pids)

            await wait_until(restored, timeout=10)
        finally:
            subprocess.run(
                [PODIUM, "cancel", "limits"], env=serve_env(home), capture_output=True, timeout=60
            )
            run.wait(timeout=60)


def status_call(connection: http.client.HTTPConnection, token: str, request_id: int) -> Any:
    """tools/call status as a 2026-07-28 request on `connection` (kept open between calls)."""
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "status", "arguments": {}, "_meta": MODERN_META},
    }
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "status",
    }
    connection.request("POST", "/mcp", json.dumps(body), headers)
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == 200, answer
    return answer["result"]["structuredContent"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_out_of_descriptors_the_conductor_serves_its_clients_and_recovers(
    home: Path,
) -> None:
    """A conductor whose limit cannot be raised (soft = hard = 64) and a client that opens
    connections until it has none left: the connection a client already has is served, the
    conductor uses next to no CPU (before: its accept retries multiplied, its CPU time
    doubled every two seconds, and stopping it logged thousands of errors), and once the
    connections go, a new one is served."""
    limit = 64
    with conductor_under(home, limit, limit) as info:
        pid, token = info["pid"], info["token"]
        port = int(info["url"].rsplit(":", 1)[1].split("/", 1)[0])
        kept = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        assert status_call(kept, token, 1)["pid"] == pid
        flood: list[socket.socket] = []
        try:
            for _ in range(limit + 32):  # past the limit: the rest wait in the backlog
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=10))

            async def exhausted() -> bool:
                return len(os.listdir(f"/proc/{pid}/fd")) >= limit and any(
                    "out of descriptors" in line
                    for line in (home / "logs" / "conductor.log").read_text().splitlines()
                )

            await wait_until(exhausted, timeout=30)
            # Six seconds out of descriptors, served all along. Before, the CPU time spent
            # doubled every two seconds: about 1.7 s in these six; now about 0.15 s.
            before = cpu_seconds(pid)
            for n in range(2, 6):
                assert status_call(kept, token, n)["pid"] == pid
                await anyio.sleep(1.5)  # what is measured: the conductor's CPU as time passes
            spent = cpu_seconds(pid) - before
            assert spent < SPIN_SECONDS, spent
        finally:
            for connection in flood:
                connection.close()
        fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        assert status_call(fresh, token, 99)["pid"] == pid
        fresh.close()
        kept.close()
    log = (home / "logs" / "conductor.log").read_text()
    warnings = [line for line in log.splitlines() if "out of descriptors" in line]
    assert len(warnings) == 1, warnings  # one report per 30 s, not one per failed accept
    # Nor an error for each retry still pending when it stopped.
    assert "Exception in callback" not in log and "Invalid file descriptor" not in log, log[-3000:]

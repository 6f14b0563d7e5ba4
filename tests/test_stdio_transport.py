"""The stdio transport of `podium serve --embedded` (server/stdio_guard.py): replies go to a
private copy of stdout written from the event loop, fd 1 points at stderr while serving, and
a host that stops reading holds up only the replies, never the engine."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import termios
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import TEST_STORE
from tests.test_stdio_unreadable import INIT, PODIUM

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.timeout(90),
    pytest.mark.skipif(TEST_STORE == "postgres", reason="reads the SQLite store directly"),
]


def call(request_id: int, tool: str, arguments: dict[str, Any]) -> bytes:
    message = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }
    return json.dumps(message).encode() + b"\n"


class PipeReader:
    """Replies read from our end of the server's stdout pipe, only when asked to."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = b""

    def buffered(self) -> int:
        """Bytes the server wrote that nobody has read yet."""
        size = bytearray(4)
        fcntl.ioctl(self.fd, termios.FIONREAD, size)
        return int.from_bytes(size, "little")

    async def receive(self) -> dict[str, Any]:
        with anyio.fail_after(30):
            while True:
                end = self.pending.find(b"\n")
                if end >= 0:
                    line, self.pending = self.pending[:end], self.pending[end + 1 :]
                    message: dict[str, Any] = json.loads(line)
                    if "id" in message:
                        return message
                    continue
                await anyio.wait_readable(self.fd)
                self.pending += os.read(self.fd, 1 << 20)


def job_status(home: Path, job_id: str) -> str | None:
    db = sqlite3.connect(f"file:{home / 'podium.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT status FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    finally:
        db.close()
    return None if row is None else str(row[0])


async def test_a_host_that_stops_reading_holds_up_replies_not_the_engine(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    env.update(PODIUM_HOME=str(home), PODIUM_KILL_GRACE_SECONDS="1")
    out_read, out_write = os.pipe()
    os.set_blocking(out_read, False)
    stderr = (home.parent / "serve-stderr.log").open("ab")
    proc = await anyio.open_process(
        [PODIUM, "serve", "--embedded"], env=env, stdout=out_write, stderr=stderr
    )
    os.close(out_write)
    replies = PipeReader(out_read)
    assert proc.stdin is not None
    try:
        await proc.stdin.send(json.dumps(INIT).encode() + b"\n")
        assert "result" in await replies.receive()
        await proc.stdin.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        # While serving, fd 1 is the stderr file: a stray print cannot reach the protocol.
        fds = Path(f"/proc/{proc.pid}/fd")
        assert os.readlink(fds / "1") == os.readlink(fds / "2") == str(stderr.name)

        spec = {"name": "behind", "sheets": [{"prompt": "sleep 1"}]}
        await proc.stdin.send(call(2, "submit_job", {"spec": spec}))
        submitted = await replies.receive()
        job_id = submitted["result"]["structuredContent"]["job_id"]
        # A reply far larger than the pipe holds (each sheet of the plan is listed), left
        # unread: the server's writer must wait for the pipe to drain.
        names = [{"name": f"s{n:04d}-" + "x" * 58, "prompt": "true"} for n in range(1500)]
        await proc.stdin.send(call(3, "validate_spec", {"spec": {"name": "big", "sheets": names}}))
        with anyio.fail_after(30):
            while replies.buffered() < 60_000:
                await anyio.sleep(0.02)
        # Meanwhile the engine goes on: the sheet ends and the job's completion is committed.
        with anyio.fail_after(30):
            while job_status(home, job_id) != "completed":
                await anyio.sleep(0.05)
        big = await replies.receive()
        assert big["id"] == 3, big
        assert len(big["result"]["structuredContent"]["sheets"]) == 1500
        await proc.stdin.send(call(4, "status", {}))
        assert (await replies.receive())["result"]["structuredContent"]["pid"] == proc.pid
    finally:
        await proc.stdin.aclose()
        with anyio.move_on_after(15):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(out_read)
        stderr.close()
    assert proc.returncode == 0


async def test_a_host_that_closes_its_end_of_stdout_ends_the_server_cleanly(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    env.update(PODIUM_HOME=str(home), PODIUM_KILL_GRACE_SECONDS="1")
    out_read, out_write = os.pipe()
    os.set_blocking(out_read, False)
    log_path = home.parent / "serve-stderr.log"
    stderr = log_path.open("ab")
    proc = await anyio.open_process(
        [PODIUM, "serve", "--embedded"], env=env, stdout=out_write, stderr=stderr
    )
    os.close(out_write)
    assert proc.stdin is not None
    try:
        await proc.stdin.send(json.dumps(INIT).encode() + b"\n")
        assert "result" in await PipeReader(out_read).receive()
        await proc.stdin.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        os.close(out_read)
        out_read = -1
        # Replies now go nowhere; the server drops them and keeps reading.
        for n in range(3):
            await proc.stdin.send(call(10 + n, "status", {}))
        with anyio.fail_after(30):
            while b"stopped reading replies" not in log_path.read_bytes():
                await anyio.sleep(0.05)
        await proc.stdin.aclose()
        with anyio.fail_after(30):
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if out_read >= 0:
            os.close(out_read)
        stderr.close()
    assert proc.returncode == 0
    assert b"Traceback" not in log_path.read_bytes()


def test_a_stdout_that_stderr_shares_is_never_made_non_blocking() -> None:
    """O_NONBLOCK is a property of the open file: set on a pipe that stderr shares (a host
    that merged the two), logging to stderr would fail with EAGAIN under backpressure."""
    import subprocess
    import sys

    probe = (
        "import os\n"
        "from podium.server.stdio_guard import ClaimedStdout\n"
        "claimed = ClaimedStdout()\n"
        "shared = os.get_blocking(2)\n"
        "claimed.release()\n"
        "os.write(2, b'direct=%d blocking=%d' % (claimed._direct, shared))\n"
    )
    merged = subprocess.run(
        [sys.executable, "-c", probe], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30
    )
    assert merged.stdout.endswith(b"direct=0 blocking=1"), merged.stdout
    apart = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30)
    assert apart.stderr.endswith(b"direct=1 blocking=1"), apart.stderr

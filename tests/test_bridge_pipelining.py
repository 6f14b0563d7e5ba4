"""The stdio bridge and a client that pipelines: `initialize`, `notifications/initialized` and
its first requests written in one go, before the answer to `initialize` is back (what MCP
hosts do). The session id comes back on that answer, so what follows it is held until then
and sent in order; every request gets exactly one answer. Real `podium serve` processes
attached to a real conductor, driven by raw JSON-RPC lines written to stdin in one write."""

from __future__ import annotations

import array
import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from helpers import ended, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

PODIUM = str(Path(sys.executable).with_name("podium"))
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
RequestId = int | str


def initialize(request_id: RequestId, **params: Any) -> dict[str, Any]:
    params = params or {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "pipelining", "version": "0"},
    }
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params}


def request(request_id: RequestId, method: str, **params: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params:
        message["params"] = params
    return message


def tool(request_id: RequestId, name: str, **arguments: Any) -> dict[str, Any]:
    return request(request_id, "tools/call", name=name, arguments=arguments)


def serve_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    env.update(PODIUM_HOME=str(home), PODIUM_KILL_GRACE_SECONDS="1")
    return env


class Serve:
    """A `podium serve` process: raw lines in, every answer it writes recorded (in order)."""

    def __init__(self, proc: Process, stdin: int) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.stdin: int | None = stdin
        self.out = BufferedByteReceiveStream(proc.stdout)
        self.order: list[RequestId | None] = []
        self.answers: dict[RequestId | None, dict[str, Any]] = {}
        self.notifications: list[dict[str, Any]] = []

    async def write(self, *messages: dict[str, Any], close: bool = False) -> None:
        """All of `messages` in one write (one line each), as a pipelining host sends them."""
        data = b"".join(json.dumps(m).encode() + b"\n" for m in messages)
        fd = self.stdin
        assert fd is not None
        view = memoryview(data)
        while view:
            await anyio.wait_writable(fd)
            view = view[os.write(fd, view) :]
        if close:
            self.close_stdin()

    def close_stdin(self) -> None:
        if self.stdin is not None:
            os.close(self.stdin)
            self.stdin = None

    def unread_stdin(self) -> int:
        """Bytes written to the bridge's stdin that it has not read yet."""
        assert self.stdin is not None
        count = array.array("i", [0])
        fcntl.ioctl(self.stdin, termios.FIONREAD, count)
        return count[0]

    async def _next(self) -> bool:
        """Read one line; False at EOF."""
        try:
            line = await self.out.receive_until(b"\n", 64 * 1024 * 1024)
        except (anyio.EndOfStream, anyio.IncompleteRead):
            return False
        message: dict[str, Any] = json.loads(line)
        if "method" in message:
            self.notifications.append(message)
        else:
            request_id = message.get("id")
            assert request_id not in self.answers, f"answered twice: {request_id!r}: {message}"
            self.order.append(request_id)
            self.answers[request_id] = message
        return True

    async def answers_for(self, *ids: RequestId, timeout: float = 45) -> dict[RequestId, Any]:
        with anyio.fail_after(timeout):
            while not all(i in self.answers for i in ids):
                assert await self._next(), (
                    f"stdout closed; answered: {sorted(map(str, self.answers))}"
                )
        return {i: self.answers[i] for i in ids}

    async def notification(self, method: str, timeout: float = 30) -> list[dict[str, Any]]:
        with anyio.fail_after(timeout):
            while not any(n["method"] == method for n in self.notifications):
                assert await self._next(), "stdout closed"
        return [n for n in self.notifications if n["method"] == method]

    async def finish(self, timeout: float = 20) -> None:
        """Close stdin and read to EOF: nothing more may be answered twice, and the bridge
        exits by itself, cleanly."""
        self.close_stdin()
        with anyio.fail_after(timeout):
            while await self._next():
                pass
            await self.proc.wait()
        assert self.proc.returncode == 0

    def before(self, first: RequestId, *later: RequestId) -> bool:
        return all(self.order.index(first) < self.order.index(other) for other in later)


@asynccontextmanager
async def bridge(home: Path, *args: str) -> AsyncIterator[Serve]:
    """`podium serve` (with `args`: `--embedded` gives the other stdio server)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    stderr = (home.parent / "serve-stderr.log").open("ab")
    try:
        proc = await anyio.open_process(
            [PODIUM, "serve", *args], stdin=read_end, env=serve_env(home), stderr=stderr
        )
    finally:
        os.close(read_end)
    serve = Serve(proc, write_end)
    try:
        yield serve
    finally:
        serve.close_stdin()
        await ended(proc)
        stderr.close()


def ok(answer: dict[str, Any]) -> dict[str, Any]:
    assert "result" in answer, answer
    result: dict[str, Any] = answer["result"]
    assert result.get("isError") is not True, answer
    return result


def started_conductor(home: Path) -> tuple[int, int]:
    """`podium start --detach`: the conductor's pid and port."""
    done = subprocess.run(
        [PODIUM, "start", "--detach"], env=serve_env(home), capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    info = json.loads((home / "conductor.json").read_text())
    port = int(info["url"].rsplit(":", 1)[1].split("/", 1)[0])
    return int(info["pid"]), port


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    """The conductor stopped (SIGSTOP): connections reach its backlog, nothing is answered."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def sent_to(serve: Serve, port: int) -> None:
    """Wait until the bridge has read all it was given (while stdin is open) and has a
    connection open to the conductor (its `initialize` POST on the way)."""

    async def connected() -> bool:
        if serve.stdin is not None and serve.unread_stdin():
            return False
        connections = psutil.Process(serve.proc.pid).net_connections(kind="tcp")
        return any(c.raddr and c.raddr.port == port for c in connections)

    await wait_until(connected, timeout=30)


async def pipelined(
    serve: Serve, conductor: tuple[int, int], *messages: dict[str, Any], close: bool = False
) -> None:
    """Write `messages` in one write while the conductor is frozen, so that the bridge has
    read them all before the answer to any `initialize` among them can be back."""
    pid, port = conductor
    with frozen(pid):
        await serve.write(*messages, close=close)
        await sent_to(serve, port)


JOBS = ["submit_job", "status", "list_jobs"]


# ----- the handshake and first requests in one write -----------------------------------------


async def test_a_pipelined_handshake_is_answered(home: Path) -> None:
    """The bridge starts the conductor itself here (a fresh home), as on a host's first use.
    The other tests freeze a running conductor while they write, so the answer to
    `initialize` is surely later than the rest; pings come right behind it, the one request
    MCP lets a client send before that answer."""
    async with bridge(home) as serve:
        await serve.write(
            initialize(1),
            request("ping", "ping"),
            INITIALIZED,
            request(2, "tools/list"),
            tool(3, "list_jobs"),
            request(4, "resources/templates/list"),
        )
        answers = await serve.answers_for(1, 2, 3, "ping", 4)
        assert serve.order[0] == 1, serve.order
        assert ok(answers[1])["serverInfo"]["name"], answers[1]
        names = {t["name"] for t in ok(answers[2])["tools"]}
        assert set(JOBS) <= names, names
        assert ok(answers[3])["structuredContent"]["jobs"] == [], answers[3]
        assert ok(answers["ping"]) == {}
        assert ok(answers[4])["resourceTemplates"], answers[4]
        await serve.finish()
        assert set(serve.answers) == {1, 2, 3, "ping", 4}


async def test_what_follows_a_slow_initialize_is_held_and_sent_in_order(home: Path) -> None:
    """The conductor is frozen while the bridge reads the pipelined messages: the answer to
    `initialize` is surely not back before the rest is read. After it, the held messages go
    out in order; `notifications/initialized` among them opens the session's event stream,
    which delivers the update of the resource subscribed to in the same write."""
    pid, port = started_conductor(home)
    uri = "podium://jobs"
    spec = {"name": "held", "sheets": [{"prompt": "echo held"}]}
    async with bridge(home) as serve:
        with frozen(pid):
            await serve.write(
                initialize(1),
                INITIALIZED,
                request(2, "resources/subscribe", uri=uri),
                request(3, "tools/list"),
                tool(4, "status"),
                tool(5, "list_jobs"),
            )
            await sent_to(serve, port)
        answers = await serve.answers_for(1, 2, 3, 4, 5)
        assert serve.order[0] == 1, serve.order
        for answer in answers.values():
            ok(answer)
        assert ok(answers[4])["structuredContent"]["pid"] == pid, answers[4]
        await serve.write(tool(6, "submit_job", spec=spec, job_id="held", start=False))
        assert ok((await serve.answers_for(6))[6])["structuredContent"]["status"] == "paused"
        updates = await serve.notification("notifications/resources/updated")
        assert any(u["params"]["uri"] == uri for u in updates), updates
        await serve.finish()


# ----- stdin closing while messages are held -------------------------------------------------


async def test_stdin_closed_right_after_a_pipelined_handshake(home: Path) -> None:
    """A script pipes its handshake and requests in and closes stdin at once: what the
    bridge held is still sent, and each request is answered within the drain, or gets the
    stdin-closed error; never a session error."""
    conductor = started_conductor(home)
    async with bridge(home) as serve:
        await pipelined(
            serve,
            conductor,
            initialize(1),
            request(2, "ping"),
            INITIALIZED,
            request(3, "tools/list"),
            tool(4, "list_jobs"),
            close=True,
        )
        answers = await serve.answers_for(1, 2, 3, 4)
        for request_id, answer in answers.items():
            if "error" in answer:
                assert "stdin closed" in answer["error"]["message"], (request_id, answer)
            else:
                ok(answer)
        assert "result" in answers[1], answers[1]
        await serve.finish()
        assert set(serve.answers) == {1, 2, 3, 4}


async def test_stdin_closed_while_the_initialize_is_unanswered(home: Path) -> None:
    """The conductor never answers within the drain: each request, the held ones too, gets
    the stdin-closed error, once, and the bridge exits."""
    pid, port = started_conductor(home)
    async with bridge(home) as serve:
        with frozen(pid):
            await serve.write(
                initialize(1), INITIALIZED, request(2, "tools/list"), tool("three", "list_jobs")
            )
            await sent_to(serve, port)
            serve.close_stdin()
            answers = await serve.answers_for(1, 2, "three")
            for answer in answers.values():
                assert answer["error"]["code"] == -32000, answer
                assert "stdin closed" in answer["error"]["message"], answer
            await serve.finish()
    assert set(serve.answers) == {1, 2, "three"}


# ----- a failed, a second, and a missing initialize ------------------------------------------


async def test_a_failed_initialize_refuses_what_followed_it(home: Path) -> None:
    """An `initialize` whose params are invalid is answered at the stdio transport (as by
    `--embedded`: tests/test_stdio_parity.py) and leaves no session: each request after it
    gets an error naming it, but a ping (allowed before any session); a second
    `initialize` among them (the client trying again) is sent, and what follows it is
    served."""
    conductor = started_conductor(home)
    async with bridge(home) as serve:
        await pipelined(
            serve,
            conductor,
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
            INITIALIZED,
            request(2, "tools/list"),
            request(3, "ping"),
            initialize(4),
            INITIALIZED,
            request(5, "tools/list"),
            tool(6, "list_jobs"),
        )
        answers = await serve.answers_for(1, 2, 3, 4, 5, 6)
        assert answers[1]["error"]["code"] == -32602, answers[1]
        assert "params.clientInfo: Field required" in answers[1]["error"]["message"]
        error = answers[2]["error"]
        assert error["code"] == -32600, answers[2]
        assert "initialize (id 1)" in error["message"], answers[2]
        assert answers[1]["error"]["message"] in error["message"], answers[2]
        assert ok(answers[3]) == {}
        ok(answers[4])
        assert {t["name"] for t in ok(answers[5])["tools"]} >= set(JOBS)
        ok(answers[6])
        assert serve.before(4, 5, 6), serve.order
        await serve.finish()


async def test_an_initialize_the_conductor_fails_refuses_what_was_held(home: Path) -> None:
    """An `initialize` with valid params that the conductor fails (here: it refuses the
    token in conductor.json): what was held behind it has no session to go to, so each
    request gets an error naming that initialize, the ping too; the notifications are
    dropped; the next `initialize` is sent (and fails the same way)."""
    pid, port = started_conductor(home)
    info = json.loads((home / "conductor.json").read_text())
    (home / "conductor.json").write_text(json.dumps({**info, "token": "not-the-token"}))
    async with bridge(home) as serve:
        await pipelined(
            serve,
            (pid, port),
            initialize(1),
            INITIALIZED,
            request(2, "tools/list"),
            request(3, "ping"),
            initialize(4),
            INITIALIZED,
            tool(5, "list_jobs"),
        )
        answers = await serve.answers_for(1, 2, 3, 4, 5)
        for failed, refused in ((1, (2, 3)), (4, (5,))):
            assert "refused the bearer token" in answers[failed]["error"]["message"]
            for request_id in refused:
                error = answers[request_id]["error"]
                assert error["code"] == -32600, answers[request_id]
                assert f"initialize (id {failed})" in error["message"], answers[request_id]
                assert answers[failed]["error"]["message"] in error["message"]
        assert serve.before(1, 2, 3, 4) and serve.before(4, 5), serve.order
        await serve.finish()
    (home / "conductor.json").write_text(json.dumps(info))


async def test_a_second_initialize_holds_what_follows_it(home: Path) -> None:
    """A ping right behind each `initialize` (the one request a client may send before the
    answer, so the one most likely to race it): each waits for the answer to the
    initialize before it, in the first write and again on the established session."""
    conductor = started_conductor(home)
    async with bridge(home) as serve:
        await pipelined(
            serve,
            conductor,
            initialize(1),
            request(2, "ping"),
            INITIALIZED,
            initialize(3),
            request(4, "ping"),
            INITIALIZED,
            request(5, "tools/list"),
            tool(6, "status"),
        )
        answers = await serve.answers_for(1, 2, 3, 4, 5, 6)
        for answer in answers.values():
            ok(answer)
        assert serve.before(1, 2, 3) and serve.before(3, 4, 5, 6), serve.order
        # Again on the established session, both in one write.
        await serve.write(initialize(7), tool(8, "list_jobs"))
        answers = await serve.answers_for(7, 8)
        ok(answers[7])
        assert ok(answers[8])["structuredContent"]["jobs"] == [], answers[8]
        assert serve.before(7, 8), serve.order
        await serve.finish()


async def test_a_request_before_any_initialize_is_answered(home: Path) -> None:
    """No session yet and none on its way: the request is refused at once (it is not held
    for an initialize that may never come; tests/test_stdio_session.py checks the answer);
    the handshake written after it in the same write is served."""
    conductor = started_conductor(home)
    async with bridge(home) as serve:
        await pipelined(
            serve,
            conductor,
            request(0, "tools/list"),
            initialize(1),
            request(2, "ping"),
            INITIALIZED,
            request(3, "tools/list"),
        )
        answers = await serve.answers_for(0, 1, 2, 3)
        assert answers[0]["error"]["message"], answers[0]
        ok(answers[1])
        assert ok(answers[2]) == {}
        assert {t["name"] for t in ok(answers[3])["tools"]} >= set(JOBS)
        await serve.finish()


# ----- many requests in one write ------------------------------------------------------------


async def test_a_burst_of_requests_in_one_write(home: Path) -> None:
    """Hundreds of requests behind the handshake in one write, integer and string ids; then
    as many again on the established session. Each is answered once, by the conductor."""
    pings = [request(f"p{n}", "ping") for n in range(50)]
    first: list[dict[str, Any]] = []
    for n in range(2, 152):
        first.append(request(n, "ping") if n % 2 else tool(f"s{n}", "status"))
    conductor = started_conductor(home)
    async with bridge(home) as serve:
        await pipelined(serve, conductor, initialize(1), *pings, INITIALIZED, *first)
        ids = [m["id"] for m in [*pings, *first]]
        answers = await serve.answers_for(1, *ids, timeout=80)
        assert serve.order[0] == 1, serve.order[:5]
        for request_id in ids:
            result = ok(answers[request_id])
            if str(request_id).startswith("s"):
                assert result["structuredContent"]["pid"] > 0, answers[request_id]
            else:
                assert result == {}, answers[request_id]
        again = [request(f"again-{n}", "ping") for n in range(150)]
        await serve.write(*again)
        for answer in (await serve.answers_for(*[m["id"] for m in again])).values():
            assert ok(answer) == {}
        await serve.finish()
        assert Counter(serve.order) == Counter([1, *ids, *[m["id"] for m in again]])

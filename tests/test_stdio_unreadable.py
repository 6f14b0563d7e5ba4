"""Issue 10, item 8: over stdio, a request the JSON parser cannot take (nested past its depth
limit, broken, too long) or that is JSON but no JSON-RPC request gets a JSON-RPC error, with
its id when one can be read, and the server goes on answering. Real `podium serve`
processes, the bridge and `--embedded`, driven by raw lines on their stdin."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from helpers import ended

from podium.server.stdio_guard import Unreadable, read_line, top_level_id
from podium.server.stdio_input import MAX_LINE_BYTES

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

PODIUM = str(Path(sys.executable).with_name("podium"))
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw-stdio", "version": "0"},
    },
}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


class Raw:
    def __init__(self, proc: Process) -> None:
        self.proc = proc
        assert proc.stdout is not None and proc.stdin is not None
        self.out = BufferedByteReceiveStream(proc.stdout)

    async def send(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode()
        assert self.proc.stdin is not None
        await self.proc.stdin.send(data + b"\n")

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.send(json.dumps(message))

    async def receive(self, timeout: float = 10) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            while True:
                line = await self.out.receive_until(b"\n", 16 * 1024 * 1024)
                message: dict[str, Any] = json.loads(line)
                if "id" in message:  # notifications (log messages, list changes) pass by
                    return message


@asynccontextmanager
async def raw_serve(home: Path, *args: str, handshake: bool = True) -> AsyncIterator[Raw]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    env.update(PODIUM_HOME=str(home), PODIUM_KILL_GRACE_SECONDS="1")
    stderr = (home.parent / "serve-stderr.log").open("ab")
    proc = await anyio.open_process([PODIUM, "serve", *args], env=env, stderr=stderr)
    raw = Raw(proc)
    try:
        if handshake:
            await raw.send_json(INIT)
            init = await raw.receive(30)
            assert init["id"] == 1 and "result" in init, init
            await raw.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
        yield raw
    finally:
        assert proc.stdin is not None
        await proc.stdin.aclose()
        await ended(proc)
        stderr.close()


def status_call(request_id: int | str, arguments: Any) -> str:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": "status", "arguments": arguments},
        }
    )


@pytest.mark.parametrize("mode", ["bridge", "embedded"])
async def test_unreadable_stdio_requests_are_answered(home: Path, mode: str) -> None:
    args = ["--embedded"] if mode == "embedded" else []
    async with raw_serve(home, *args) as raw:
        deep = status_call(2, {"x": "PLACEHOLDER"})
        await raw.send(deep.replace('"PLACEHOLDER"', nested(250)))
        answer = await raw.receive()
        assert answer["id"] == 2 and answer["error"]["code"] == -32700, answer
        assert "deep" in answer["error"]["message"], answer
        # The id after the nesting, a string id, 5,000 levels.
        tail_id = (
            '{"jsonrpc":"2.0","method":"tools/call","params":{"name":"status","arguments":'
            '{"x":' + nested(5000) + '}},"id":"after-it"}'
        )
        await raw.send(tail_id)
        answer = await raw.receive()
        assert answer["id"] == "after-it" and answer["error"]["code"] == -32700, answer
        # Cut short: not JSON, but its id can be read; then no id to give.
        await raw.send('{"jsonrpc": "2.0", "id": 3, "method": "ping"')
        answer = await raw.receive()
        assert answer["id"] == 3 and answer["error"]["code"] == -32700, answer
        await raw.send("not json at all")
        answer = await raw.receive()
        assert answer["id"] is None and answer["error"]["code"] == -32700, answer
        # JSON, but not a JSON-RPC request.
        await raw.send_json({"jsonrpc": "1.0", "id": 4, "method": "ping"})
        answer = await raw.receive()
        assert answer["id"] == 4 and answer["error"]["code"] == -32600, answer
        # Nested just under the limit: a real call, answered by the tool.
        await raw.send(status_call(5, {"x": "PLACEHOLDER"}).replace('"PLACEHOLDER"', nested(150)))
        answer = await raw.receive()
        assert answer["id"] == 5 and answer["result"]["isError"] is True, answer
        assert "x" in json.dumps(answer["result"]["content"]), answer
        if mode == "embedded":  # the reader is the same in both: one process start spared
            # A line past the cap: refused, and not kept (the next line reads as usual).
            head = '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"x":"'
            await raw.send(head.encode() + b"a" * (MAX_LINE_BYTES + 1024) + b'"}}')
            answer = await raw.receive()
            assert answer["id"] == 7 and answer["error"]["code"] == -32700, answer
            assert "longer than" in answer["error"]["message"]
        # And the server still serves.
        await raw.send(status_call(6, {}))
        answer = await raw.receive()
        assert answer["id"] == 6 and answer["result"]["structuredContent"]["pid"] > 0, answer


@pytest.mark.parametrize("mode", ["bridge", "embedded"])
async def test_each_request_of_a_json_rpc_batch_is_refused(home: Path, mode: str) -> None:
    """A batch (an array on one line; MCP has none since 2025-06-18) was dropped with a log
    line, and the client waited on each request in it forever."""
    args = ["--embedded"] if mode == "embedded" else []
    ping = {"jsonrpc": "2.0", "method": "ping"}
    note = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}
    async with raw_serve(home, *args) as raw:
        await raw.send(json.dumps([json.loads(status_call(2, {})), {**ping, "id": "b"}, note]))
        answers = {}
        for _ in range(2):
            answer = await raw.receive()
            answers[answer["id"]] = answer
        assert set(answers) == {2, "b"}, answers
        for answer in answers.values():
            assert answer["error"]["code"] == -32600, answer
            assert "batches are not supported" in answer["error"]["message"], answer
        await raw.send("[]")
        answer = await raw.receive()
        assert answer["id"] is None and answer["error"]["code"] == -32600, answer
        # Nothing waits on a batch of notifications: no answer; the next one is the ping's.
        await raw.send(json.dumps([note, note]))
        await raw.send_json({**ping, "id": 3})
        answer = await raw.receive()
        assert answer == {"jsonrpc": "2.0", "id": 3, "result": {}}, answer


@pytest.mark.parametrize("mode", ["bridge", "embedded"])
@pytest.mark.parametrize("stdin", ["file", "devnull"])
def test_serve_reads_stdin_from_a_file_or_dev_null(home: Path, mode: str, stdin: str) -> None:
    """`podium serve < requests.jsonl` (or `< /dev/null`, as a supervisor may start it):
    stdin that epoll cannot watch is read all the same; no traceback, a clean exit."""
    import subprocess

    args = ["--embedded"] if mode == "embedded" else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    env.update(PODIUM_HOME=str(home), PODIUM_KILL_GRACE_SECONDS="1")
    source = home.parent / "requests.jsonl"
    source.write_text(json.dumps(INIT) + "\n")
    with (source if stdin == "file" else Path(os.devnull)).open("rb") as feed:
        done = subprocess.run(
            [PODIUM, "serve", *args], stdin=feed, env=env, capture_output=True, timeout=40
        )
    assert done.returncode == 0, done.stderr.decode()
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    if stdin == "file":
        [first, *_] = done.stdout.splitlines()
        assert json.loads(first)["id"] == 1 and "result" in json.loads(first), done.stdout


async def test_the_bridge_answers_every_request_when_stdin_closes(home: Path) -> None:
    """A client that closes stdin right after its requests (a script piping them in) gets
    each answer that arrives within the drain, and an error, not silence, for one that
    does not (a long-poll)."""
    async with raw_serve(home) as raw:
        await raw.send(status_call("poll", {"job_id": None, "wait_seconds": 30}))
        listing = {"name": "list_jobs", "arguments": {}}
        await raw.send_json(
            {"jsonrpc": "2.0", "id": "list", "method": "tools/call", "params": listing}
        )
        assert raw.proc.stdin is not None
        await raw.proc.stdin.aclose()
        answers = {}
        with anyio.fail_after(15):
            while len(answers) < 2:
                answer = await raw.receive()
                answers[answer["id"]] = answer
        assert "jobs" in answers["list"]["result"]["structuredContent"], answers
        assert answers["poll"]["error"]["code"] == -32000, answers
        assert "stdin closed" in answers["poll"]["error"]["message"], answers
        with anyio.fail_after(10):
            await raw.proc.wait()
        assert raw.proc.returncode == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"id": 3, "method": "x"}', 3),
        ('{"method": "x", "params": {"id": 9, "y": [' + nested(3000) + ']}, "id": "s"}', "s"),
        ('{"method": "x", "params": {"id": 9}}', None),
        ('{"method": "id", "params": ["id", {"id": 1}]}', None),
        ('{"a": "quote \\" id", "id": -12}', -12),
        ('{"id": 1.5}', None),
        ('{"id": true}', None),
        ('[{"id": 1}]', None),
        ('{"a": "unterminated', None),
        ('{"a": "\\"id\\":7", "id" : "x\\"y"}', 'x"y'),
    ],
)
def test_the_id_is_found_at_the_top_level_only(text: str, expected: object) -> None:
    assert top_level_id(text) == expected


@pytest.mark.parametrize(
    ("line", "ids"),
    [
        ('[{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"id": "x", "method": "y"}]', [1, "x"]),
        ('[{"jsonrpc": "2.0", "id": true, "method": "ping"}]', [None]),
        ("[]", [None]),
        ("[1, 2]", [None]),
        ('[{"jsonrpc": "2.0", "method": "notifications/initialized"}]', None),
        ('[{"jsonrpc": "2.0", "id": 4, "result": {}}]', None),
    ],
)
def test_a_batch_line_is_answered_per_request(line: str, ids: list[object] | None) -> None:
    item = read_line(line)
    if ids is None:
        assert isinstance(item, Exception), item
    else:
        assert isinstance(item, Unreadable), item
        assert [r.id for r in item.replies] == ids
        assert all(r.error.code == -32600 for r in item.replies)

"""Stdio lines that cannot be JSON-RPC messages get a JSON-RPC error, as over HTTP.

The SDK's stdio transport turns a line it cannot parse into an exception on the read stream,
and the server only logs it: the client waits forever for an answer to, say, a request nested
past the JSON parser's depth limit (over HTTP the same body gets a 400 with a parse error).
This transport parses each line once, hands the server what parses and answers what fails:
`-32700` when the text is not JSON (too deep, truncated, too long), `-32600` when it is JSON
but not a JSON-RPC message. The reply carries the request's id when one can be found at the
top level of the text, found by a scan that does not recurse (the text is exactly what the
parser could not take); else `null`, as JSON-RPC says.

A JSON-RPC batch (an array on one line) is such a line too: MCP has had no batches since
2025-06-18 and the SDK's parser takes none. Each request in it gets its own `-32600`, so a
client that batched is not left waiting on any of them.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pydantic_core
import structlog
from mcp.shared.message import SessionMessage
from mcp_types import (
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCMessage,
    RequestId,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError

from podium.server.stdio_input import MAX_LINE_BYTES, CancellableStdin, OverlongLine
from podium.server.stdio_session import Drop, SessionGate

log = structlog.get_logger("podium.stdio")

_STRUCTURE = re.compile(r'["{}\[\]]')
# The unrolled form of a JSON string body: linear, no backtracking.
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_ID_VALUE = re.compile(r'\s*:\s*(-?[0-9]+(?![0-9.eE])|"[^"\\]*(?:\\.[^"\\]*)*")', re.DOTALL)


def top_level_id(text: str) -> RequestId | None:
    """The `id` member of the top-level object in `text`, however deep or broken the rest."""
    if not text.lstrip().startswith("{"):
        return None
    depth = 0
    pos = 0
    while (found := _STRUCTURE.search(text, pos)) is not None:
        char = found.group()
        if char != '"':
            depth += 1 if char in "{[" else -1
            pos = found.end()
            continue
        end = _STRING_REST.match(text, found.end())
        if end is None:
            return None  # an unterminated string: nothing after it can be read
        pos = end.end()
        if depth == 1 and text[found.start() : pos] == '"id"':
            value = _ID_VALUE.match(text, pos)
            if value is not None:  # a key: a string value is never followed by ':'
                parsed = json.loads(value.group(1))
                if isinstance(parsed, int | str):
                    return parsed
    return None


def _is_request_like(value: Any) -> bool:
    return isinstance(value, dict) and "method" in value


BATCH_REFUSED = (
    "Invalid request: JSON-RPC batches are not supported (MCP has none since 2025-06-18); "
    "send each message on a line of its own"
)


@dataclass(frozen=True)
class Unreadable:
    """A line answered here: `replies` go back to the client, the server never sees it."""

    replies: tuple[JSONRPCError, ...]


def read_line(line: str) -> JSONRPCMessage | Unreadable | Exception:
    """What one stdin line is, parsed once: a message for the server; an `Unreadable` to
    answer; or, for a line that needs no answer (a blank line, a malformed response or
    notification of the client's), the parse error the server only logs."""
    if isinstance(line, OverlongLine):
        message = f"Parse error: the message is longer than {MAX_LINE_BYTES // 1024} KiB"
        return _error(top_level_id(line), PARSE_ERROR, message)
    try:
        return jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValidationError as exc:
        failure = exc
    if not line.strip():
        return failure
    try:
        parsed = pydantic_core.from_json(line)
    except ValueError as exc:
        detail = str(exc)
        if "recursion limit" in detail:
            detail += " (the message nests too deeply)"
        return _error(top_level_id(line), PARSE_ERROR, f"Parse error: {detail}")
    if isinstance(parsed, list):
        return _batch(parsed, failure)
    if not _is_request_like(parsed) or "id" not in parsed:
        return failure
    return _error(
        _usable_id(parsed["id"]), INVALID_REQUEST, "Invalid request: not a JSON-RPC 2.0 request"
    )


def _batch(items: list[Any], failure: Exception) -> Unreadable | Exception:
    """Each request of a batch refused under its own id. A batch of notifications and
    responses only has no one waiting on it; anything else (`[]`, `[1, 2]`) gets one
    `null`-id error, as JSON-RPC answers a batch it cannot read."""
    ids = [_usable_id(i["id"]) for i in items if _is_request_like(i) and "id" in i]
    if (
        not ids
        and items
        and all(isinstance(i, dict) and ("method" in i or "id" in i) for i in items)
    ):
        return failure
    replies = [_reply(request_id, INVALID_REQUEST, BATCH_REFUSED) for request_id in ids or [None]]
    return Unreadable(tuple(replies))


def _usable_id(raw: Any) -> RequestId | None:
    return raw if isinstance(raw, int | str) and not isinstance(raw, bool) else None


def _reply(request_id: RequestId | None, code: int, message: str) -> JSONRPCError:
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=message))


def _error(request_id: RequestId | None, code: int, message: str) -> Unreadable:
    return Unreadable((_reply(request_id, code, message),))


def _same_file(info: os.stat_result, fd: int) -> bool:
    try:
        other = os.fstat(fd)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == (other.st_dev, other.st_ino)


class ClaimedStdout:
    """The process's stdout as the protocol's own: fd 1 is pointed at stderr while serving,
    so a stray print (or a child that inherits it) cannot corrupt the stream, and replies
    are written to a private duplicate of it straight from the event loop. Where that is a
    pipe or a socket (what an MCP host gives) it is made non-blocking, so a host that stops
    reading holds up this writer only, never the loop; anything else (a terminal, a file,
    whose open file may be shared with other processes) is written in a worker thread."""

    def __init__(self) -> None:
        self._fd = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
        out = os.fstat(self._fd)
        # O_NONBLOCK belongs to the open file, not the descriptor: never set it on a stream
        # stderr shares (a host that merged them), where logging would then hit EAGAIN.
        self._direct = (stat.S_ISFIFO(out.st_mode) or stat.S_ISSOCK(out.st_mode)) and not (
            _same_file(out, 2)
        )
        self._was_blocking = os.get_blocking(self._fd)
        if self._direct:
            os.set_blocking(self._fd, False)
        try:
            diversion = os.dup(2)
        except OSError:  # no stderr at all: strays go nowhere rather than onto the wire
            diversion = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(diversion, 1)
        finally:
            os.close(diversion)

    async def write(self, data: bytes) -> None:
        if not self._direct:
            await anyio.to_thread.run_sync(self._write_blocking, data)
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except BlockingIOError:
                await anyio.wait_writable(self._fd)

    def _write_blocking(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def release(self) -> None:
        """fd 1 back on the wire, as it was."""
        if self._direct:
            os.set_blocking(self._fd, self._was_blocking)
        os.dup2(self._fd, 1)
        os.close(self._fd)


@asynccontextmanager
async def guarded_stdio_server() -> AsyncIterator[tuple[Any, Any]]:
    """The stdio transport: the cancellable, capped stdin reader, each line parsed once
    (unreadable ones answered here, and what no session can take: `SessionGate`),
    and replies written by `ClaimedStdout`. The SDK's
    `stdio_server` parses every line after this guard had to, and writes and flushes each
    reply through two worker-thread round trips."""
    stdout = ClaimedStdout()
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
    replies = write_stream.clone()
    gate = SessionGate()

    async def stdin_reader() -> None:
        async with read_writer, replies:
            async for line in CancellableStdin():
                item = read_line(line)
                if isinstance(item, Unreadable):
                    for reply in item.replies:
                        code, request_id = reply.error.code, reply.id
                        log.warning("answered an unreadable line", code=code, id=request_id)
                        await replies.send(SessionMessage(reply))
                elif isinstance(item, Exception):
                    await read_writer.send(item)
                elif isinstance(verdict := gate.answer(item), Drop):
                    log.info("dropped", why=verdict.why, message=repr(item))
                elif verdict is not None:
                    await replies.send(SessionMessage(verdict))
                else:
                    await read_writer.send(SessionMessage(item))

    async def stdout_writer() -> None:
        gone = False
        async with write_reader:
            async for message in write_reader:
                if gone:
                    continue  # still taken, so that no sender waits on a reader that left
                text = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                try:
                    await stdout.write(text.encode() + b"\n")
                except BrokenPipeError:
                    # The host closed its end: nothing more can reach it, and its stdin
                    # closing next ends the server as usual.
                    log.warning("the client stopped reading replies; dropping them")
                    gone = True

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stdin_reader)
            tg.start_soon(stdout_writer)
            yield read_stream, write_stream
    finally:
        stdout.release()

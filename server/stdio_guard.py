"""Stdio lines that cannot be JSON-RPC messages get a JSON-RPC error, as over HTTP.

The SDK's stdio transport turns a line it cannot parse into an exception on the read stream,
and the server only logs it: the client waits forever for an answer to, say, a request nested
past the JSON parser's depth limit (over HTTP the same body gets a 400 with a parse error).
This reader checks each line before the SDK sees it and answers one that fails itself:
`-32700` when the text is not JSON (too deep, truncated, too long), `-32600` when it is JSON
but not a JSON-RPC message. The reply carries the request's id when one can be found at the
top level of the text, found by a scan that does not recurse (the text is exactly what the
parser could not take); else `null`, as JSON-RPC says.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
import pydantic_core
import structlog
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import (
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    RequestId,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError

from podium.server.stdio_input import MAX_LINE_BYTES, CancellableStdin, OverlongLine

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


def reply_for(line: str) -> JSONRPCError | None:
    """The error to answer `line` with, or None to pass it on: the SDK can take it, or it
    needs no answer (a blank line, a malformed response or notification of the client's,
    which the SDK drops)."""
    if isinstance(line, OverlongLine):
        message = f"Parse error: the message is longer than {MAX_LINE_BYTES // 1024} KiB"
        return _error(top_level_id(line), PARSE_ERROR, message)
    if not line.strip():
        return None
    try:
        jsonrpc_message_adapter.validate_json(line, by_name=False)
        return None
    except ValidationError:
        pass
    try:
        parsed = pydantic_core.from_json(line)
    except ValueError as exc:
        detail = str(exc)
        if "recursion limit" in detail:
            detail += " (the message nests too deeply)"
        return _error(top_level_id(line), PARSE_ERROR, f"Parse error: {detail}")
    if not _is_request_like(parsed) or "id" not in parsed:
        return None
    raw_id = parsed["id"]
    request_id = raw_id if isinstance(raw_id, int | str) and not isinstance(raw_id, bool) else None
    return _error(request_id, INVALID_REQUEST, "Invalid request: not a JSON-RPC 2.0 request")


def _error(request_id: RequestId | None, code: int, message: str) -> JSONRPCError:
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=message))


class GuardedLines:
    """Iterates `source` for `stdio_server`, answering the lines it must not see."""

    def __init__(self, source: AsyncIterable[str]) -> None:
        self._source = source
        self._write: Any = None
        self._attached = anyio.Event()

    def attach(self, write: Any) -> None:
        self._write = write
        self._attached.set()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        async for line in self._source:
            reply = reply_for(line)
            if reply is not None:
                log.warning("answered an unreadable line", code=reply.error.code, id=reply.id)
                await self._attached.wait()
                await self._write.send(SessionMessage(reply))
            else:
                yield line

    def as_async_file(self) -> anyio.AsyncFile[str]:
        return cast("anyio.AsyncFile[str]", self)


@asynccontextmanager
async def guarded_stdio_server() -> AsyncIterator[tuple[Any, Any]]:
    """`stdio_server` over the cancellable stdin, with unreadable lines answered."""
    lines = GuardedLines(CancellableStdin())
    async with stdio_server(stdin=lines.as_async_file()) as (read, write):
        lines.attach(write)
        yield read, write

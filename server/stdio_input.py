"""A stdin line reader that can be cancelled.

The SDK's default stdio reader blocks in a worker thread that no cancel can interrupt, so a
server that must stop on a signal (or a bridge that must stop when its conductor cannot be
reached) would hang until the host writes a line or closes stdin. This one waits for
readability on the event loop instead (POSIX).

Lines are capped: a host (or an attacker on the pipe) that never sends a newline cannot grow
the buffer without bound; what passes the cap is dropped up to the next newline and reported
as one `OverlongLine` holding the line's head (enough to find its request id).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel

READ_CHUNK = 1 << 16
# The same bound as an HTTP request body (server/serve.py MAX_REQUEST_BODY_BYTES).
MAX_LINE_BYTES = 4 * 1024 * 1024
OVERLONG_HEAD_BYTES = 64 * 1024


class OverlongLine(str):
    """The head of a line longer than the cap; the rest was discarded unread."""


class CancellableStdin:
    def __init__(self, fd: int = 0, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._fd = fd
        self._max = max_line_bytes

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        pending = b""
        discarding = False  # inside an overlong line, already reported
        pollable = True
        while True:
            if pollable:
                try:
                    await anyio.wait_readable(self._fd)
                except PermissionError:
                    # epoll refuses a regular file or /dev/null (`podium serve < requests`);
                    # reads of those never block, so they go on without waiting.
                    pollable = False
            if not pollable:
                await anyio.lowlevel.checkpoint()
            try:
                chunk = os.read(self._fd, READ_CHUNK)
            except BlockingIOError:
                continue
            if not chunk:
                if pending.strip() and not discarding:
                    yield pending.decode("utf-8", "replace")
                return
            pending += chunk
            while True:
                end = pending.find(b"\n")
                if discarding:
                    if end < 0:
                        pending = b""
                        break
                    pending, discarding = pending[end + 1 :], False
                    continue
                if end < 0:
                    if len(pending) > self._max:
                        head = pending[:OVERLONG_HEAD_BYTES].decode("utf-8", "replace")
                        pending, discarding = b"", True
                        yield OverlongLine(head)
                    break
                line, pending = pending[: end + 1], pending[end + 1 :]
                if end + 1 > self._max:
                    yield OverlongLine(line[:OVERLONG_HEAD_BYTES].decode("utf-8", "replace"))
                else:
                    yield line.decode("utf-8", "replace")

"""A stdin line reader that can be cancelled.

The SDK's default stdio reader blocks in a worker thread that no cancel can interrupt, so a
server that must stop on a signal (or a bridge that must stop when its conductor cannot be
reached) would hang until the host writes a line or closes stdin. This one waits for
readability on the event loop instead (POSIX).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import cast

import anyio

READ_CHUNK = 1 << 16


class CancellableStdin:
    def __init__(self, fd: int = 0) -> None:
        self._fd = fd

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        pending = b""
        while True:
            await anyio.wait_readable(self._fd)
            try:
                chunk = os.read(self._fd, READ_CHUNK)
            except BlockingIOError:
                continue
            if not chunk:
                if pending.strip():
                    yield pending.decode("utf-8", "replace")
                return
            pending += chunk
            while (end := pending.find(b"\n")) >= 0:
                line, pending = pending[: end + 1], pending[end + 1 :]
                yield line.decode("utf-8", "replace")

    def as_async_file(self) -> anyio.AsyncFile[str]:
        """`stdio_server(stdin=...)` only iterates its stdin; it is typed as an AsyncFile."""
        return cast("anyio.AsyncFile[str]", self)

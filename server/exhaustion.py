"""The conductor out of descriptors: what happens when `accept()` fails with EMFILE.

asyncio's answer is the right one in principle: it stops watching the listening socket and
tries again a second later, connections already accepted are served as before, and new ones
wait in the kernel's backlog until descriptors are free again. Two things go wrong with it
as shipped (Python 3.11; CPython gh-151615):
- after a failed accept it goes on trying the rest of its batch (`backlog`, 2,048 for
  uvicorn) and schedules a retry for each failure. The retries all re-arm the socket, each
  armed socket fails its batch again, and the retries multiply: measured, the conductor's
  CPU time doubled every two seconds of the exhaustion, to a core;
- each failure is logged as an error with a traceback, and each retry still pending when
  the server closes logs another ("Invalid file descriptor: -1"): thousands of lines.
So, on the conductor's event loop: one retry per second re-arms the socket (the others,
scheduled in the same batch, are dropped), none re-arms a closed one; and the exhaustion is
logged once per `REPORT_SECONDS`, with the limit and how many accepts failed since the last
report.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from podium.core.runner.descriptors import DescriptorLimit

log = structlog.get_logger("podium.serve")

# asyncio's message for an accept() that failed for want of a resource (EMFILE, ENFILE,
# ENOBUFS, ENOMEM).
ACCEPT_FAILED = "socket.accept() out of system resource"
REPORT_SECONDS = 30.0
# What a selector loop calls to (re-)arm a listening socket, on itself, for each retry.
START_SERVING = "_start_serving"
# asyncio waits this long before trying a listening socket again (constants.ACCEPT_RETRY_DELAY);
# retries of one socket closer together than half of it are the same retry.
RETRY_SECONDS = 1.0


def open_descriptors() -> int | None:
    """How many descriptors this process has open; None when that cannot be read (listing
    /proc/self/fd takes a descriptor too, and there may be none left)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class AcceptFailures:
    """The loop's exception handler while serving: accept failures reported in summary,
    anything else handed to the handler there was before."""

    def __init__(self, limit: DescriptorLimit, previous: Callable[..., object] | None) -> None:
        self.limit = limit
        self.failed = 0
        self._previous = previous
        self._reported_at: float | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_FAILED:
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.failed += 1
        now = time.monotonic()
        if self._reported_at is not None and now - self._reported_at < REPORT_SECONDS:
            return
        self._reported_at = now
        log.warning(
            "cannot accept connections: out of descriptors; the clients connected are still "
            "served, and accepting is tried again each second",
            error=str(context.get("exception")),
            open=open_descriptors(),
            soft_limit=self.limit.soft,
            failed_since_last_report=self.failed,
        )
        self.failed = 0


def _coalesced(loop: asyncio.AbstractEventLoop, start: Callable[..., None]) -> Callable[..., None]:
    """`loop._start_serving`, re-arming a socket at most once per retry and never a closed
    one (the server stopped while retries were pending)."""
    armed: dict[int, float] = {}

    def start_serving(protocol_factory: Any, sock: socket.socket, *args: Any, **kw: Any) -> None:
        fd = sock.fileno()
        if fd < 0:
            return
        now = loop.time()
        if now - armed.get(fd, -math.inf) < RETRY_SECONDS / 2:
            return
        armed[fd] = now
        start(protocol_factory, sock, *args, **kw)

    return start_serving


@contextmanager
def surviving_exhaustion(limit: DescriptorLimit) -> Iterator[AcceptFailures]:
    """Around serving HTTP on the running loop (an asyncio selector loop; another kind is
    left as it is: the report still applies)."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    handler = AcceptFailures(limit, previous)
    loop.set_exception_handler(handler)
    # An instance attribute, ahead of the class's method.
    start: Callable[..., None] | None = getattr(loop, START_SERVING, None)
    patched = start is not None and isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)
    if start is not None and patched:
        setattr(loop, START_SERVING, _coalesced(loop, start))
    try:
        yield handler
    finally:
        if patched:
            delattr(loop, START_SERVING)
        loop.set_exception_handler(previous)

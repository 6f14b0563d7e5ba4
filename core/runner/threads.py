"""The worker threads the process layer hands blocking work to (a fork, reading /proc).

asyncio's executor directly rather than `anyio.to_thread`: a sheet makes a few such trips,
and anyio's (a checkpoint, a capacity limiter, a cancel scope, a backend lookup) cost about
twice the CPU of the trip itself. Callers that must not be interrupted shield the await; the
function runs to its end in its thread either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, TypeVarTuple

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# More than the sheets that run at once by default: a fork waits for its child's exec.
_WORKERS = 16
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(_WORKERS, thread_name_prefix="podium-process")
    return _executor


async def run_sync(fn: Callable[[*Ts], T], *args: *Ts) -> T:
    """`fn(*args)` in a worker thread; its result (or exception) here."""
    return await asyncio.get_running_loop().run_in_executor(_pool(), fn, *args)

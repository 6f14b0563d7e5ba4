"""The conductor as reaper of orphans (SPEC §9 trap 15).

As the Linux *child subreaper* of its sheets, the conductor inherits every orphan they leave
(`setsid` daemons, double forks) instead of init. One that exits on its own is then a zombie
of the conductor until the conductor collects it, and nothing else would: Python waits only
for the children it started. `reap_adopted` collects exactly the adopted ones.

Telling them apart: a child the conductor started is either an attempt's leader (spawned
through `spawning`, which registers it) or a helper in the conductor's own session (an
instrument's `--version`); an adopted orphan is neither. Reaping one of our own would take
its exit status from the code waiting for it, so a pass never runs while a spawn is under
way (its child may exist before it is registered).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Callable, Iterator

import psutil

_PR_SET_CHILD_SUBREAPER = 36

_libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

_lock = threading.Lock()
_spawning = 0
_started: set[int] = set()
_subreaper = False


def become_subreaper() -> bool:
    """Make orphans of our descendants our children instead of init's (Linux)."""
    global _subreaper
    if _libc is None:
        return False
    ok = bool(_libc.prctl(_PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1), 0, 0, 0) == 0)
    _subreaper = _subreaper or ok
    return ok


def active() -> bool:
    """Whether this process adopts orphans (and so has to collect them)."""
    return _subreaper


@contextlib.contextmanager
def spawning() -> Iterator[Callable[[int], None]]:
    """Around the start of an attempt's process: yields `register(pid)`, to be called with
    the new child's pid before the block ends."""
    global _spawning
    with _lock:
        _spawning += 1
    try:
        yield _register
    finally:
        with _lock:
            _spawning -= 1


def _register(pid: int) -> None:
    with _lock:
        _started.add(pid)


def forget(pid: int) -> None:
    """The child `pid` has been waited for by whoever started it."""
    with _lock:
        _started.discard(pid)


def _session_and_state(pid: int) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[3]), fields[0].decode()
    except (IndexError, ValueError):
        return None


def _children() -> list[int]:
    try:
        return [p.pid for p in psutil.Process().children()]
    except psutil.Error:
        return []


def reap_adopted() -> int:
    """Collect every adopted orphan that has exited; returns how many. Does nothing unless
    this process is a subreaper, or while an attempt's process is being started."""
    if not _subreaper:
        return 0
    own_session = os.getsid(0)
    reaped = 0
    with _lock:
        if _spawning:
            return 0
        for pid in _children():
            if pid in _started:
                continue
            found = _session_and_state(pid)
            if found is None or found[1] != "Z" or found[0] == own_session:
                continue
            with contextlib.suppress(ChildProcessError, OSError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped += 1
    return reaped

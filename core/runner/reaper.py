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
from collections.abc import Callable, Iterable, Iterator

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


def _kernel_lists_children() -> bool:
    return os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


# Whether the kernel keeps each thread's list of children (CONFIG_PROC_CHILDREN).
_CHILDREN_FILES = sys.platform.startswith("linux") and _kernel_lists_children()


def _read_children(path: str) -> list[int] | None:
    try:
        with open(path, "rb") as f:
            return [int(child) for child in f.read().split()]
    except (OSError, ValueError):
        return None


def _children_of(pid: int, *, twice: bool = False) -> list[int]:
    """The children of process `pid` (empty when it has gone). `twice`: each list read a
    second time and the two merged; a read can skip a child while the one before it in the
    list is being reaped, and two reads both skipping it would take two such coincidences."""
    found: dict[int, None] = {}
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in threads:
        for _ in range(2 if twice else 1):
            children = _read_children(f"/proc/{pid}/task/{tid}/children")
            if children is None:
                break  # the thread has ended
            found.update(dict.fromkeys(children))
    return list(found)


def _adopted_list(*, twice: bool = False) -> list[int] | None:
    """The children of this process's main thread: the kernel hands an orphan to the first
    live thread of its subreaper, which is the main thread (it lives as long as the
    process). None where the kernel keeps no such list."""
    if not _CHILDREN_FILES:
        return None
    pid = os.getpid()
    path = f"/proc/{pid}/task/{pid}/children"
    first = _read_children(path)
    if first is None:
        return None
    if not twice:
        return first
    return list(dict.fromkeys([*first, *(_read_children(path) or [])]))


def descendants(also: Iterable[int] = ()) -> list[int] | None:
    """The processes an attempt of ours that has ended can have left, with their
    descendants; None when that cannot be told without reading every process: only a
    subreaper keeps the orphans of its descendants below it (others go to init), and only
    a kernel with children lists shows the tree.

    Every process an attempt starts is born below its leader, and an orphan only ever moves
    up its own line of ancestors, to the nearest subreaper: one of the attempt's own, or
    us, where it is a child of the main thread. So once the leader has ended, what is left
    of the attempt is below the main thread (and below the leader, if it has not ended:
    `also`). A process that moves up while the tree is walked lands there, so that list is
    read again at the end until it brings nothing new."""
    if not _subreaper:
        return None
    seen: set[int] = set()
    found: list[int] = []
    todo = list(also)
    while True:
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            found.append(pid)
            todo.extend(c for c in _children_of(pid, twice=True) if c not in seen)
        adopted = _adopted_list(twice=True)
        if adopted is None:
            return None
        todo = [c for c in adopted if c not in seen]
        if not todo:
            return found


def _children() -> list[int]:
    """This process's children that may be adopted orphans. From the main thread's list
    where the kernel keeps one (see `_adopted_list`): psutil's way reads every process's
    stat on the machine, a couple of milliseconds of CPU with a few hundred processes, and
    this runs after every attempt."""
    adopted = _adopted_list()
    if adopted is not None:
        return adopted
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

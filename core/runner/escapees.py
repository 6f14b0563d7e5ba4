"""Processes that left their attempt's process group, found and ended (SPEC §9 trap 15).

Killing a sheet's group misses whatever ran `setsid` (a new session, so a new group), and a
double fork through `env -i` loses the attempt's environment mark too. Two things no child
clears follow every process an attempt starts:

- the environment variable `PODIUM_ATTEMPT_OF` (home, job, sheet, attempt), for the common
  case;
- a tag in the process's *timer slack*, which every fork inherits and `env -i`, `setsid`,
  `nohup` and exec keep. The thread that spawns an attempt's process sets it just before the
  fork. The tag is a value a little above the kernel's default (50 us, plus at most ~1 ms),
  harmless to timers, derived from the attempt's mark so recovery can compute it again.

On Linux the conductor also makes itself a child subreaper (`become_subreaper`, in `reaper`),
so orphans are re-parented to it rather than to init: it stays their reaper. Where the kernel
offers a pids cgroup, every attempt also runs in one of its own (`cgroups`), which nothing
can leave.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping

import anyio
import psutil

# The conductor as subreaper lives with the reaping of what it adopts.
from podium.core.runner import reaper
from podium.core.runner.reaper import become_subreaper as become_subreaper

MARK_VARIABLE = "PODIUM_ATTEMPT_OF"
_DEFAULT_SLACK_NS = 50_000
_TAG_SPACE = 1 << 20
_PR_SET_TIMERSLACK = 29
# A process started this long before the attempt began cannot be one of its own (clock-tick
# granularity of start times).
_START_SLACK_SECONDS = 1.0

_libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def attempt_tag(mark: str) -> int:
    """The timer-slack value (ns) that tags the processes of the attempt with this mark."""
    digest = hashlib.sha256(mark.encode()).digest()
    return _DEFAULT_SLACK_NS + 1 + int.from_bytes(digest[:4], "big") % _TAG_SPACE


def _prctl(option: int, value: int) -> bool:
    if _libc is None:
        return False
    return bool(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) == 0)


@contextlib.contextmanager
def tagging(env: Mapping[str, str]) -> Iterator[None]:
    """Tag processes forked by this thread inside the block with the attempt marked in
    `env` (nothing when `env` carries no mark)."""
    mark = env.get(MARK_VARIABLE)
    if mark is None or not _prctl(_PR_SET_TIMERSLACK, attempt_tag(mark)):
        yield
        return
    try:
        yield
    finally:
        _prctl(_PR_SET_TIMERSLACK, 0)  # 0: back to this thread's default


def _tag_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/timerslack_ns", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def find_attempt_processes(
    mark: str, since: float, spare: frozenset[int] = frozenset()
) -> list[psutil.Process]:
    """Live processes carrying this attempt's mark, or its tag and started since `since`
    (a wall-clock time); never this process or the pids in `spare`."""
    tag = attempt_tag(mark)
    own = os.getpid()
    found: list[psutil.Process] = []
    for proc in psutil.process_iter():
        pid = proc.pid
        if pid == own or pid in spare or pid <= 1:
            continue
        try:
            if _is_marked(proc, mark, tag, since):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def find_marked_by_home(home: str) -> list[psutil.Process]:
    """Live processes whose mark names an attempt of the conductor of `home`, whatever the
    attempt. At that conductor's start nothing of its own runs yet, so every one is left
    over: an attempt another conductor took back (and ran again) while this one was dead,
    or one whose record was lost with the crash."""
    prefix = home + "|"
    own = os.getpid()
    found: list[psutil.Process] = []
    for proc in psutil.process_iter():
        if proc.pid == own or proc.pid <= 1:
            continue
        try:
            mark = proc.environ().get(MARK_VARIABLE)
            if mark is None or not mark.startswith(prefix):
                continue
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def find_left_behind(mark: str, since: float, leader: int | None = None) -> list[psutil.Process]:
    """What `find_attempt_processes` finds, for an attempt of this conductor that just
    ended (`leader`: its first process): as subreaper, among the few processes where what
    the attempt left can be (`reaper.descendants`), not the hundreds of the whole process
    table, after every attempt; else on the whole machine."""
    below = reaper.descendants(() if leader is None else (leader,))
    if below is None:
        return find_attempt_processes(mark, since)
    tag = attempt_tag(mark)
    found: list[psutil.Process] = []
    for pid in below:
        try:
            proc = psutil.Process(pid)
            if _is_marked(proc, mark, tag, since):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _is_marked(proc: psutil.Process, mark: str, tag: int, since: float) -> bool:
    if proc.create_time() < since - _START_SLACK_SECONDS:
        return False
    if proc.status() == psutil.STATUS_ZOMBIE:
        return False
    return _tag_of(proc.pid) == tag or proc.environ().get(MARK_VARIABLE) == mark


def _signal_all(procs: list[psutil.Process], sig: int) -> list[psutil.Process]:
    alive = []
    for proc in procs:
        # psutil checks the pid still names the process it found (start time), so a pid
        # reused meanwhile is never signalled.
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
            alive.append(proc)
    return alive


def _reap(procs: list[psutil.Process]) -> None:
    """Collect the exit status of those that were re-parented to us (we are the subreaper)."""
    own = os.getpid()
    for proc in procs:
        with contextlib.suppress(psutil.Error, ChildProcessError, OSError):
            if proc.ppid() == own:
                os.waitpid(proc.pid, os.WNOHANG)


async def end_attempt_processes(
    mark: str, since: float, grace_seconds: float, spare: frozenset[int] = frozenset()
) -> int:
    """End every process left by the attempt with this mark: SIGCONT and SIGTERM, then SIGKILL
    after the grace period. Returns how many there were."""
    found = await anyio.to_thread.run_sync(find_attempt_processes, mark, since, spare)
    if found:
        await end_processes(found, grace_seconds)
    return len(found)


async def end_processes(found: list[psutil.Process], grace_seconds: float) -> None:
    """SIGCONT and SIGTERM `found` (from `find_attempt_processes`), then SIGKILL what is
    left after the grace period."""
    procs = _signal_all(found, signal.SIGCONT)
    procs = _signal_all(procs, signal.SIGTERM)
    deadline = time.monotonic() + max(0.0, grace_seconds)
    while procs and time.monotonic() < deadline:
        await anyio.sleep(0.02)
        _reap(procs)
        procs = [p for p in procs if _running(p)]
    if procs:
        _signal_all(procs, signal.SIGKILL)
        settle = time.monotonic() + 2.0
        while procs and time.monotonic() < settle:
            await anyio.sleep(0.02)
            _reap(procs)
            procs = [p for p in procs if _running(p)]
    _reap(found)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False

"""Process groups: proving one is ours, signalling it, waiting for it to empty, killing it.

Every sheet runs as the leader of a new session/process group, so one signal reaches it and
everything it spawned. Signals to groups go through `signal_group` only, which refuses the
groups that can never be ours (SPEC §9 trap 10).
"""

from __future__ import annotations

import contextlib
import os
import signal as signal_mod
import time
from dataclasses import dataclass

import anyio
import psutil

from podium.core.errors import PodiumError

# While a group is being emptied, how often to look again (doubling up to the maximum).
_FIRST_LOOK_SECONDS = 0.002
_MAX_LOOK_SECONDS = 0.1
# After SIGKILL, or after the leader exits, how long to wait for the rest to go away.
SETTLE_SECONDS = 2.0
# Create-time comparison slack: psutil derives it from clock ticks since boot.
_START_TIME_TOLERANCE = 0.01


class UnsafeKillError(PodiumError):
    """A signal was about to go to a group the conductor cannot own."""


@dataclass(frozen=True)
class ProcessGroupRef:
    pid: int
    pgid: int
    start_time: float  # psutil create_time() of the leader


def leader_matches(ref: ProcessGroupRef) -> bool:
    """True only if the recorded leader is still the same process (pid, pgid and start time).

    After a reboot or pid wrap-around a recorded pid/pgid may belong to something else; the
    start time tells them apart.
    """
    try:
        pgid = os.getpgid(ref.pid)
    except (ProcessLookupError, PermissionError):
        return False
    if pgid != ref.pgid:
        return False
    started = _boot_relative_start(ref.pid)
    if started is None:
        return False
    # The kernel reports the boot time in whole seconds, derived from the wall clock: when
    # the clock is stepped across a second boundary it moves by one, and a start time
    # recorded before then (by this conductor or an earlier one) is off by exactly 1 s.
    # Ticks since boot never move, so the fraction still has to match.
    drift = started + _boot_time() - ref.start_time
    return any(abs(drift - step) <= _START_TIME_TOLERANCE for step in (-1.0, 0.0, 1.0))


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to process group `pgid`; False if there is no such group.

    Raises UnsafeKillError for pgid <= 1 (0 and -1 mean "my group"/"everyone" to kill(2))
    and for the conductor's own group.
    """
    if pgid <= 1:
        raise UnsafeKillError(f"refusing to signal process group {pgid}")
    if pgid == os.getpgrp():
        raise UnsafeKillError(f"refusing to signal the conductor's own process group {pgid}")
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The group exists but belongs to another user, so it is not one we created.
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether group `pgid` has a live (non-zombie) member. `killpg(pgid, 0)` answers for the
    common case, an empty group, without looking at any process; only a group that still
    has members (which may all be zombies nobody reaped yet) is looked at process by
    process."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # a group of another user's processes is not one we created
    return bool(group_members(pgid))


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in process group `pgid`."""
    members: list[int] = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) != pgid:
                continue
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                continue
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
        members.append(pid)
    return members


async def _wait_until_empty(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    pause = _FIRST_LOOK_SECONDS
    while True:
        if not group_alive(pgid):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await anyio.sleep(min(pause, left))
        pause = min(pause * 2, _MAX_LOOK_SECONDS)


async def terminate_group(pgid: int, grace_seconds: float) -> None:
    """SIGCONT + SIGTERM the group, SIGKILL whatever is left after the grace period."""
    # Signal only while live members exist: they pin the pgid, so it cannot have been reused
    # for somebody else's group since we created it.
    if not group_alive(pgid):
        return
    signal_group(pgid, signal_mod.SIGCONT)  # a stopped process never handles SIGTERM
    if not signal_group(pgid, signal_mod.SIGTERM):
        return
    if await _wait_until_empty(pgid, max(0.0, grace_seconds)):
        return
    if signal_group(pgid, signal_mod.SIGKILL):
        await _wait_until_empty(pgid, SETTLE_SECONDS)


def kill_now(pgid: int) -> None:
    """Last resort when async cleanup cannot run: SIGKILL without waiting."""
    with contextlib.suppress(UnsafeKillError):
        if group_alive(pgid):
            signal_group(pgid, signal_mod.SIGKILL)


async def kill_recorded_group(ref: ProcessGroupRef, grace_seconds: float) -> bool:
    """Crash recovery: terminate a group recorded by an earlier conductor, if still ours."""
    # Only the recorded leader, still present with its start time, proves ownership (even as a
    # zombie it pins its pid). If the leader is gone, surviving members of that
    # pgid (e.g. a grandchild that outlived it) cannot be told apart from an unrelated group
    # that reused the number after a reboot, so they are left alone rather than risk killing
    # a stranger.
    if not leader_matches(ref):
        return False
    await terminate_group(ref.pgid, grace_seconds)
    return True


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_BOOT_TIME: float | None = None


def create_time(pid: int) -> float:
    """The leader's start time, as psutil's `create_time()` computes it (clock ticks since
    boot plus the boot time), without re-reading the boot time for every sheet."""
    started = _boot_relative_start(pid)
    if started is None:
        return _psutil_create_time(pid)
    return started + _boot_time()


def _boot_relative_start(pid: int) -> float | None:
    """Seconds from boot to the start of `pid` (None if it cannot be read): immune to clock
    steps, unlike the wall-clock time built on it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return int(fields[19]) / _CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return None


def _boot_time() -> float:
    global _BOOT_TIME
    if _BOOT_TIME is None:
        _BOOT_TIME = psutil.boot_time()
    return _BOOT_TIME


def _psutil_create_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        # The leader already exited and was reaped; a ref with this time matches nothing,
        # which is right: there is no leader left to prove the group is ours.
        return time.time()


def groups_marked(variable: str, value: str) -> set[int]:
    """Process groups holding a process whose environment has `variable=value` (an attempt's
    ownership mark); never the caller's own group or a group <= 1."""
    own = os.getpgrp()
    found: set[int] = set()
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(variable) != value:
                continue
            pgid = os.getpgid(proc.pid)
        except (psutil.Error, OSError):
            continue
        if pgid > 1 and pgid != own:
            found.add(pgid)
    return found

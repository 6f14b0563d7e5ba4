"""Each attempt in a pids cgroup of its own, where the kernel offers one (SPEC §9 trap 15).

In its group an attempt's processes can never number more than `max_processes` (a fork past
that fails in the sheet, so a fork bomb stays bounded), and none can leave it: not by
`setsid`, a double fork or a cleared environment. Ending the attempt ends every member.

cgroup v1's pids hierarchy lets one thread join a group, so the worker thread that forks an
attempt's leader joins the attempt's group for the fork only (as it tags the fork, see
`escapees`): the leader, and everything it starts, is born inside. cgroup v2 moves whole
processes only (and needs a delegated subtree), so there, and wherever no pids hierarchy is
writable, attempts run without a group: the resource monitor still counts descendants
against `max_processes` (backpressure), and marks and tags still find escaped processes.

Groups live under `<pids mount>/<this process's group>/podium-<home hash>/`, one per attempt,
named by a hash of the attempt's mark, so a restarted conductor finds what a crash left.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from podium.core.runner.escapees import MARK_VARIABLE

log = structlog.get_logger("podium.cgroups")

_SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class _Home:
    base: Path
    max_pids: int
    # Where a thread goes back to after a fork: the tasks file of this process's own group,
    # where its threads are born (computed once, at `enable`, not at every start).
    back: str


@dataclass
class _Pool:
    """A home's attempt groups, kept from one attempt to the next: making a cgroup and
    removing it at every start costs the kernel more than the rest of the start."""

    # Emptied groups ready for the next attempts: (path, the forks it had refused when
    # emptied, the limit it was given).
    spare: list[tuple[str, int, int]] = field(default_factory=list)
    # The group of each attempt in flight, by mark, with the refused count it started from.
    # mark -> (group path, refused forks before this attempt, the pids.max written to it)
    taken: dict[str, tuple[str, int, int]] = field(default_factory=dict)


# Spare groups kept per home at most (as many as sheets commonly run at once, and some).
_SPARE_GROUPS = 64

_homes: dict[str, _Home] = {}
_pools: dict[str, _Pool] = {}
_lock = threading.Lock()


def _pids_mount() -> Path | None:
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and parts[2] == "cgroup" and "pids" in parts[3].split(","):
                    return Path(parts[1])
    except OSError:
        return None
    return None


def _own_group(proc_file: str = "/proc/self/cgroup") -> str | None:
    try:
        with open(proc_file, encoding="utf-8") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if "pids" in controllers.split(","):
                    return path
    except (OSError, ValueError):
        return None
    return None


def _base_for(home: str) -> tuple[Path, str] | None:
    """The directory of the home's attempt groups, and the tasks file of our own group."""
    mount, own = _pids_mount(), _own_group()
    if mount is None or own is None:
        return None
    digest = hashlib.sha256(home.encode()).hexdigest()[:12]
    group = mount / own.lstrip("/")
    return group / f"podium-{digest}", str(group / "tasks")


def enable(home: str, max_processes: int) -> bool:
    """Give the attempts of the conductor on `home` groups from now on (at start, and again
    at a reload with a new `max_processes`). False when the kernel offers none here."""
    found = _base_for(home)
    if found is None:
        return False
    base, back = found
    try:
        base.mkdir(exist_ok=True)
        (base / "tasks").stat()
    except OSError as exc:
        log.info("no pids cgroup for attempts", reason=str(exc))
        return False
    with _lock:
        _homes[home] = _Home(base, max_processes, back)
        _pools.setdefault(home, _Pool())
    return True


def disable(home: str) -> None:
    with _lock:
        entry = _homes.pop(home, None)
        pool = _pools.pop(home, None)
    for group, _, _ in pool.spare if pool is not None else ():
        with contextlib.suppress(OSError):
            os.rmdir(group)
    if entry is not None:
        with contextlib.suppress(OSError):
            entry.base.rmdir()  # only when no attempt group is left in it


def enabled(home: str) -> bool:
    return home in _homes


def _home_of(mark: str) -> str:
    return mark.rsplit("|", 3)[0]


def _group_name(mark: str) -> str:
    return hashlib.sha256(mark.encode()).hexdigest()[:24]


def _group_of(mark: str) -> Path | None:
    home = _home_of(mark)
    entry = _homes.get(home)
    if entry is None:
        return None
    pool = _pools.get(home)
    taken = pool.taken.get(mark) if pool is not None else None
    return Path(taken[0]) if taken is not None else entry.base / _group_name(mark)


def _refused_before(mark: str) -> int:
    """The refused count the attempt's (reused) group had when the attempt took it."""
    pool = _pools.get(_home_of(mark))
    taken = pool.taken.get(mark) if pool is not None else None
    return taken[1] if taken is not None else 0


@contextlib.contextmanager
def joined(env: Mapping[str, str]) -> Iterator[None]:
    """Inside the block, this thread is in the group of the attempt marked in `env` (created
    with its limit), so a process it forks is born there; nothing when there is no mark or
    no group to be had."""
    mark = env.get(MARK_VARIABLE)
    home = _home_of(mark) if mark is not None else ""
    entry = _homes.get(home)
    pool = _pools.get(home)
    if mark is None or entry is None or pool is None:
        yield
        return
    # Plain os calls on paths computed once: this runs at every start, and pathlib and
    # re-reading the mount table cost more than the cgroup operations themselves.
    wanted = entry.max_pids  # read once: a reload may change it meanwhile
    with _lock:
        group, refused, limit = (
            pool.spare.pop() if pool.spare else (f"{entry.base}/{_group_name(mark)}", 0, -1)
        )
        pool.taken[mark] = (group, refused, wanted)
    tid = str(threading.get_native_id()).encode()
    try:
        try:
            if limit < 0:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(group)
            if limit != wanted:
                _write(f"{group}/pids.max", str(wanted).encode())
            _write(f"{group}/tasks", tid)
        except FileNotFoundError:
            if limit < 0:
                raise
            # A spare removed meanwhile (`release_leftovers`): made afresh.
            with _lock:
                pool.taken[mark] = (group, 0, wanted)
            with contextlib.suppress(FileExistsError):
                os.mkdir(group)
            _write(f"{group}/pids.max", str(wanted).encode())
            _write(f"{group}/tasks", tid)
    except OSError as exc:
        log.warning("attempt runs without its pids cgroup", reason=str(exc))
        with _lock:
            pool.taken.pop(mark, None)
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            _write(entry.back, tid)


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)


def members(mark: str) -> list[int]:
    group = _group_of(mark)
    return _members(group) if group is not None else []


def _members(group: Path) -> list[int]:
    try:
        with open(f"{group}/cgroup.procs", "rb") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def refused_forks(mark: str) -> int:
    """How many forks of the attempt the kernel refused at its limit."""
    group = _group_of(mark)
    if group is None:
        return 0
    return max(0, _refused_total(str(group)) - _refused_before(mark))


def _refused_total(group: str) -> int:
    """The group's count of refused forks since it was made (the kernel never resets it)."""
    try:
        for line in _read(f"{group}/pids.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "max":
                return int(value)
    except (OSError, ValueError):
        return 0
    return 0


def release(mark: str) -> int:
    """End whatever is left in the attempt's group (SIGKILL: the graceful ending has had its
    turn); the emptied group is kept for a later attempt (or removed, past the spares kept).
    Returns how many processes it ended. Blocking: run it in a worker thread."""
    group = _group_of(mark)
    if group is None:
        return 0
    home = _home_of(mark)
    with _lock:
        pool = _pools.get(home)
        taken = pool.taken.pop(mark, None) if pool is not None else None
    ended, emptied = _empty(group)
    entry = _homes.get(home)
    if taken is None or not emptied or pool is None or entry is None:
        # Not one of this conductor's pool (or it would not empty): removed if it can be.
        with contextlib.suppress(OSError):
            os.rmdir(group)
        return ended
    if not _uncharged(str(group)):
        # Killed members not yet reaped still count against pids.max: a later attempt
        # would start with forks it never made. Not kept.
        with contextlib.suppress(OSError):
            os.rmdir(group)
        return ended
    # The limit actually written to it, not today's: a reload may have changed it since.
    spare = (str(group), _refused_total(str(group)), taken[2])
    with _lock:
        keep = _pools.get(home) is pool and len(pool.spare) < _SPARE_GROUPS
        if keep:
            pool.spare.append(spare)
    if not keep:
        with contextlib.suppress(OSError):
            os.rmdir(group)
    return ended


def _uncharged(group: str) -> bool:
    try:
        return int(_read(f"{group}/pids.current").strip() or "0") == 0
    except (OSError, ValueError):
        return False


def _empty(group: Path) -> tuple[int, bool]:
    """SIGKILL the group's members until none is left: (how many, whether it emptied)."""
    ended: set[int] = set()
    deadline = time.monotonic() + _SETTLE_SECONDS
    while True:
        pids = [p for p in _members(group) if p != os.getpid()]
        if not pids:
            return len(ended), True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                ended.add(pid)
        if time.monotonic() > deadline:
            log.warning("processes of an attempt group would not end", pids=pids)
            return len(ended), False
        time.sleep(0.01)


def _empty_and_remove(group: Path) -> int:
    ended, emptied = _empty(group)
    if emptied:
        with contextlib.suppress(OSError):
            os.rmdir(group)
    return ended


def release_leftovers(home: str) -> int:
    """At start: empty and remove every attempt group a previous conductor on `home` left
    (a crash skips the release at an attempt's end). Returns the processes ended."""
    entry = _homes.get(home)
    if entry is None:
        return 0
    ended = 0
    with contextlib.suppress(OSError):
        for group in entry.base.iterdir():
            if group.is_dir():
                ended += _empty_and_remove(group)
    return ended

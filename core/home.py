"""The Podium home: its directories, the one-conductor-per-home OS lock, and
`conductor.json`, which tells other processes how to reach the conductor that holds it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import IO

import psutil
from pydantic import BaseModel, ConfigDict, ValidationError

from podium.core.config import PodiumConfig
from podium.core.errors import HomeLockedError, PodiumError
from podium.core.models import UtcTime


def ensure_home(config: PodiumConfig) -> None:
    for folder in (
        config.home,
        config.logs_dir,
        config.snapshots_dir,
        config.workspaces_dir,
        config.instruments_dir,
    ):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            where = (
                f"the Podium home {folder}"
                if folder == config.home
                else f"{folder} in the Podium home"
            )
            raise PodiumError(f"cannot create {where}: {exc.strerror}") from exc


def read_lock_owner(lock_path: Path) -> int | None:
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class HomeLock:
    """An exclusive `flock` on `conductor.lock`; the kernel drops it if the process dies,
    so a crashed conductor never leaves a stale lock behind."""

    def __init__(self, lock_path: Path) -> None:
        self.lock_path = lock_path
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = open(self.lock_path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            owner = read_lock_owner(self.lock_path)
            raise HomeLockedError(str(self.lock_path.parent), owner) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None


class ConductorInfo(BaseModel):
    """The contents of `<home>/conductor.json` (SPEC §3). `url` is null for a conductor that
    serves no HTTP endpoint another process could attach to (`podium serve --embedded`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    pid: int
    url: str | None
    token: str | None
    version: str
    started_at: UtcTime
    # The store it runs on (`store_identity`: no password) and where its store_url came
    # from; null in a file written before Podium recorded them.
    store: str | None = None
    store_source: str | None = None


def write_conductor_info(path: Path, info: ConductorInfo) -> None:
    """Atomically, and readable only by the owner (it holds the bearer token)."""
    fd, tmp = tempfile.mkstemp(prefix=".conductor-", suffix=".json", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(info.model_dump(mode="json"), indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_conductor_info(path: Path, pid: int) -> None:
    """Remove the file only if it still describes `pid` (a successor may have replaced it)."""
    current = _load_info(path)
    if current is not None and current.pid == pid:
        with contextlib.suppress(OSError):
            path.unlink()


def _load_info(path: Path) -> ConductorInfo | None:
    try:
        return ConductorInfo.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError):
        return None


# How much later than the file that names it a process may seem to have been created and
# still be the one that wrote it (process start times come from the boot time, files' from
# the wall clock).
CLOCK_SLACK_SECONDS = 30.0


def _alive(pid: int, written: float) -> bool:
    """Whether `pid`, named in a file written at `written`, is still the process that wrote
    it. The files outlive a conductor that crashed (and a reboot), and the kernel hands its
    pid to another process sooner or later: one created after the file was written is not
    ours (it must not be attached to, signalled or stopped)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return process.create_time() <= written + CLOCK_SLACK_SECONDS
    except psutil.Error:
        return False


def read_conductor_info(config: PodiumConfig) -> ConductorInfo | None:
    """The running conductor of this home, or None. A file whose pid is dead, is now another
    process's, or is not the process that holds the home's lock, is left over from a
    conductor that died: ignored."""
    info = _load_info(config.conductor_file)
    if info is None or not _alive(info.pid, info.started_at.timestamp()):
        return None
    if read_lock_owner(config.lock_path) != info.pid:
        return None
    return info


def lock_owner_alive(config: PodiumConfig) -> int | None:
    """The pid written by the last lock holder, if that process still lives (it may hold the
    home without a conductor.json: starting up, or an embedded server)."""
    pid = read_lock_owner(config.lock_path)
    try:
        written = config.lock_path.stat().st_mtime
    except OSError:
        return None
    return pid if pid is not None and pid != os.getpid() and _alive(pid, written) else None

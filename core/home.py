"""The Podium home: its directories and the one-conductor-per-home OS lock."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from podium.core.config import PodiumConfig
from podium.core.errors import HomeLockedError


def ensure_home(config: PodiumConfig) -> None:
    for folder in (
        config.home,
        config.logs_dir,
        config.snapshots_dir,
        config.workspaces_dir,
        config.instruments_dir,
    ):
        folder.mkdir(parents=True, exist_ok=True)


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

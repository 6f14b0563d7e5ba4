"""Commits made durable on SQLite, outside the commit itself: `synchronous = NORMAL` writes
the write-ahead log without syncing it, and the explicit fsync of the log before a write
returns makes each commit as durable as `synchronous = FULL` would. A commit runs its
statements where it is called (CPU work of microseconds: a worker thread would hand the GIL
back and forth once per statement); the fsync, the one slow part, runs in a worker thread,
one fsync for every transaction committed before it started, so waiters share them.
Checkpoints (copying the log into the database) run in that thread too, never inside a
commit."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import anyio

# Checkpoint (copy the log into the database) once the log has grown past this.
CHECKPOINT_BYTES = 4 * 1024 * 1024


class WalSync:
    def __init__(self, path: Path, checkpointer: sqlite3.Connection) -> None:
        self._wal_path = Path(f"{path}-wal")
        # A connection of its own: a checkpoint runs beside reads and writes.
        self._checkpointer = checkpointer
        # The one worker thread that syncs, checkpoints and closes.
        self.limiter = anyio.CapacityLimiter(1)
        self._lock = anyio.Lock()
        self._written = 0  # transactions committed
        self._synced = 0  # ... and made durable
        self._wal_fd: int | None = None
        self._wal_inode: int | None = None

    def committed(self) -> int:
        """Count a transaction just committed; its number, for `durable`."""
        self._written += 1
        return self._written

    async def durable(self, generation: int) -> None:
        """Wait until transaction number `generation` is durable. One fsync covers every
        transaction committed before it started, so waiters share fsyncs."""
        if self._synced >= generation:
            return
        with anyio.CancelScope(shield=True):
            async with self._lock:
                if self._synced >= generation:
                    return
                target = self._written
                await anyio.to_thread.run_sync(self._sync, limiter=self.limiter)
                self._synced = max(self._synced, target)

    def _sync(self) -> None:
        """fsync the write-ahead log (what `synchronous = FULL` does at every commit), and
        checkpoint it once it has grown."""
        try:
            info = os.stat(self._wal_path)
        except FileNotFoundError:
            return  # nothing written through the log yet
        if self._wal_fd is None or self._wal_inode != info.st_ino:
            if self._wal_fd is not None:
                os.close(self._wal_fd)
            self._wal_fd = os.open(self._wal_path, os.O_RDONLY | os.O_CLOEXEC)
            self._wal_inode = info.st_ino
        os.fsync(self._wal_fd)
        if info.st_size >= CHECKPOINT_BYTES:
            # Passive: copies what no reader still needs, never waits for a lock.
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    async def truncate(self) -> None:
        """Copy the whole log into the database and truncate it."""

        def truncate() -> None:
            self._checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

        await anyio.to_thread.run_sync(truncate, limiter=self.limiter)

    def close(self) -> None:
        """Close the log's descriptor (in the worker thread, after the connections)."""
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None

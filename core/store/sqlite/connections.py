"""The SQLite store's connections, opened with their pragmas: one writer, which migrates the
database first, and the readers beside it (WAL lets them read while it writes)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from podium.core.store.sqlite.schema import check_not_newer, migrate

READERS = 2


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in ("foreign_keys = ON", "synchronous = FULL", "busy_timeout = 10000"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def _writer_mode(conn: sqlite3.Connection) -> None:
    # The log is fsynced by WalSync after every commit instead (durability.py): a transition
    # the user was told about survives power loss, not just a crash.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")


def _incremental_vacuum_mode(conn: sqlite3.Connection) -> None:
    # Pages that `clear` frees go back to the file system in small steps (reclaim_space)
    # rather than never: a database never shrank after a clear. Switching an existing
    # database over takes one VACUUM, done here while nothing else uses it yet.
    if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) != 2:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")


def open_connections(path: Path) -> tuple[sqlite3.Connection, list[sqlite3.Connection]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = _connect(path)
    try:
        # Refuse a too-new database before anything (even the journal mode) touches it.
        check_not_newer(writer, path)
        writer.execute("PRAGMA journal_mode = WAL")
        migrate(writer, path)
        _incremental_vacuum_mode(writer)
        _writer_mode(writer)
        # One more than READERS: the checkpointer's (durability.py).
        readers = [_connect(path) for _ in range(READERS + 1)]
    except BaseException:
        writer.close()
        raise
    return writer, readers

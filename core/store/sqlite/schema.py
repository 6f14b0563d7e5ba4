"""Numbered schema migrations: the database records its version and is upgraded in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from podium.core.errors import SchemaTooNewError
from podium.core.store.migrations import load_migrations

MIGRATIONS = load_migrations("podium.core.store.sqlite")
LATEST_SCHEMA_VERSION = len(MIGRATIONS)


def _too_new(path: Path, version: int) -> SchemaTooNewError:
    return SchemaTooNewError(
        f"database {path} has schema version {version}, newer than this Podium supports "
        f"({LATEST_SCHEMA_VERSION}); upgrade Podium or use another home"
    )


def read_schema_version(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    if row is None:
        conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        return 0
    return int(row[0])


def check_not_newer(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a database written by a newer Podium, reading only (no table is created)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    if row is not None and int(row[0]) > LATEST_SCHEMA_VERSION:
        raise _too_new(path, int(row[0]))


def migrate(conn: sqlite3.Connection, path: Path, target: int | None = None) -> int:
    """Bring the database up to `target` (default: latest); refuse a database that is newer.
    `conn` must be in autocommit mode (isolation_level None)."""
    target = LATEST_SCHEMA_VERSION if target is None else target
    current = read_schema_version(conn)
    if current > LATEST_SCHEMA_VERSION:
        raise _too_new(path, current)
    for number, _name, sql in MIGRATIONS:
        if current < number <= target:
            # One script, one transaction: a migration applies completely or not at all.
            try:
                conn.executescript(
                    f"BEGIN IMMEDIATE;\n{sql}\nUPDATE schema_version SET version = {number};\n"
                    "COMMIT;"
                )
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            current = number
    return current

"""Numbered schema migrations: the database records its version and is upgraded in place."""

from __future__ import annotations

import re
import sqlite3
from importlib import resources
from pathlib import Path

from podium.core.errors import SchemaTooNewError


def _load_migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("podium.core.store.sqlite").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text()))
    found.sort()
    numbers = [number for number, _, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..N without gaps, found {numbers}")
    return found


MIGRATIONS = _load_migrations()
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

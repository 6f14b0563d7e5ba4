"""Numbered schema migrations: the database records its version and is upgraded in place."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import aiosqlite

from podium.core.errors import SchemaTooNewError


def _load_migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("podium.core.store").joinpath("migrations")
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


async def read_schema_version(conn: aiosqlite.Connection) -> int:
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    async with conn.execute("SELECT version FROM schema_version") as cursor:
        row = await cursor.fetchone()
    if row is None:
        await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        return 0
    return int(row[0])


async def check_not_newer(conn: aiosqlite.Connection, path: Path) -> None:
    """Refuse a database written by a newer Podium, reading only (no table is created)."""
    async with conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ) as cursor:
        if await cursor.fetchone() is None:
            return
    async with conn.execute("SELECT version FROM schema_version") as cursor:
        row = await cursor.fetchone()
    if row is not None and int(row[0]) > LATEST_SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"database {path} has schema version {row[0]}, newer than this Podium supports "
            f"({LATEST_SCHEMA_VERSION}); upgrade Podium or use another home"
        )


async def migrate(conn: aiosqlite.Connection, path: Path, target: int | None = None) -> int:
    """Bring the database up to `target` (default: latest); refuse a database that is newer."""
    target = LATEST_SCHEMA_VERSION if target is None else target
    current = await read_schema_version(conn)
    if current > LATEST_SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"database {path} has schema version {current}, newer than this Podium supports "
            f"({LATEST_SCHEMA_VERSION}); upgrade Podium or use another home"
        )
    for number, _name, sql in MIGRATIONS:
        if current < number <= target:
            # One script, one transaction: a migration applies completely or not at all.
            try:
                await conn.executescript(
                    f"BEGIN IMMEDIATE;\n{sql}\n"
                    f"UPDATE schema_version SET version = {number};\nCOMMIT;"
                )
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise
            current = number
    return current

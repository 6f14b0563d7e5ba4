"""Numbered schema migrations for PostgreSQL, the twins of the SQLite store's (same numbers,
same names, this dialect's types): the database records its version and is upgraded in
place, one migration per transaction, under an advisory lock so conductors starting at the
same moment migrate once."""

from __future__ import annotations

from typing import Any

import psycopg

from podium.core.errors import PodiumError, SchemaTooNewError
from podium.core.store.migrations import load_migrations

MIGRATIONS = load_migrations("podium.core.store.postgres")
LATEST_SCHEMA_VERSION = len(MIGRATIONS)


def _too_new(where: str, version: int) -> SchemaTooNewError:
    return SchemaTooNewError(
        f"database {where} has schema version {version}, newer than this Podium supports "
        f"({LATEST_SCHEMA_VERSION}); upgrade Podium or use another store_url"
    )


async def current_schema(conn: psycopg.AsyncConnection[Any], where: str = "the database") -> str:
    row = await (await conn.execute("SELECT current_schema()")).fetchone()
    if row is None or row[0] is None:
        path = await (await conn.execute("SHOW search_path")).fetchone()
        raise PodiumError(
            f"store_url: no schema of the connection's search_path ({path[0] if path else ''}) "
            f"exists in {where}; create it (CREATE SCHEMA ...) or drop the search_path option"
        )
    return str(row[0])


async def _version(conn: psycopg.AsyncConnection[Any]) -> int | None:
    exists = await (await conn.execute("SELECT to_regclass('schema_version')")).fetchone()
    if exists is None or exists[0] is None:
        return None
    row = await (await conn.execute("SELECT version FROM schema_version")).fetchone()
    return None if row is None else int(str(row[0]))


async def migrate(conn: psycopg.AsyncConnection[Any], where: str, target: int | None = None) -> int:
    """Bring the schema up to `target` (default: latest); refuse one that is newer, before
    changing anything. `conn` must be in autocommit mode."""
    target = LATEST_SCHEMA_VERSION if target is None else target
    schema = await current_schema(conn, where)
    # Several Podium stores may share a database, one per schema: name the one refused.
    where = f"{where} (schema {schema})"
    current = await _version(conn) or 0
    if current > LATEST_SCHEMA_VERSION:
        raise _too_new(where, current)
    lock = f"podium-migrate:{schema}"
    for number, _name, sql in MIGRATIONS:
        if not current < number <= target:
            continue
        async with conn.transaction():
            # Another conductor may be migrating the same schema: wait for it, then re-read.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [lock])
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
            found = await _version(conn)
            if found is None:
                await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
                found = 0
            if found > LATEST_SCHEMA_VERSION:
                raise _too_new(where, found)
            if found >= number:
                current = found
                continue
            await conn.execute(sql.encode())
            await conn.execute("UPDATE schema_version SET version = %s", [number])
        current = number
    return current

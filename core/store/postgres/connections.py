"""The PostgreSQL store's connections: a pool (psycopg 3, async, autocommit, every session
in UTC), opened once the database answers and is migrated."""

from __future__ import annotations

import socket
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from podium.core.errors import PodiumError
from podium.core.store.postgres.schema import current_schema, migrate

Conn = psycopg.AsyncConnection[Any]
Cursor = psycopg.AsyncCursor[Any]
Pool = AsyncConnectionPool[Conn]
POOL_SIZE = 4
CONNECT_TIMEOUT_SECONDS = 10.0


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparseable store_url)"
    host = info.get("host", "localhost")
    port = info.get("port", "5432")
    return f"postgresql://{host}:{port}/{info.get('dbname', '')}"


async def open_pool(url: str, conductor_id: str) -> tuple[Pool, str]:
    """The pool, and the schema the store's tables are in (the connection's current one)."""
    name = f"podium {conductor_id or socket.gethostname()}"[:63]

    async def configure(conn: Conn) -> None:
        # Times come back as UTC datetimes whatever the server's default zone.
        await conn.execute("SET TIME ZONE 'UTC'")

    pool: Pool = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=POOL_SIZE,
        kwargs={"autocommit": True, "application_name": name},
        configure=configure,
        open=False,
        timeout=CONNECT_TIMEOUT_SECONDS,
    )
    try:
        # One plain connection first: a server that is not there fails at once (a pool
        # keeps retrying until its timeout), and migrations run on it.
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_SECONDS)
        ) as conn:
            await configure(conn)
            await migrate(conn, redacted(url))
            schema = await current_schema(conn)
        await pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
    except BaseException as exc:
        await pool.close()
        if isinstance(exc, psycopg.Error | TimeoutError) and not isinstance(exc, PodiumError):
            raise PodiumError(
                f"store_url: cannot use the PostgreSQL store at {redacted(url)}: {exc}"
            ) from exc
        raise
    return pool, schema

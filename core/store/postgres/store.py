"""PostgreSQL store: the `Store` protocol over one database (schema) that conductors on
several hosts share.

A pool of connections (connections.py) serves reads and writes; one more connection per
store listens for the others' changes (listen.py). A write is one transaction (commit.py)
that locks the rows it changes without waiting for another writer, updates them
compare-and-set, and queues a notification naming what changed to go out with the commit.
Each call runs shielded from cancellation: a cancelled caller never leaves a connection
inside a transaction, and the change is made whole or not at all. A commit is durable when
it returns (the server's `synchronous_commit`).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import anyio
import psycopg
import psycopg.errors
import structlog

from podium.core.models import JobStatus, SheetStatus, format_time, parse_time
from podium.core.store.base import (
    MAX_LIST_LIMIT,
    Conflict,
    JobFiles,
    OnChange,
    Overview,
    StoreChange,
    StoreUnavailableError,
    WriteBatch,
    Written,
)
from podium.core.store.codec import Table, decode_cursor, encode_cursor, spec_from_text
from podium.core.store.postgres.codec import ATTEMPTS, CONDUCTORS, HOLDS, JOBS, SHEETS, TASKS, Q
from podium.core.store.postgres.commit import commit
from podium.core.store.postgres.connections import Conn, Cursor, Pool, open_pool
from podium.core.store.postgres.listen import Listener, change_payloads
from podium.core.store.rows import (
    AttemptRow,
    ConductorRow,
    HoldRow,
    JobQuery,
    JobRecord,
    JobRow,
    SheetRow,
    TaskRow,
)

T = TypeVar("T")
# A write that lost a deadlock (two conductors' triggers on the counters) is tried again.
WRITE_TRIES = 5
_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)

log = structlog.get_logger("podium.store.postgres")


def _statuses(statuses: Sequence[SheetStatus | JobStatus] | None) -> list[str] | None:
    return None if not statuses else [s.value for s in statuses]


async def _pending_approvals(cur: Cursor, limit: int) -> tuple[list[SheetRow], int]:
    await cur.execute(Q["select_pending_approvals"], {"limit": limit})
    rows = await cur.fetchall()
    await cur.execute(Q["count_pending_approvals"])
    total = await cur.fetchone()
    assert total is not None
    return [SHEETS.decode(r) for r in rows], int(total[0])


async def _nothing() -> None:
    return None


class PostgresStore:
    """The `Store` protocol over one PostgreSQL schema."""

    def __init__(self, url: str, pool: Pool, schema: str) -> None:
        self.url = url
        self.schema = schema
        self._pool = pool
        # Notifications carry it, so a store ignores its own.
        self.origin = secrets.token_hex(8)
        self.channel = f"podium:{schema}"
        self._listener = Listener(url, self.channel, self.origin)

    @classmethod
    async def open(cls, url: str, conductor_id: str = "") -> PostgresStore:
        pool, schema = await open_pool(url, conductor_id)
        return cls(url, pool, schema)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._pool.close()

    # ----- plumbing -------------------------------------------------------------------------

    async def _run(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        try:
            with anyio.CancelScope(shield=True):
                async with self._pool.connection() as conn:
                    result = await fn(conn)
        except _RETRYABLE:
            raise
        except psycopg.OperationalError as exc:
            # The server or the way to it is gone for now (a pool timeout is one too):
            # callers wait and ask again rather than fail what they were doing for good.
            raise StoreUnavailableError(f"the PostgreSQL store cannot be reached: {exc}") from exc
        return result

    async def _snapshot(self, fn: Callable[[Cursor], Awaitable[T]]) -> T:
        """Several SELECTs that see one committed state."""

        async def run(conn: Conn) -> T:
            async with conn.transaction():
                cur = conn.cursor()
                await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                return await fn(cur)

        return await self._run(run)

    async def _rows(self, table: Table[T], sql: str, params: dict[str, Any]) -> list[T]:
        async def run(conn: Conn) -> list[T]:
            cur = await conn.execute(sql, params)
            return [table.decode(r) for r in await cur.fetchall()]

        return await self._run(run)

    async def _row(self, table: Table[T], sql: str, params: dict[str, Any]) -> T | None:
        rows = await self._rows(table, sql, params)
        return rows[0] if rows else None

    async def _scalar(self, sql: str, params: dict[str, Any]) -> Any:
        async def run(conn: Conn) -> Any:
            found = await (await conn.execute(sql, params)).fetchone()
            return None if found is None else found[0]

        return await self._run(run)

    # ----- writing --------------------------------------------------------------------------

    async def write(self, batches: Sequence[WriteBatch]) -> Written:
        if not batches:
            return Written([], _nothing)
        results: list[Conflict | None] = []
        for attempt in range(1, WRITE_TRIES + 1):
            try:
                results = await self._run(lambda conn: commit(conn, batches, self._send))
            except _RETRYABLE as exc:
                if attempt == WRITE_TRIES:
                    raise
                log.info("write lost a lock race, trying again", error=str(exc))
                await anyio.sleep(0.01 * attempt)
                continue
            break
        return Written(results, _nothing)

    async def _send(self, conn: Conn, change: StoreChange) -> None:
        for payload in change_payloads(self.origin, change):
            await conn.execute(Q["notify"], {"channel": self.channel, "payload": payload})

    async def commit(self, batches: Sequence[WriteBatch]) -> list[Conflict | None]:
        return (await self.write(batches)).results

    async def renew_leases(self, conductor_id: str, until: Any, renewed_at: Any) -> int:
        params = {"conductor_id": conductor_id, "until": until, "renewed_at": renewed_at}

        async def run(conn: Conn) -> int:
            cur = await conn.execute(Q["renew_leases"], params)
            return int(cur.rowcount)

        return await self._run(run)

    # ----- several conductors ----------------------------------------------------------------

    @property
    def shared(self) -> bool:
        return True

    async def watch(self, on_change: OnChange) -> None:
        await self._listener.run(on_change)

    async def announce(self, change: StoreChange) -> None:
        await self._run(lambda conn: self._send(conn, change))

    async def heartbeat(self, conductor: ConductorRow) -> None:
        params = CONDUCTORS.params(conductor)

        async def run(conn: Conn) -> None:
            await conn.execute(Q["upsert_conductor"], params)

        await self._run(run)

    async def conductors(self) -> list[ConductorRow]:
        return await self._rows(CONDUCTORS, Q["select_conductors"], {})

    async def leave(self, conductor_id: str) -> None:
        async def run(conn: Conn) -> None:
            await conn.execute(Q["delete_conductor"], {"conductor_id": conductor_id})

        await self._run(run)

    async def job_versions(self) -> dict[str, int]:
        async def run(conn: Conn) -> dict[str, int]:
            cur = await conn.execute(Q["select_job_versions"])
            return {str(j): int(v) for j, v in await cur.fetchall()}

        return await self._run(run)

    # ----- reading, for the engine ----------------------------------------------------------

    async def load_job(self, job_id: str) -> JobRecord | None:
        async def run(cur: Cursor) -> JobRecord | None:
            await cur.execute(Q["select_job_with_spec"], {"job_id": job_id})
            found = await cur.fetchone()
            if found is None:
                return None
            await cur.execute(Q["select_sheets"], {"job_id": job_id})
            sheets = await cur.fetchall()
            spec, error = spec_from_text(found[-1])
            return JobRecord(
                JOBS.decode(found[:-1]), [SHEETS.decode(s) for s in sheets], spec, error
            )

        return await self._snapshot(run)

    async def load_rows(
        self, job_id: str, sheet_nums: Sequence[int]
    ) -> tuple[JobRow, list[SheetRow]] | None:
        async def run(cur: Cursor) -> tuple[JobRow, list[SheetRow]] | None:
            await cur.execute(Q["select_job"], {"job_id": job_id})
            found = await cur.fetchone()
            if found is None:
                return None
            await cur.execute(Q["select_some_sheets"], {"job_id": job_id, "nums": list(sheet_nums)})
            rows = await cur.fetchall()
            return JOBS.decode(found), [SHEETS.decode(r) for r in rows]

        return await self._snapshot(run)

    async def active_jobs(self) -> list[JobRow]:
        return await self.jobs_with_status([JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED])

    async def in_flight_attempts(self) -> list[AttemptRow]:
        return await self._rows(ATTEMPTS, Q["select_in_flight_attempts"], {})

    async def holds(self) -> list[HoldRow]:
        return await self._rows(HOLDS, Q["select_holds"], {})

    # ----- reading, for views ---------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobRow | None:
        return await self._row(JOBS, Q["select_job"], {"job_id": job_id})

    async def get_spec(self, job_id: str) -> dict[str, Any] | None:
        text = await self._scalar(Q["select_spec"], {"job_id": job_id})
        return None if text is None else spec_from_text(text)[0]

    async def get_sheets(self, job_id: str) -> list[SheetRow]:
        return await self._rows(SHEETS, Q["select_sheets"], {"job_id": job_id})

    async def get_sheet(self, job_id: str, sheet_num: int) -> SheetRow | None:
        return await self._row(
            SHEETS, Q["select_sheet"], {"job_id": job_id, "sheet_num": sheet_num}
        )

    async def get_job_page(
        self, job_id: str, statuses: Sequence[SheetStatus] | None, offset: int, limit: int
    ) -> tuple[JobRow, list[SheetRow], int] | None:
        params = {
            "job_id": job_id,
            "statuses": _statuses(statuses),
            "offset": offset,
            "limit": limit,
        }

        async def run(cur: Cursor) -> tuple[JobRow, list[SheetRow], int] | None:
            await cur.execute(Q["select_job"], {"job_id": job_id})
            found = await cur.fetchone()
            if found is None:
                return None
            await cur.execute(Q["select_sheets_page"], params)
            rows = await cur.fetchall()
            await cur.execute(Q["count_sheets_matching"], params)
            total = await cur.fetchone()
            assert total is not None
            return JOBS.decode(found), [SHEETS.decode(r) for r in rows], int(total[0])

        return await self._snapshot(run)

    async def get_attempt(self, job_id: str, sheet_num: int, attempt: int) -> AttemptRow | None:
        return await self._row(
            ATTEMPTS,
            Q["select_attempt"],
            {"job_id": job_id, "sheet_num": sheet_num, "attempt": attempt},
        )

    async def get_latest_attempt(self, job_id: str, sheet_num: int) -> AttemptRow | None:
        return await self._row(
            ATTEMPTS, Q["select_latest_attempt"], {"job_id": job_id, "sheet_num": sheet_num}
        )

    async def get_history(
        self, job_id: str, sheet_num: int | None, limit: int, offset: int
    ) -> tuple[list[AttemptRow], int]:
        params = {"job_id": job_id, "sheet_num": sheet_num, "limit": limit, "offset": offset}

        async def run(cur: Cursor) -> tuple[list[AttemptRow], int]:
            await cur.execute(Q["select_attempts"], params)
            rows = await cur.fetchall()
            await cur.execute(Q["count_attempts"], params)
            total = await cur.fetchone()
            assert total is not None
            return [ATTEMPTS.decode(r) for r in rows], int(total[0])

        return await self._snapshot(run)

    async def query_jobs(self, query: JobQuery) -> tuple[list[JobRow], str | None]:
        page_size = min(max(query.limit, 1), MAX_LIST_LIMIT)
        params: dict[str, Any] = {
            "statuses": _statuses(query.statuses),
            "name": query.name,
            "label": query.label,
            "cursor_at": None,
            "cursor_id": None,
            "limit": page_size + 1,
        }
        if query.cursor:
            at, params["cursor_id"] = decode_cursor(query.cursor)
            params["cursor_at"] = parse_time(at)
        rows = await self._rows(JOBS, Q["select_jobs_page"], params)
        next_cursor = None
        if len(rows) > page_size:
            rows = rows[:page_size]
            last = rows[-1]
            next_cursor = encode_cursor(format_time(last.submitted_at), last.job_id)
        return rows, next_cursor

    async def jobs_with_status(self, statuses: Sequence[JobStatus]) -> list[JobRow]:
        if not statuses:
            return []
        return await self._rows(
            JOBS, Q["select_jobs_by_statuses"], {"statuses": _statuses(statuses)}
        )

    async def job_files(self) -> list[JobFiles]:
        async def run(conn: Conn) -> list[JobFiles]:
            cur = await conn.execute(Q["select_job_files"])
            return [
                JobFiles(job_id, JobStatus(status), completed, snapshot)
                for job_id, status, completed, snapshot in await cur.fetchall()
            ]

        return await self._run(run)

    async def jobs_with_pending_hooks(self) -> list[JobRow]:
        return await self._rows(JOBS, Q["select_jobs_with_pending_hooks"], {})

    async def count_jobs_by_status(self) -> dict[str, int]:
        async def run(conn: Conn) -> dict[str, int]:
            cur = await conn.execute(Q["count_jobs_by_status"])
            return {str(s): int(n) for s, n in await cur.fetchall()}

        return await self._run(run)

    async def pending_approvals(self, limit: int) -> tuple[list[SheetRow], int]:
        return await self._snapshot(lambda cur: _pending_approvals(cur, limit))

    async def overview(self, approvals_limit: int) -> Overview:
        async def run(cur: Cursor) -> Overview:
            await cur.execute(Q["count_jobs_by_status"])
            counts = {str(s): int(n) for s, n in await cur.fetchall()}
            return Overview(counts, *await _pending_approvals(cur, approvals_limit))

        return await self._snapshot(run)

    async def get_task(self, task_id: str) -> TaskRow | None:
        return await self._row(TASKS, Q["select_task"], {"task_id": task_id})

    async def open_tasks(self, job_ids: Sequence[str]) -> list[TaskRow]:
        return await self._rows(TASKS, Q["select_open_tasks"], {"job_ids": list(job_ids)})

    async def expired_tasks(self, now: datetime, limit: int) -> list[str]:
        async def run(conn: Conn) -> list[str]:
            cur = await conn.execute(Q["select_expired_tasks"], {"now": now, "limit": limit})
            return [str(r[0]) for r in await cur.fetchall()]

        return await self._run(run)

    async def next_task_expiry(self) -> datetime | None:
        found = await self._scalar(Q["select_next_task_expiry"], {})
        return found if isinstance(found, datetime) else None

    async def reclaim_space(self) -> int:
        # The server's autovacuum makes the rows `clear` deleted reusable; returning space to
        # the file system (VACUUM FULL) would lock the tables every conductor uses.
        return 0

    async def count_running_sheets(self) -> int:
        return int(await self._scalar(Q["count_running_sheets"], {}))

"""PostgreSQL store: the `Store` protocol over one database (schema) that conductors on
several hosts share.

A pool of connections (psycopg 3, async) serves reads and writes; one more connection per
store listens for the others' changes (listen.py). A write is one transaction: the job and
hold rows it changes are locked first, in one order, with `FOR UPDATE SKIP LOCKED` (a row
another conductor is writing is refused at once instead of waited for, so two writers never
wait on each other), then every update is compare-and-set on the version it was read at, and
a notification naming the jobs changed is queued to go out with the commit. Each call runs
shielded from cancellation: a cancelled caller never leaves a connection inside a
transaction, and the change is made whole or not at all. A commit is durable when it
returns (the server's `synchronous_commit`).
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import anyio
import psycopg
import psycopg.errors
import structlog
from psycopg_pool import AsyncConnectionPool

from podium.core import jsondata
from podium.core.errors import PodiumError
from podium.core.models import JobStatus, SheetStatus, format_time, parse_time
from podium.core.store.base import (
    MAX_LIST_LIMIT,
    Conflict,
    JobFiles,
    NewJob,
    OnChange,
    Overview,
    StoreChange,
    WriteBatch,
    Written,
)
from podium.core.store.codec import Table, decode_cursor, encode_cursor, load_queries
from podium.core.store.postgres.codec import (
    ATTEMPTS,
    CONDUCTORS,
    HOLDS,
    JOBS,
    SHEETS,
    TABLES,
    TASKS,
)
from podium.core.store.postgres.listen import Listener, change_payloads
from podium.core.store.postgres.schema import current_schema, migrate
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
Conn = psycopg.AsyncConnection[Any]
Q = load_queries("podium.core.store.postgres", TABLES)
POOL_SIZE = 4
CONNECT_TIMEOUT_SECONDS = 10.0
# A write that lost a deadlock (two conductors' triggers on the counters) is tried again.
WRITE_TRIES = 5
_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)

log = structlog.get_logger("podium.store.postgres")


def _spec_from_text(text: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        spec = jsondata.loads(text)
    except ValueError as exc:
        return None, f"the stored spec is not readable JSON ({exc})"
    if not isinstance(spec, dict):
        return None, "the stored spec is not a mapping"
    return spec, None


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


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparseable store_url)"
    host = info.get("host", "localhost")
    port = info.get("port", "5432")
    return f"postgresql://{host}:{port}/{info.get('dbname', '')}"


class _Refused(Exception):
    def __init__(self, conflict: Conflict) -> None:
        self.conflict = conflict


Cursor = psycopg.AsyncCursor[Any]


async def _each(cur: Cursor, sql: str, rows: Sequence[dict[str, Any]]) -> list[bool]:
    """Run `sql` (which answers a row when it matched) once per parameter set; whether each
    matched."""
    await cur.executemany(sql, rows, returning=True)
    hits = []
    while True:
        hits.append(await cur.fetchone() is not None)
        if not cur.nextset():
            return hits


async def _cas(cur: Cursor, table: Table[Any], sql: str, rows: Sequence[Any]) -> None:
    """Update (or insert) `rows`, each conditional; the first that did not match refuses the
    whole batch."""
    if not rows:
        return
    params = [table.params(r) for r in rows]
    if sql.lstrip().upper().startswith("INSERT"):
        for p in params:
            p["version"] = 1
    for row, hit in zip(rows, await _each(cur, sql, params), strict=True):
        if not hit:
            raise _Refused(Conflict(table.name, table.key_text(row)))


def _touched_jobs(batch: WriteBatch) -> set[str]:
    jobs = {j.job_id for j in batch.jobs} | set(batch.locks) | set(batch.specs)
    jobs |= {s.job_id for s in (*batch.new_sheets, *batch.sheets)}
    jobs |= {a.job_id for a in (*batch.new_attempts, *batch.attempts)}
    return jobs | {j.job_id for j in batch.deleted_jobs}


async def _lock(cur: Cursor, batch: WriteBatch) -> None:
    """Lock the rows the batch changes, never waiting for another writer's transaction."""
    for table, lock, exists, ids in (
        ("jobs", "lock_jobs", "existing_jobs", sorted(_touched_jobs(batch))),
        (
            "holds",
            "lock_holds",
            "existing_holds",
            sorted({h.hold_key for h in (*batch.holds, *batch.deleted_holds) if h.version}),
        ),
    ):
        if not ids:
            continue
        await cur.execute(Q[lock], {"ids": ids})
        got = {r[0] for r in await cur.fetchall()}
        missing = [i for i in ids if i not in got]
        if not missing:
            continue
        await cur.execute(Q[exists], {"ids": missing})
        busy = sorted(r[0] for r in await cur.fetchall())
        if busy:
            # Another conductor is writing it right now: its version is about to move.
            raise _Refused(Conflict(table, busy[0]))


async def _insert_job(cur: Cursor, new: NewJob) -> None:
    params = JOBS.params(new.job)
    params.update(version=1, total_sheets=0, completed_sheets=0, failed_sheets=0)
    params["spec_json"] = jsondata.dumps(new.spec)
    await cur.execute(Q["insert_job"], params)
    if cur.rowcount != 1:
        raise _Refused(Conflict("jobs", new.job.job_id))
    if new.job.labels:
        await cur.executemany(
            Q["insert_label"], [{"job_id": new.job.job_id, "label": lb} for lb in new.job.labels]
        )
    await _cas(cur, SHEETS, Q["insert_sheet"], new.sheets)


async def _apply(cur: Cursor, batches: Sequence[WriteBatch]) -> None:
    """Apply `batches` in order, one statement per table where rows of several batches can
    share it (each table's rows keep the batches' order, so versions chain)."""
    for batch in batches:
        await _lock(cur, batch)
    for batch in batches:
        for new in batch.new_jobs:
            await _insert_job(cur, new)
        await _cas(cur, JOBS, Q["update_job"], batch.jobs)
        if batch.locks:
            rows = [{"job_id": j, "version": v} for j, v in batch.locks.items()]
            for job_id, hit in zip(batch.locks, await _each(cur, Q["lock_job"], rows), strict=True):
                if not hit:
                    raise _Refused(Conflict("jobs", job_id))
        for job_id, spec in batch.specs.items():
            labels = list(spec.get("labels") or [])
            await cur.execute(
                Q["update_job_spec"],
                {
                    "job_id": job_id,
                    "spec_json": jsondata.dumps(spec),
                    "labels_json": json.dumps(labels),
                },
            )
            await cur.execute(Q["delete_labels"], {"job_id": job_id})
            if labels:
                await cur.executemany(
                    Q["insert_label"], [{"job_id": job_id, "label": lb} for lb in labels]
                )
    await _cas(cur, SHEETS, Q["insert_sheet"], [s for b in batches for s in b.new_sheets])
    await _cas(cur, SHEETS, Q["update_sheet"], [s for b in batches for s in b.sheets])
    await _cas(cur, ATTEMPTS, Q["insert_attempt"], [a for b in batches for a in b.new_attempts])
    await _cas(cur, ATTEMPTS, Q["update_attempt"], [a for b in batches for a in b.attempts])
    holds = [h for b in batches for h in b.holds]
    await _cas(cur, HOLDS, Q["insert_hold"], [h for h in holds if h.version == 0])
    await _cas(cur, HOLDS, Q["update_hold"], [h for h in holds if h.version != 0])
    for batch in batches:
        await _cas(cur, HOLDS, Q["delete_hold"], batch.deleted_holds)
        for job in batch.deleted_jobs:
            params = {"job_id": job.job_id, "version": job.version}
            await cur.execute(Q["delete_terminal_job"], params)
            if await cur.fetchone() is None:
                raise _Refused(Conflict("jobs", job.job_id))
        await _cas(cur, TASKS, Q["insert_task"], batch.new_tasks)
        if batch.deleted_tasks:
            await cur.executemany(Q["delete_task"], [{"task_id": t} for t in batch.deleted_tasks])
        if batch.finished_tasks:
            await cur.executemany(Q["finish_task"], [TASKS.params(t) for t in batch.finished_tasks])


async def _one_by_one(conn: Conn, batches: Sequence[WriteBatch]) -> list[Conflict | None]:
    results: list[Conflict | None] = []
    for batch in batches:
        # Each batch in its own savepoint: one that conflicts is undone alone.
        try:
            async with conn.transaction():
                await _apply(conn.cursor(), [batch])
        except _Refused as refused:
            results.append(refused.conflict)
        else:
            results.append(None)
    return results


class PostgresStore:
    """The `Store` protocol over one PostgreSQL schema."""

    def __init__(self, url: str, pool: AsyncConnectionPool[Conn], schema: str) -> None:
        self.url = url
        self.schema = schema
        self._pool = pool
        # Notifications carry it, so a store ignores its own.
        self.origin = secrets.token_hex(8)
        self.channel = f"podium:{schema}"
        self._listener = Listener(url, self.channel, self.origin)

    @classmethod
    async def open(cls, url: str, conductor_id: str = "") -> PostgresStore:
        name = f"podium {conductor_id or socket.gethostname()}"[:63]

        async def configure(conn: Conn) -> None:
            # Times come back as UTC datetimes whatever the server's default zone.
            await conn.execute("SET TIME ZONE 'UTC'")

        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
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
        return cls(url, pool, schema)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._pool.close()

    # ----- plumbing -------------------------------------------------------------------------

    async def _run(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        with anyio.CancelScope(shield=True):
            async with self._pool.connection() as conn:
                result = await fn(conn)
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
                results = await self._run(lambda conn: self._commit(conn, batches))
            except _RETRYABLE as exc:
                if attempt == WRITE_TRIES:
                    raise
                log.info("write lost a lock race, trying again", error=str(exc))
                await anyio.sleep(0.01 * attempt)
                continue
            break
        return Written(results, _nothing)

    async def _commit(self, conn: Conn, batches: Sequence[WriteBatch]) -> list[Conflict | None]:
        """All batches in one transaction. Conflicts are rare, so the batches are first
        applied together; only if one is refused are they applied again one savepoint each,
        to leave out just the refused ones."""
        results: list[Conflict | None] | None = None
        try:
            async with conn.transaction():
                await _apply(conn.cursor(), batches)
                await self._notify(conn, batches)
        except _Refused as refused:
            if len(batches) == 1:
                return [refused.conflict]
        else:
            return [None] * len(batches)
        async with conn.transaction():
            results = await _one_by_one(conn, batches)
            landed = [b for b, r in zip(batches, results, strict=True) if r is None]
            await self._notify(conn, landed)
        return results

    async def _notify(self, conn: Conn, batches: Sequence[WriteBatch]) -> None:
        jobs: set[str] = set()
        whole: set[str] = set()
        sheets: dict[str, set[int]] = {}
        holds = False
        for batch in batches:
            jobs |= _touched_jobs(batch) | {n.job.job_id for n in batch.new_jobs}
            # Jobs that gained sheets or a spec, or came or went, are re-read whole.
            whole |= {n.job.job_id for n in batch.new_jobs} | set(batch.specs)
            whole |= {s.job_id for s in batch.new_sheets} | {j.job_id for j in batch.deleted_jobs}
            for sheet in batch.sheets:
                sheets.setdefault(sheet.job_id, set()).add(sheet.sheet_num)
            holds = holds or bool(batch.holds or batch.deleted_holds)
        if not jobs and not holds:
            return
        detail = {j: frozenset(sheets.get(j, ())) for j in jobs - whole}
        change = StoreChange(frozenset(jobs), detail, holds)
        for payload in change_payloads(self.origin, change):
            await conn.execute(Q["notify"], {"channel": self.channel, "payload": payload})

    async def commit(self, batches: Sequence[WriteBatch]) -> list[Conflict | None]:
        return (await self.write(batches)).results

    async def renew_leases(self, conductor_id: str, until: Any) -> int:
        async def run(conn: Conn) -> int:
            cur = await conn.execute(
                Q["renew_leases"], {"conductor_id": conductor_id, "until": until}
            )
            return int(cur.rowcount)

        return await self._run(run)

    # ----- several conductors ----------------------------------------------------------------

    @property
    def shared(self) -> bool:
        return True

    async def watch(self, on_change: OnChange) -> None:
        await self._listener.run(on_change)

    async def announce(self, change: StoreChange) -> None:
        async def run(conn: Conn) -> None:
            for payload in change_payloads(self.origin, change):
                await conn.execute(Q["notify"], {"channel": self.channel, "payload": payload})

        await self._run(run)

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
            spec, error = _spec_from_text(found[-1])
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
        return None if text is None else _spec_from_text(text)[0]

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

"""SQLite store: the `Store` protocol over one database file (WAL, foreign keys, migrations).

One writer connection and a small pool of reader connections (connections.py). Reads run in
worker threads, one call per connection at a time, each read whole in its thread; in WAL
mode a reader always sees the last committed state, never a half-written one. A write runs
its transaction where it is called (commit.py), then waits for the fsync that makes it
durable (durability.py); a write of many rows (a job of thousands of sheets) runs its
transaction in a worker thread instead, so it does not hold every other client meanwhile.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio

from podium.core.models import (
    JobStatus,
    SheetStatus,
    format_time,
    parse_optional_time,
    parse_time,
)
from podium.core.store.base import (
    MAX_LIST_LIMIT,
    Conflict,
    JobFiles,
    OnChange,
    Overview,
    StoreChange,
    WriteBatch,
    Written,
)
from podium.core.store.codec import Table, decode_cursor, encode_cursor, spec_from_text
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
from podium.core.store.sqlite.codec import ATTEMPTS, CONDUCTORS, HOLDS, JOBS, SHEETS, TASKS, Q
from podium.core.store.sqlite.commit import commit
from podium.core.store.sqlite.connections import open_connections
from podium.core.store.sqlite.durability import WalSync

T = TypeVar("T")
_JOB_STATUSES = {s.value: s for s in JobStatus}
RECLAIM_PAGES_PER_STEP = 512


def _statuses_json(statuses: Sequence[SheetStatus | JobStatus] | None) -> str | None:
    return None if not statuses else json.dumps([s.value for s in statuses])


def _pending_approvals(conn: sqlite3.Connection, limit: int) -> tuple[list[SheetRow], int]:
    rows = conn.execute(Q["select_pending_approvals"], {"limit": limit}).fetchall()
    total = conn.execute(Q["count_pending_approvals"]).fetchone()[0]
    return [SHEETS.decode(r) for r in rows], int(total)


async def _nothing() -> None:
    return None


# A batch with more rows than this commits in a worker thread: inserting 10,000 sheets took
# ~2 s on the event loop, and every other client waited that long. Smaller ones (nearly all:
# one transition each) stay on the loop, where they take well under a millisecond.
THREADED_WRITE_ROWS = 500


def _rows_in(batches: Sequence[WriteBatch]) -> int:
    return sum(
        len(b.new_sheets) + len(b.sheets) + len(b.new_attempts) + len(b.attempts)
        + sum(len(new.sheets) for new in b.new_jobs)
        for b in batches
    )  # fmt: skip


class SQLiteStore:
    """The `Store` protocol over one SQLite file."""

    def __init__(
        self, path: Path, writer: sqlite3.Connection, readers: list[sqlite3.Connection]
    ) -> None:
        self.path = path
        self._writer = writer
        # The last reader is the checkpointer's: a checkpoint runs beside reads and writes.
        self._wal = WalSync(path, readers[-1])
        self._readers = list(readers[:-1])
        self._all_readers = tuple(readers)
        self._read_slots = anyio.Semaphore(len(self._readers))
        self._read_limiter = anyio.CapacityLimiter(len(self._readers))
        # Set while a write runs in a worker thread: the writer connection is that thread's
        # until it is done, and every other write waits for it (see `_writer_free`).
        self._threaded_write: anyio.Event | None = None

    @classmethod
    async def open(cls, path: Path) -> SQLiteStore:
        writer, readers = await anyio.to_thread.run_sync(open_connections, path)
        return cls(path, writer, readers)

    async def close(self) -> None:
        # A write in a worker thread still has the writer connection: it ends first.
        await self._writer_free()

        def close_all() -> None:
            for conn in (*self._all_readers, self._writer):
                conn.close()
            self._wal.close()

        await anyio.to_thread.run_sync(close_all, limiter=self._wal.limiter)

    # ----- plumbing -------------------------------------------------------------------------

    async def _writer_free(self) -> None:
        # No checkpoint when no threaded write runs: a write on the loop starts at once, as
        # it always did.
        while self._threaded_write is not None:
            await self._threaded_write.wait()

    async def _in_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(writer)` in a worker thread, to its end even if the caller is cancelled: a
        transaction it commits must reach the caller (who applies it to its view)."""
        done = self._threaded_write = anyio.Event()
        try:
            with anyio.CancelScope(shield=True):
                result = await anyio.to_thread.run_sync(fn, self._writer)
        finally:
            self._threaded_write = None
            done.set()
        return result

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a write transaction here (no await inside it), then make it durable."""
        await self._writer_free()
        result = fn(self._writer)
        await self._wal.durable(self._wal.committed())
        return result

    async def reclaim_space(self) -> int:
        """Give the pages freed by deletions back to the file system, a few at a time (each
        step is a short write transaction, so other writes interleave), then truncate the
        write-ahead log. Returns the pages freed."""
        freed = 0
        while True:

            def step(conn: sqlite3.Connection) -> int:
                before = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
                if before:
                    conn.execute(f"PRAGMA incremental_vacuum({RECLAIM_PAGES_PER_STEP})").fetchall()
                return before - int(conn.execute("PRAGMA freelist_count").fetchone()[0])

            done = await self._write(step)
            if done <= 0:
                break
            freed += done

        await self._wal.truncate()
        return freed

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._read_slots:
            conn = self._readers.pop()
            try:
                return await anyio.to_thread.run_sync(fn, conn, limiter=self._read_limiter)
            finally:
                self._readers.append(conn)

    async def _snapshot(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Several SELECTs that see one committed state."""

        def run(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        return await self._read(run)

    async def _rows(self, table: Table[T], sql: str, params: dict[str, Any]) -> list[T]:
        def run(conn: sqlite3.Connection) -> list[T]:
            return [table.decode(r) for r in conn.execute(sql, params).fetchall()]

        return await self._read(run)

    async def _row(self, table: Table[T], sql: str, params: dict[str, Any]) -> T | None:
        rows = await self._rows(table, sql, params)
        return rows[0] if rows else None

    # ----- writing --------------------------------------------------------------------------

    async def write(self, batches: Sequence[WriteBatch]) -> Written:
        if not batches:
            return Written([], _nothing)
        await self._writer_free()
        if _rows_in(batches) > THREADED_WRITE_ROWS:
            results = await self._in_thread(lambda conn: commit(conn, batches))
        else:
            results = commit(self._writer, batches)
        generation = self._wal.committed()
        return Written(results, lambda: self._wal.durable(generation))

    async def commit(self, batches: Sequence[WriteBatch]) -> list[Conflict | None]:
        written = await self.write(batches)
        await written.durable()
        return written.results

    async def renew_leases(self, conductor_id: str, until: Any, renewed_at: Any) -> int:
        params = {
            "conductor_id": conductor_id,
            "until": format_time(until),
            "renewed_at": format_time(renewed_at),
        }

        def run(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(Q["renew_leases"], params)
            return int(cursor.rowcount)

        return await self._write(run)

    # ----- several conductors ----------------------------------------------------------------

    @property
    def shared(self) -> bool:
        # A SQLite file is one conductor's: its readers may be other processes on the host,
        # but conductors that share jobs use PostgreSQL (docs/operations.md).
        return False

    async def watch(self, on_change: OnChange) -> None:
        await anyio.sleep_forever()

    async def announce(self, change: StoreChange) -> None:
        return None

    async def heartbeat(self, conductor: ConductorRow) -> None:
        params = CONDUCTORS.params(conductor)
        await self._write(lambda conn: conn.execute(Q["upsert_conductor"], params))

    async def conductors(self) -> list[ConductorRow]:
        return await self._rows(CONDUCTORS, Q["select_conductors"], {})

    async def leave(self, conductor_id: str) -> None:
        params = {"conductor_id": conductor_id}
        await self._write(lambda conn: conn.execute(Q["delete_conductor"], params))

    async def job_versions(self) -> dict[str, int]:
        def run(conn: sqlite3.Connection) -> dict[str, int]:
            return {j: int(v) for j, v in conn.execute(Q["select_job_versions"]).fetchall()}

        return await self._read(run)

    # ----- reading, for the engine ----------------------------------------------------------

    async def load_job(self, job_id: str) -> JobRecord | None:
        def run(conn: sqlite3.Connection) -> JobRecord | None:
            found = conn.execute(Q["select_job_with_spec"], {"job_id": job_id}).fetchone()
            if found is None:
                return None
            sheets = conn.execute(Q["select_sheets"], {"job_id": job_id}).fetchall()
            spec, error = spec_from_text(found[-1])
            return JobRecord(
                JOBS.decode(found[:-1]), [SHEETS.decode(s) for s in sheets], spec, error
            )

        return await self._snapshot(run)

    async def load_rows(
        self, job_id: str, sheet_nums: Sequence[int]
    ) -> tuple[JobRow, list[SheetRow]] | None:
        params = {"job_id": job_id, "nums": json.dumps(list(sheet_nums))}

        def run(conn: sqlite3.Connection) -> tuple[JobRow, list[SheetRow]] | None:
            found = conn.execute(Q["select_job"], {"job_id": job_id}).fetchone()
            if found is None:
                return None
            rows = conn.execute(Q["select_some_sheets"], params).fetchall()
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
        def run(conn: sqlite3.Connection) -> dict[str, Any] | None:
            found = conn.execute(Q["select_spec"], {"job_id": job_id}).fetchone()
            return None if found is None else spec_from_text(found[0])[0]

        return await self._read(run)

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
            "statuses": _statuses_json(statuses),
            "offset": offset,
            "limit": limit,
        }

        def run(conn: sqlite3.Connection) -> tuple[JobRow, list[SheetRow], int] | None:
            found = conn.execute(Q["select_job"], {"job_id": job_id}).fetchone()
            if found is None:
                return None
            rows = conn.execute(Q["select_sheets_page"], params).fetchall()
            total = conn.execute(Q["count_sheets_matching"], params).fetchone()[0]
            return JOBS.decode(found), [SHEETS.decode(r) for r in rows], int(total)

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

        def run(conn: sqlite3.Connection) -> tuple[list[AttemptRow], int]:
            rows = conn.execute(Q["select_attempts"], params).fetchall()
            total = conn.execute(Q["count_attempts"], params).fetchone()[0]
            return [ATTEMPTS.decode(r) for r in rows], int(total)

        return await self._snapshot(run)

    def listing_sql(self, query: JobQuery) -> tuple[str, dict[str, Any]]:
        """The one SELECT a listing runs (public so tests can check its query plan)."""
        clauses: list[str] = []
        params: dict[str, Any] = {"limit": min(max(query.limit, 1), MAX_LIST_LIMIT) + 1}
        if query.name is not None:
            clauses.append("name = :name")
            params["name"] = query.name
        if query.label is not None:
            clauses.append(
                "EXISTS (SELECT 1 FROM job_labels l WHERE l.job_id = jobs.job_id "
                "AND l.label = :label)"
            )
            params["label"] = query.label
        if query.cursor:
            params["cursor_at"], params["cursor_id"] = decode_cursor(query.cursor)
            clauses.append("(submitted_at, job_id) < (:cursor_at, :cursor_id)")
        order = " ORDER BY submitted_at DESC, job_id DESC"
        base = Q["select_jobs_base"]
        if query.statuses:
            # One index-ordered branch per status, merged: SQLite reads only the page it
            # returns instead of sorting every job in those statuses.
            branches = []
            for i, status in enumerate(dict.fromkeys(query.statuses)):
                params[f"status_{i}"] = status.value
                where = " AND ".join([f"status = :status_{i}", *clauses])
                branches.append(f"SELECT * FROM ({base} WHERE {where}{order})")
            sql = " UNION ALL ".join(branches) + order + " LIMIT :limit"
        else:
            sql = base
            if clauses:
                sql += " WHERE " + " AND ".join(clauses)
            sql += order + " LIMIT :limit"
        return sql, params

    async def query_jobs(self, query: JobQuery) -> tuple[list[JobRow], str | None]:
        sql, params = self.listing_sql(query)
        rows = await self._rows(JOBS, sql, params)
        page_size = params["limit"] - 1
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
            JOBS, Q["select_jobs_by_statuses"], {"statuses": _statuses_json(statuses)}
        )

    async def job_files(self) -> list[JobFiles]:
        def run(conn: sqlite3.Connection) -> list[JobFiles]:
            status_of = _JOB_STATUSES.__getitem__  # an enum call costs ten times a lookup
            return [
                JobFiles(job_id, status_of(status), parse_optional_time(completed), snapshot)
                for job_id, status, completed, snapshot in conn.execute(Q["select_job_files"])
            ]

        return await self._read(run)

    async def jobs_with_pending_hooks(self) -> list[JobRow]:
        return await self._rows(JOBS, Q["select_jobs_with_pending_hooks"], {})

    async def count_jobs_by_status(self) -> dict[str, int]:
        def run(conn: sqlite3.Connection) -> dict[str, int]:
            return {s: int(n) for s, n in conn.execute(Q["count_jobs_by_status"]).fetchall()}

        return await self._read(run)

    async def count_running_sheets(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return int(conn.execute(Q["count_running_sheets"]).fetchone()[0])

        return await self._read(run)

    async def pending_approvals(self, limit: int) -> tuple[list[SheetRow], int]:
        return await self._snapshot(lambda conn: _pending_approvals(conn, limit))

    async def overview(self, approvals_limit: int) -> Overview:
        def run(conn: sqlite3.Connection) -> Overview:
            counts = {s: int(n) for s, n in conn.execute(Q["count_jobs_by_status"]).fetchall()}
            return Overview(counts, *_pending_approvals(conn, approvals_limit))

        return await self._snapshot(run)

    async def get_task(self, task_id: str) -> TaskRow | None:
        return await self._row(TASKS, Q["select_task"], {"task_id": task_id})

    async def open_tasks(self, job_ids: Sequence[str]) -> list[TaskRow]:
        params = {"job_ids": json.dumps(list(job_ids))}
        return await self._rows(TASKS, Q["select_open_tasks"], params)

    async def expired_tasks(self, now: datetime, limit: int) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            params = {"now": format_time(now), "limit": limit}
            return [str(r[0]) for r in conn.execute(Q["select_expired_tasks"], params)]

        return await self._read(run)

    async def next_task_expiry(self) -> datetime | None:
        def run(conn: sqlite3.Connection) -> datetime | None:
            found = conn.execute(Q["select_next_task_expiry"]).fetchone()
            return parse_time(found[0]) if found and found[0] else None

        return await self._read(run)

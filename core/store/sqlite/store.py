"""SQLite store: the `Store` protocol over one database file (WAL, foreign keys, migrations).

One writer connection and a small pool of reader connections. Reads run in worker threads,
one call per connection at a time, each read whole in its thread. A commit runs its
statements where it is called (they are CPU work of microseconds, and a worker thread would
hand the GIL back and forth once per statement), then waits in a worker thread for the one
slow part, the fsync of the write-ahead log: SQLite's `synchronous = NORMAL` writes the log
without syncing it, and the explicit fsync before `commit` returns makes each commit as
durable as `synchronous = FULL` would. Checkpoints run in that thread too, never inside a
commit. A commit has no await between BEGIN and COMMIT, so a cancelled caller can never leave
the connection inside a transaction; in WAL mode a reader always sees the last committed
state, never a half-written one.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio

from podium.core import jsondata
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
    NewJob,
    OnChange,
    Overview,
    StoreChange,
    WriteBatch,
    Written,
)
from podium.core.store.codec import Table, decode_cursor, encode_cursor, load_queries
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
from podium.core.store.sqlite.codec import (
    ATTEMPTS,
    CONDUCTORS,
    HOLDS,
    JOBS,
    SHEETS,
    TABLES,
    TASKS,
)
from podium.core.store.sqlite.schema import check_not_newer, migrate

T = TypeVar("T")
READERS = 2
# Checkpoint (copy the log into the database) once the log has grown past this.
CHECKPOINT_BYTES = 4 * 1024 * 1024
_UNIQUE_ERRORS = frozenset({"SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"})


Q = load_queries("podium.core.store.sqlite", TABLES)
_JOB_STATUSES = {s.value: s for s in JobStatus}


def _statuses_json(statuses: Sequence[SheetStatus | JobStatus] | None) -> str | None:
    return None if not statuses else json.dumps([s.value for s in statuses])


def _spec_from_text(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """A stored spec that cannot be decoded must fail its own job, not every read of the
    jobs table, so the problem travels with the record instead of raising here."""
    try:
        spec = jsondata.loads(text)
    except ValueError as exc:
        return None, f"the stored spec is not readable JSON ({exc})"
    if not isinstance(spec, dict):
        return None, "the stored spec is not a mapping"
    return spec, None


def _pending_approvals(conn: sqlite3.Connection, limit: int) -> tuple[list[SheetRow], int]:
    rows = conn.execute(Q["select_pending_approvals"], {"limit": limit}).fetchall()
    total = conn.execute(Q["count_pending_approvals"]).fetchone()[0]
    return [SHEETS.decode(r) for r in rows], int(total)


async def _nothing() -> None:
    return None


class _Refused(Exception):
    def __init__(self, conflict: Conflict) -> None:
        self.conflict = conflict


def _execute_many(
    conn: sqlite3.Connection, table: Table[Any], sql: str, rows: Sequence[Any]
) -> None:
    if not rows:
        return
    cursor = conn.executemany(sql, [table.params(r) for r in rows])
    if cursor.rowcount != len(rows):
        raise _Refused(Conflict(table.name, _stale_key(conn, table, rows)))


def _stale_key(conn: sqlite3.Connection, table: Table[Any], rows: Sequence[Any]) -> str:
    """Which of `rows` no longer has the version it was read at (for the conflict report)."""
    where = " AND ".join(f"{k} = ?" for k in table.key)
    for row in rows:
        found = conn.execute(
            f"SELECT version FROM {table.name} WHERE {where}",
            [getattr(row, k) for k in table.key],
        ).fetchone()
        if found is None or found[0] != row.version:
            return table.key_text(row)
    return "?"


def _insert(conn: sqlite3.Connection, table: Table[Any], sql: str, rows: Sequence[Any]) -> None:
    for row in rows:
        params = table.params(row)
        params["version"] = 1
        try:
            conn.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            if getattr(exc, "sqlite_errorname", "") in _UNIQUE_ERRORS:
                raise _Refused(Conflict(table.name, table.key_text(row))) from None
            raise


def _apply(conn: sqlite3.Connection, batches: Sequence[WriteBatch]) -> None:
    """Apply `batches` in order, one statement per table where rows of several batches can
    share it (each table's rows keep the batches' order, so versions chain)."""
    for batch in batches:
        for new in batch.new_jobs:
            _insert_job(conn, new)
        # Job rows in batch order: one batch may edit a job another locks.
        _execute_many(conn, JOBS, Q["update_job"], batch.jobs)
        if batch.locks:
            _lock(conn, batch.locks)
        for job_id, spec in batch.specs.items():
            labels = list(spec.get("labels") or [])
            conn.execute(
                Q["update_job_spec"],
                {
                    "job_id": job_id,
                    "spec_json": jsondata.dumps(spec),
                    "labels_json": json.dumps(labels),
                },
            )
            conn.execute(Q["delete_labels"], {"job_id": job_id})
            conn.executemany(Q["insert_label"], [{"job_id": job_id, "label": lb} for lb in labels])
    _insert(conn, SHEETS, Q["insert_sheet"], [s for b in batches for s in b.new_sheets])
    _execute_many(conn, SHEETS, Q["update_sheet"], [s for b in batches for s in b.sheets])
    _insert(conn, ATTEMPTS, Q["insert_attempt"], [a for b in batches for a in b.new_attempts])
    _execute_many(conn, ATTEMPTS, Q["update_attempt"], [a for b in batches for a in b.attempts])
    holds = [h for b in batches for h in b.holds]
    _insert(conn, HOLDS, Q["insert_hold"], [h for h in holds if h.version == 0])
    _execute_many(conn, HOLDS, Q["update_hold"], [h for h in holds if h.version != 0])
    for batch in batches:
        for hold in batch.deleted_holds:
            if conn.execute(Q["delete_hold"], HOLDS.params(hold)).rowcount != 1:
                raise _Refused(Conflict("holds", hold.hold_key))
        for job in batch.deleted_jobs:
            params = {"job_id": job.job_id, "version": job.version}
            if conn.execute(Q["delete_terminal_job"], params).rowcount != 1:
                raise _Refused(Conflict("jobs", job.job_id))
        _insert(conn, TASKS, Q["insert_task"], batch.new_tasks)
        conn.executemany(Q["delete_task"], [{"task_id": t} for t in batch.deleted_tasks])
        conn.executemany(Q["finish_task"], [TASKS.params(t) for t in batch.finished_tasks])


def _lock(conn: sqlite3.Connection, locks: dict[str, int]) -> None:
    params = [{"job_id": j, "version": v} for j, v in locks.items()]
    if conn.executemany(Q["lock_job"], params).rowcount == len(params):
        return
    for job_id, version in locks.items():
        found = conn.execute(Q["select_job_version"], {"job_id": job_id}).fetchone()
        if found is None or found[0] != version + 1:
            raise _Refused(Conflict("jobs", job_id))
    raise _Refused(Conflict("jobs", next(iter(locks))))


def _insert_job(conn: sqlite3.Connection, new: NewJob) -> None:
    params = JOBS.params(new.job)
    # The sheet triggers count the sheets as they are inserted below.
    params.update(version=1, total_sheets=0, completed_sheets=0, failed_sheets=0)
    params["spec_json"] = jsondata.dumps(new.spec)
    try:
        conn.execute(Q["insert_job"], params)
    except sqlite3.IntegrityError as exc:
        if getattr(exc, "sqlite_errorname", "") in _UNIQUE_ERRORS:
            raise _Refused(Conflict("jobs", new.job.job_id)) from None
        raise
    conn.executemany(
        Q["insert_label"], [{"job_id": new.job.job_id, "label": lb} for lb in new.job.labels]
    )
    _insert(conn, SHEETS, Q["insert_sheet"], new.sheets)


def _commit(conn: sqlite3.Connection, batches: Sequence[WriteBatch]) -> list[Conflict | None]:
    """All batches in one transaction. Conflicts are rare (another writer on the store), so
    the batches are first applied together; only if one is refused are they applied again
    one savepoint each, to leave out just the refused ones."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        try:
            _apply(conn, batches)
        except _Refused as refused:
            conn.execute("ROLLBACK")
            if len(batches) == 1:
                return [refused.conflict]
            conn.execute("BEGIN IMMEDIATE")
            results = _one_by_one(conn, batches)
        else:
            results = [None] * len(batches)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


def _one_by_one(conn: sqlite3.Connection, batches: Sequence[WriteBatch]) -> list[Conflict | None]:
    results: list[Conflict | None] = []
    for batch in batches:
        # Each batch in its own savepoint: one that conflicts is undone alone.
        conn.execute("SAVEPOINT batch")
        try:
            _apply(conn, [batch])
        except _Refused as refused:
            conn.execute("ROLLBACK TO batch")
            results.append(refused.conflict)
        else:
            results.append(None)
        conn.execute("RELEASE batch")
    return results


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in ("foreign_keys = ON", "synchronous = FULL", "busy_timeout = 10000"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def _writer_mode(conn: sqlite3.Connection) -> None:
    # The log is fsynced by SQLiteStore._sync after every commit instead (see the module
    # docstring): a transition the user was told about survives power loss, not just a crash.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")


def _incremental_vacuum_mode(conn: sqlite3.Connection) -> None:
    # Pages that `clear` frees go back to the file system in small steps (reclaim_space)
    # rather than never: a database never shrank after a clear. Switching an existing
    # database over takes one VACUUM, done here while nothing else uses it yet.
    if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) != 2:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")


def _open_connections(path: Path) -> tuple[sqlite3.Connection, list[sqlite3.Connection]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = _connect(path)
    try:
        # Refuse a too-new database before anything (even the journal mode) touches it.
        check_not_newer(writer, path)
        writer.execute("PRAGMA journal_mode = WAL")
        migrate(writer, path)
        _incremental_vacuum_mode(writer)
        _writer_mode(writer)
        readers = [_connect(path) for _ in range(READERS + 1)]
    except BaseException:
        writer.close()
        raise
    return writer, readers


RECLAIM_PAGES_PER_STEP = 512


class SQLiteStore:
    """The `Store` protocol over one SQLite file."""

    def __init__(
        self, path: Path, writer: sqlite3.Connection, readers: list[sqlite3.Connection]
    ) -> None:
        self.path = path
        self._wal_path = Path(f"{path}-wal")
        self._writer = writer
        # The last reader is the checkpointer's: a checkpoint runs beside reads and writes.
        self._checkpointer = readers[-1]
        self._readers = list(readers[:-1])
        self._all_readers = tuple(readers)
        self._read_slots = anyio.Semaphore(len(self._readers))
        self._read_limiter = anyio.CapacityLimiter(len(self._readers))
        self._sync_limiter = anyio.CapacityLimiter(1)
        self._sync_lock = anyio.Lock()
        self._written = 0  # transactions committed
        self._synced = 0  # ... and made durable
        self._wal_fd: int | None = None
        self._wal_inode: int | None = None

    @classmethod
    async def open(cls, path: Path) -> SQLiteStore:
        writer, readers = await anyio.to_thread.run_sync(_open_connections, path)
        return cls(path, writer, readers)

    async def close(self) -> None:
        def close_all() -> None:
            for conn in (*self._all_readers, self._writer):
                conn.close()
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None

        await anyio.to_thread.run_sync(close_all, limiter=self._sync_limiter)

    # ----- plumbing -------------------------------------------------------------------------

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a write transaction here (no await inside it), then make it durable."""
        result = fn(self._writer)
        self._written += 1
        await self._durable(self._written)
        return result

    async def _durable(self, generation: int) -> None:
        """Wait until transaction number `generation` is durable. One fsync covers every
        transaction committed before it started, so waiters share fsyncs."""
        if self._synced >= generation:
            return
        with anyio.CancelScope(shield=True):
            async with self._sync_lock:
                if self._synced >= generation:
                    return
                target = self._written
                await anyio.to_thread.run_sync(self._sync, limiter=self._sync_limiter)
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

        def truncate() -> None:
            self._checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

        await anyio.to_thread.run_sync(truncate, limiter=self._sync_limiter)
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
        results = _commit(self._writer, batches)
        self._written += 1
        generation = self._written
        return Written(results, lambda: self._durable(generation))

    async def commit(self, batches: Sequence[WriteBatch]) -> list[Conflict | None]:
        written = await self.write(batches)
        await written.durable()
        return written.results

    async def renew_leases(self, conductor_id: str, until: Any) -> int:
        def run(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                Q["renew_leases"], {"conductor_id": conductor_id, "until": format_time(until)}
            )
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
            spec, error = _spec_from_text(found[-1])
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
            return None if found is None else _spec_from_text(found[0])[0]

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

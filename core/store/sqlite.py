"""SQLite store: implements both `StateBackend` and `JobRegistry` over one database.

One writer connection (serialised by a lock, explicit `BEGIN IMMEDIATE` transactions) and one
reader connection: in WAL mode the reader always sees the last committed state, never a
half-written transition of a concurrent writer.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

from podium.core.models import (
    ErrorCategory,
    HistoryEntry,
    JobDetail,
    JobStatistics,
    JobStatus,
    JobSummary,
    PauseReason,
    SheetStatus,
    format_time,
    parse_time,
    utcnow,
)
from podium.core.store.rows import AttemptRow, JobQuery, JobRow, RateLimitRow, SheetRow
from podium.core.store.schema import check_not_newer, migrate
from podium.core.store.sqlite_codec import (
    attempt_from_row,
    attempt_params,
    decode_cursor,
    encode_cursor,
    job_from_row,
    job_params,
    sheet_from_row,
    sheet_params,
    statuses_json,
)

_NAME_MARKER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
MAX_LIST_LIMIT = 500


def _load_queries() -> dict[str, str]:
    text = resources.files("podium.core.store").joinpath("queries.sql").read_text()
    parts = _NAME_MARKER.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


Q = _load_queries()


class SQLiteStore:
    """Both store interfaces over one SQLite file (WAL, foreign keys, numbered migrations)."""

    supports_execution_history = True

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = anyio.Lock()
        self._read_lock = anyio.Lock()

    @classmethod
    async def open(cls, path: Path) -> SQLiteStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await cls._connect(path)
        try:
            # Refuse a too-new database before anything (even the journal mode) touches it.
            await check_not_newer(writer, path)
            await writer.execute("PRAGMA journal_mode = WAL")
            await migrate(writer, path)
            reader = await cls._connect(path)
        except BaseException:
            await writer.close()
            raise
        return cls(path, writer, reader)

    @staticmethod
    async def _connect(path: Path) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        # FULL: a transition the user was told about must survive power loss, not just a crash.
        for pragma in ("foreign_keys = ON", "synchronous = FULL", "busy_timeout = 10000"):
            await conn.execute(f"PRAGMA {pragma}")
        return conn

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            # Shielded: a cancellation landing while BEGIN is in flight would otherwise leave
            # the connection inside a transaction that nobody ends.
            with anyio.CancelScope(shield=True):
                await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._writer.execute("ROLLBACK")
                raise
            else:
                with anyio.CancelScope(shield=True):
                    await self._writer.execute("COMMIT")

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[aiosqlite.Connection]:
        """A read transaction: several SELECTs see one consistent committed state."""
        async with self._read_lock:
            with anyio.CancelScope(shield=True):
                await self._reader.execute("BEGIN")
            try:
                yield self._reader
            finally:
                with anyio.CancelScope(shield=True):
                    await self._reader.execute("COMMIT")

    async def _fetchall(self, sql: str, params: dict[str, Any]) -> list[sqlite3.Row]:
        async with self._snapshot() as conn, conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def _fetchone(self, sql: str, params: dict[str, Any]) -> sqlite3.Row | None:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    # ----- row primitives -------------------------------------------------------------------

    async def create_job(self, job: JobRow, sheets: Sequence[SheetRow]) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["insert_job"], job_params(job))
            await conn.executemany(
                Q["insert_label"], [{"job_id": job.job_id, "label": lb} for lb in job.labels]
            )
            await conn.executemany(Q["upsert_sheet"], [sheet_params(s) for s in sheets])
            await conn.execute(Q["refresh_job_progress"], {"job_id": job.job_id})

    async def write(
        self,
        job: JobRow | None = None,
        sheets: Sequence[SheetRow] = (),
        attempts: Sequence[AttemptRow] = (),
    ) -> None:
        job_ids = {s.job_id for s in sheets} | {a.job_id for a in attempts}
        if job is not None:
            job_ids.add(job.job_id)
        async with self._transaction() as conn:
            if job is not None:
                await conn.execute(Q["update_job"], job_params(job))
                await conn.execute(Q["delete_labels"], {"job_id": job.job_id})
                await conn.executemany(
                    Q["insert_label"], [{"job_id": job.job_id, "label": lb} for lb in job.labels]
                )
            if sheets:
                await conn.executemany(Q["upsert_sheet"], [sheet_params(s) for s in sheets])
            if attempts:
                await conn.executemany(Q["upsert_attempt"], [attempt_params(a) for a in attempts])
            for job_id in job_ids:
                await conn.execute(Q["refresh_job_progress"], {"job_id": job_id})

    async def get_job(self, job_id: str) -> JobRow | None:
        row = await self._fetchone(Q["select_job"], {"job_id": job_id})
        return None if row is None else job_from_row(row)

    async def get_sheets(self, job_id: str) -> list[SheetRow]:
        return [
            sheet_from_row(r) for r in await self._fetchall(Q["select_sheets"], {"job_id": job_id})
        ]

    async def get_sheet(self, job_id: str, sheet_num: int) -> SheetRow | None:
        row = await self._fetchone(Q["select_sheet"], {"job_id": job_id, "sheet_num": sheet_num})
        return None if row is None else sheet_from_row(row)

    async def get_sheets_page(
        self,
        job_id: str,
        statuses: Sequence[SheetStatus] | None,
        offset: int,
        limit: int,
    ) -> tuple[list[SheetRow], int]:
        params = {
            "job_id": job_id,
            "statuses": statuses_json(statuses),
            "offset": offset,
            "limit": limit,
        }
        async with self._snapshot() as conn:
            async with conn.execute(Q["select_sheets_page"], params) as cursor:
                rows = await cursor.fetchall()
            async with conn.execute(Q["count_sheets_matching"], params) as cursor:
                count_row = await cursor.fetchone()
        total = int(count_row[0]) if count_row else 0
        return [sheet_from_row(r) for r in rows], total

    async def get_job_page(
        self,
        job_id: str,
        statuses: Sequence[SheetStatus] | None,
        offset: int,
        limit: int,
    ) -> tuple[JobRow, list[SheetRow], int] | None:
        """A job with one page of its sheets, read in ONE snapshot so the view is never torn
        by a transition committed between the two reads."""
        params = {
            "job_id": job_id,
            "statuses": statuses_json(statuses),
            "offset": offset,
            "limit": limit,
        }
        async with self._snapshot() as conn:
            async with conn.execute(Q["select_job"], {"job_id": job_id}) as cursor:
                job_row = await cursor.fetchone()
            if job_row is None:
                return None
            async with conn.execute(Q["select_sheets_page"], params) as cursor:
                rows = await cursor.fetchall()
            async with conn.execute(Q["count_sheets_matching"], params) as cursor:
                count_row = await cursor.fetchone()
        total = int(count_row[0]) if count_row else 0
        return job_from_row(job_row), [sheet_from_row(r) for r in rows], total

    async def get_attempt(self, job_id: str, sheet_num: int, attempt: int) -> AttemptRow | None:
        row = await self._fetchone(
            Q["select_attempt"], {"job_id": job_id, "sheet_num": sheet_num, "attempt": attempt}
        )
        return None if row is None else attempt_from_row(row)

    async def get_latest_attempt(self, job_id: str, sheet_num: int) -> AttemptRow | None:
        row = await self._fetchone(
            Q["select_latest_attempt"], {"job_id": job_id, "sheet_num": sheet_num}
        )
        return None if row is None else attempt_from_row(row)

    async def get_in_flight_attempts(self) -> list[AttemptRow]:
        return [
            attempt_from_row(r) for r in await self._fetchall(Q["select_in_flight_attempts"], {})
        ]

    async def jobs_with_status(self, statuses: Sequence[JobStatus]) -> list[JobRow]:
        rows = await self._fetchall(
            Q["select_jobs_by_statuses"], {"statuses": statuses_json(statuses) or "[]"}
        )
        return [job_from_row(r) for r in rows]

    async def count_jobs_by_status(self) -> dict[str, int]:
        rows = await self._fetchall(Q["count_jobs_by_status"], {})
        return {r["status"]: r["n"] for r in rows}

    async def count_running_sheets(self) -> int:
        row = await self._fetchone(Q["count_running_sheets"], {})
        return int(row[0]) if row else 0

    # ----- StateBackend seed operations -----------------------------------------------------

    async def load(self, job_id: str) -> JobDetail | None:
        """The full checkpoint: every sheet and the spec (env values are the caller's to redact)."""
        async with self._snapshot() as conn:
            async with conn.execute(Q["select_job"], {"job_id": job_id}) as cursor:
                job_row = await cursor.fetchone()
            if job_row is None:
                return None
            async with conn.execute(Q["select_sheets"], {"job_id": job_id}) as cursor:
                sheet_rows = await cursor.fetchall()
        job = job_from_row(job_row)
        sheets = [sheet_from_row(r) for r in sheet_rows]
        return JobDetail(
            **job.summary().model_dump(),
            workspace=job.workspace,
            priority=job.priority,
            sheets_total_matching=len(sheets),
            sheets=[s.state() for s in sheets],
            spec=job.spec,
        )

    async def save(self, checkpoint: JobDetail) -> None:
        """Write a checkpoint back as rows (import/restore). For an existing job, the
        checkpoint's fields are copied over the stored rows, so fields a checkpoint does not
        carry (log paths, retry budgets, snapshot path) survive a load/save round trip."""
        now = utcnow()
        existing = await self.get_job(checkpoint.job_id)
        stored_sheets = {s.sheet_num: s for s in await self.get_sheets(checkpoint.job_id)}
        job = existing or JobRow(
            job_id=checkpoint.job_id,
            name=checkpoint.name,
            status=checkpoint.status,
            workspace=checkpoint.workspace,
            spec={},
            spec_fingerprint="",
            total_sheets=checkpoint.total_sheets,
            submitted_at=checkpoint.submitted_at,
            updated_at=now,
        )
        job.name = checkpoint.name
        job.status = checkpoint.status
        job.workspace = checkpoint.workspace
        if checkpoint.spec is not None:
            job.spec = checkpoint.spec
        job.total_sheets = checkpoint.total_sheets
        job.submitted_at = checkpoint.submitted_at
        job.updated_at = now
        job.pause_reason = checkpoint.pause_reason
        job.error = checkpoint.error
        job.priority = checkpoint.priority
        job.labels = list(checkpoint.labels)
        job.started_at = checkpoint.started_at
        job.completed_at = checkpoint.completed_at
        sheets = []
        for state in checkpoint.sheets:
            row = stored_sheets.get(state.sheet_num) or SheetRow(
                job_id=checkpoint.job_id,
                sheet_num=state.sheet_num,
                name=state.name,
                status=state.status,
                instrument=state.instrument,
                updated_at=now,
            )
            row.name = state.name
            row.status = state.status
            row.instrument = state.instrument
            row.updated_at = now
            row.depends_on = list(state.depends_on)
            row.attempts = state.attempts
            row.started_at = state.started_at
            row.completed_at = state.completed_at
            row.duration_seconds = state.duration_seconds
            row.last_error = state.last_error
            row.error_category = state.error_category
            row.waiting_reason = state.waiting_reason
            row.waiting_until = state.waiting_until
            if state.output_tail is not None and not (
                row.output_tail and row.output_tail.endswith(state.output_tail)
            ):
                row.output_tail = state.output_tail
            sheets.append(row)
        if existing is None:
            await self.create_job(job, sheets)
        else:
            await self.write(job, sheets)

    async def delete(self, job_id: str) -> bool:
        async with self._transaction() as conn:
            cursor = await conn.execute(Q["delete_job"], {"job_id": job_id})
            return cursor.rowcount > 0

    async def list_jobs(self, limit: int = 50) -> list[JobSummary]:
        jobs, _ = await self.query_jobs(JobQuery(limit=limit))
        return jobs

    async def query_jobs(self, query: JobQuery) -> tuple[list[JobSummary], str | None]:
        rows, next_cursor = await self.query_job_rows(query)
        return [r.summary() for r in rows], next_cursor

    async def query_job_rows(self, query: JobQuery) -> tuple[list[JobRow], str | None]:
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
        if query.completed_before is not None:
            clauses.append("completed_at IS NOT NULL AND completed_at < :completed_before")
            params["completed_before"] = format_time(query.completed_before)
        if query.cursor:
            params["cursor_at"], params["cursor_id"] = decode_cursor(query.cursor)
            clauses.append("(submitted_at, job_id) < (:cursor_at, :cursor_id)")
        order = " ORDER BY submitted_at DESC, job_id DESC"
        if query.statuses:
            # One index-ordered branch per status, merged: SQLite reads only the page it
            # returns instead of sorting every job in those statuses.
            branches = []
            for i, status in enumerate(dict.fromkeys(query.statuses)):
                params[f"status_{i}"] = status.value
                where = " AND ".join([f"status = :status_{i}", *clauses])
                branches.append(f"SELECT * FROM ({Q['select_jobs_base']} WHERE {where}{order})")
            sql = " UNION ALL ".join(branches) + order + " LIMIT :limit"
        else:
            sql = Q["select_jobs_base"]
            if clauses:
                sql += " WHERE " + " AND ".join(clauses)
            sql += order + " LIMIT :limit"
        rows = [job_from_row(r) for r in await self._fetchall(sql, params)]
        page_size = params["limit"] - 1
        next_cursor = None
        if len(rows) > page_size:
            rows = rows[:page_size]
            last = rows[-1]
            next_cursor = encode_cursor(format_time(last.submitted_at), last.job_id)
        return rows, next_cursor

    async def get_next_sheet(self, job_id: str) -> int | None:
        """The lowest-numbered pending sheet whose dependencies have all completed."""
        sheets = await self.get_sheets(job_id)
        completed = {s.sheet_num for s in sheets if s.status is SheetStatus.COMPLETED}
        for sheet in sheets:
            if sheet.status is SheetStatus.PENDING and set(sheet.depends_on) <= completed:
                return sheet.sheet_num
        return None

    async def mark_sheet_status(
        self,
        job_id: str,
        sheet_num: int,
        status: SheetStatus,
        *,
        error: str | None = None,
        error_category: ErrorCategory | None = None,
    ) -> None:
        sheet = await self.get_sheet(job_id, sheet_num)
        if sheet is None:
            raise KeyError(f"job {job_id!r} has no sheet {sheet_num}")
        sheet.status = status
        sheet.updated_at = utcnow()
        if error is not None:
            sheet.last_error = error
        if error_category is not None:
            sheet.error_category = error_category
        await self.write(sheets=[sheet])

    async def record_execution(self, job_id: str, entry: HistoryEntry) -> None:
        existing = await self.get_attempt(job_id, entry.sheet_num, entry.attempt)
        attempt = AttemptRow(
            job_id=job_id,
            sheet_num=entry.sheet_num,
            attempt=entry.attempt,
            started_at=entry.started_at,
            ended_at=entry.ended_at,
            exit_code=entry.exit_code,
            signal=entry.signal,
            duration_seconds=entry.duration_seconds,
            outcome=entry.outcome,
            error_category=entry.error_category,
            error=entry.error,
            validations=list(entry.validations),
            log_path=entry.log_path,
            pid=existing.pid if existing else None,
            pgid=existing.pgid if existing else None,
            pid_start_time=existing.pid_start_time if existing else None,
        )
        await self.write(attempts=[attempt])

    async def get_execution_history(
        self,
        job_id: str,
        sheet_num: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[HistoryEntry]:
        rows = await self._fetchall(
            Q["select_attempts"],
            {"job_id": job_id, "sheet_num": sheet_num, "limit": limit, "offset": offset},
        )
        return [attempt_from_row(r).entry() for r in rows]

    async def get_execution_history_count(self, job_id: str, sheet_num: int | None = None) -> int:
        row = await self._fetchone(Q["count_attempts"], {"job_id": job_id, "sheet_num": sheet_num})
        return int(row[0]) if row else 0

    async def get_job_statistics(self, job_id: str) -> JobStatistics | None:
        async with self._snapshot() as conn:
            async with conn.execute(Q["select_job"], {"job_id": job_id}) as cursor:
                if await cursor.fetchone() is None:
                    return None
            async with conn.execute(Q["count_sheets_by_status"], {"job_id": job_id}) as cursor:
                by_status = {r["status"]: r["n"] for r in await cursor.fetchall()}
            async with conn.execute(Q["count_attempts_by_outcome"], {"job_id": job_id}) as cursor:
                outcome_rows = list(await cursor.fetchall())
        return JobStatistics(
            job_id=job_id,
            sheets_by_status=by_status,
            total_attempts=sum(r["n"] for r in outcome_rows),
            attempts_by_outcome={r["outcome"]: r["n"] for r in outcome_rows},
            total_duration_seconds=float(sum(r["seconds"] for r in outcome_rows)),
        )

    async def set_snapshot_path(self, job_id: str, path: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["update_snapshot_path"], {"job_id": job_id, "snapshot_path": path})

    async def set_attempt_process(
        self, job_id: str, sheet_num: int, attempt: int, pid: int, pgid: int, start_time: float
    ) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                Q["update_attempt_process"],
                {
                    "job_id": job_id,
                    "sheet_num": sheet_num,
                    "attempt": attempt,
                    "pid": pid,
                    "pgid": pgid,
                    "pid_start_time": start_time,
                },
            )

    # ----- rate limits ----------------------------------------------------------------------

    async def set_rate_limit(self, row: RateLimitRow) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                Q["upsert_rate_limit"],
                {
                    "instrument": row.instrument,
                    "until": format_time(row.until),
                    "reason": row.reason,
                    "set_at": format_time(row.set_at),
                },
            )

    async def get_rate_limits(self) -> list[RateLimitRow]:
        rows = await self._fetchall(Q["select_rate_limits"], {})
        return [
            RateLimitRow(
                instrument=r["instrument"],
                until=parse_time(r["until"]),
                reason=r["reason"],
                set_at=parse_time(r["set_at"]),
            )
            for r in rows
        ]

    async def clear_rate_limit(self, instrument: str) -> bool:
        async with self._transaction() as conn:
            cursor = await conn.execute(Q["delete_rate_limit"], {"instrument": instrument})
            return cursor.rowcount > 0

    # ----- JobRegistry ----------------------------------------------------------------------

    async def register_job(self, job: JobRow, sheets: Sequence[SheetRow]) -> None:
        await self.create_job(job, sheets)

    async def update_status(
        self,
        job_id: str,
        status: JobStatus,
        *,
        pause_reason: PauseReason | None = None,
        error: str | None = None,
    ) -> None:
        job = await self.get_job(job_id)
        if job is None:
            raise KeyError(f"no job {job_id!r}")
        now = utcnow()
        job.status = status
        job.pause_reason = pause_reason if status is JobStatus.PAUSED else None
        job.error = error
        job.updated_at = now
        if status is JobStatus.RUNNING and job.started_at is None:
            job.started_at = now
        job.completed_at = now if status.is_terminal else None
        await self.write(job)

    async def update_progress(self, job_id: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(Q["refresh_job_progress"], {"job_id": job_id})

    async def save_checkpoint(self, checkpoint: JobDetail) -> None:
        await self.save(checkpoint)

    async def load_checkpoint(self, job_id: str) -> JobDetail | None:
        return await self.load(job_id)

    async def has_active_job(self, job_id: str) -> bool:
        job = await self.get_job(job_id)
        return job is not None and job.status.is_active

    async def get_orphaned_jobs(self) -> list[JobSummary]:
        return [
            job_from_row(r).summary() for r in await self._fetchall(Q["select_orphaned_jobs"], {})
        ]

    async def delete_jobs(self, job_ids: Sequence[str]) -> list[str]:
        """Delete the given jobs that are terminal; active ones are never deleted."""
        deleted: list[str] = []
        async with self._transaction() as conn:
            for job_id in job_ids:
                cursor = await conn.execute(
                    Q["delete_terminal_job"],
                    {"job_id": job_id},
                )
                if cursor.rowcount > 0:
                    deleted.append(job_id)
        return deleted

    async def job_ids_completed_before(self, before: datetime) -> list[str]:
        rows = await self._fetchall(
            Q["select_job_ids_completed_before"], {"before": format_time(before)}
        )
        return [r["job_id"] for r in rows]

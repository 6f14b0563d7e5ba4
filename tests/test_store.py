"""The SQLite store against real database files: rows, checkpoints, history, listing, schema.

SPEC §2 (one state model, rows not blobs, progress in the same transaction), §3 (schema
versions), §7 (field names, `Z` times) and §9 traps 1, 3, 5, 6 and 12.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import pytest

from podium.core.errors import SchemaTooNewError
from podium.core.models import (
    ErrorCategory,
    HistoryEntry,
    JobDetail,
    JobStatus,
    Outcome,
    PauseReason,
    SheetState,
    SheetStatus,
    ValidationResult,
    WaitingReason,
    sheet_log_uri,
    utcnow,
)
from podium.core.store import schema
from podium.core.store.rows import AttemptRow, JobQuery, JobRow, RateLimitRow, SheetRow
from podium.core.store.schema import LATEST_SCHEMA_VERSION, migrate
from podium.core.store.sqlite import Q, SQLiteStore
from podium.core.store.sqlite_codec import job_params

pytestmark = pytest.mark.anyio

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
TERMINAL = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "podium.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(db_path)
    try:
        yield s
    finally:
        await s.close()


# ----- row builders ---------------------------------------------------------------------------


def job_row(
    job_id: str = "job-1",
    *,
    name: str = "demo",
    status: JobStatus = JobStatus.QUEUED,
    submitted_at: datetime = T0,
    labels: Sequence[str] = (),
    total_sheets: int = 0,
    **extra: Any,
) -> JobRow:
    return JobRow(
        job_id=job_id,
        name=name,
        status=status,
        workspace=f"/work/{job_id}",
        spec={"name": name, "sheets": [{"prompt": "echo hi"}], "env": {"K": "v"}},
        spec_fingerprint=f"fp-{job_id}",
        total_sheets=total_sheets,
        submitted_at=submitted_at,
        updated_at=submitted_at,
        labels=list(labels),
        **extra,
    )


def sheet_row(
    job_id: str,
    sheet_num: int,
    *,
    status: SheetStatus = SheetStatus.PENDING,
    depends_on: Sequence[int] = (),
    **extra: Any,
) -> SheetRow:
    extra.setdefault("name", f"sheet-{sheet_num}")
    return SheetRow(
        job_id=job_id,
        sheet_num=sheet_num,
        status=status,
        instrument="shell",
        updated_at=T0,
        depends_on=list(depends_on),
        **extra,
    )


def attempt_row(job_id: str, sheet_num: int, attempt: int, **extra: Any) -> AttemptRow:
    extra.setdefault("started_at", T0 + timedelta(minutes=attempt))
    return AttemptRow(job_id=job_id, sheet_num=sheet_num, attempt=attempt, **extra)


def finished_attempt(
    job_id: str,
    sheet_num: int,
    attempt: int,
    outcome: Outcome = Outcome.COMPLETED,
    duration: float = 1.5,
    **extra: Any,
) -> AttemptRow:
    started = T0 + timedelta(minutes=attempt)
    return attempt_row(
        job_id,
        sheet_num,
        attempt,
        started_at=started,
        ended_at=started + timedelta(seconds=duration),
        exit_code=0 if outcome is Outcome.COMPLETED else 1,
        duration_seconds=duration,
        outcome=outcome,
        log_path=f"/logs/{job_id}/{sheet_num}.{attempt}.log",
        **extra,
    )


async def make_job(
    store: SQLiteStore,
    job_id: str = "job-1",
    sheets: Sequence[SheetStatus] = (SheetStatus.PENDING,) * 3,
    **job_kw: Any,
) -> JobRow:
    job = job_row(job_id, total_sheets=len(sheets), **job_kw)
    await store.create_job(job, [sheet_row(job_id, i, status=s) for i, s in enumerate(sheets, 1)])
    return job


def raw(path: Path) -> sqlite3.Connection:
    """A separate, plain sqlite3 connection to the same file (what another process sees)."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    return conn


def raw_count(path: Path, sql: str, *params: Any) -> int:
    conn = raw(path)
    try:
        return int(conn.execute(sql, params).fetchone()[0])
    finally:
        conn.close()


def job_ids(jobs: Sequence[Any]) -> list[str]:
    return [j.job_id for j in jobs]


# ----- checkpoint assembled from rows; counters derived from sheets ---------------------------


async def test_load_assembles_job_and_every_sheet_from_rows(store: SQLiteStore) -> None:
    job = job_row("job-1", labels=["nightly", "repo-x"], priority=3, description="d")
    long_tail = "x" * 3000 + "THE-END"
    sheets = [
        sheet_row(
            "job-1",
            1,
            status=SheetStatus.COMPLETED,
            attempts=1,
            log_path="/l/1.log",
            output_tail=long_tail,
            started_at=T0,
            completed_at=T0 + timedelta(seconds=4),
            duration_seconds=4.0,
        ),
        sheet_row(
            "job-1",
            2,
            status=SheetStatus.WAITING,
            depends_on=[1],
            attempts=2,
            waiting_reason=WaitingReason.RATE_LIMIT,
            waiting_until=T0 + timedelta(hours=1),
            last_error="429",
            error_category=ErrorCategory.RATE_LIMITED,
        ),
        sheet_row("job-1", 3, depends_on=[1, 2], name=None),
    ]
    await store.create_job(job, list(reversed(sheets)))

    detail = await store.load("job-1")
    assert detail is not None
    assert (detail.job_id, detail.name, detail.status) == ("job-1", "demo", JobStatus.QUEUED)
    assert detail.workspace == "/work/job-1"
    assert detail.priority == 3
    assert detail.labels == ["nightly", "repo-x"]
    assert detail.spec == job.spec
    assert detail.total_sheets == 3
    assert detail.sheets_total_matching == 3
    assert (detail.completed_sheets, detail.failed_sheets) == (1, 0)
    assert [s.sheet_num for s in detail.sheets] == [1, 2, 3]
    s1, s2, s3 = detail.sheets
    assert s1.status is SheetStatus.COMPLETED and s1.attempts == 1
    assert s1.log_uri == sheet_log_uri("job-1", 1)
    assert s1.duration_seconds == 4.0
    assert s1.completed_at == T0 + timedelta(seconds=4)
    # The view carries the last 2 KiB of the stored 4 KiB tail.
    assert s1.output_tail is not None and s1.output_tail.endswith("THE-END")
    assert len(s1.output_tail.encode()) == 2048
    assert s2.depends_on == [1] and s2.status is SheetStatus.WAITING
    assert s2.waiting_reason is WaitingReason.RATE_LIMIT
    assert s2.waiting_until == T0 + timedelta(hours=1)
    assert (s2.last_error, s2.error_category) == ("429", ErrorCategory.RATE_LIMITED)
    assert s2.log_uri is None
    assert s3.depends_on == [1, 2] and s3.name is None
    # The row-level view stores the full tail (the source of `outputs[N]`).
    row = await store.get_sheet("job-1", 1)
    assert row is not None and row.output_tail == long_tail

    assert await store.load("no-such-job") is None
    assert await store.load_checkpoint("job-1") == detail


async def test_counters_are_recomputed_from_sheets_in_the_same_write(
    store: SQLiteStore,
) -> None:
    # Counters handed in by the caller are ignored: only the sheet rows count (trap 3).
    job = job_row("job-1", total_sheets=99, completed_sheets=7, failed_sheets=5)
    await store.create_job(job, [sheet_row("job-1", i) for i in range(1, 5)])

    async def counters() -> tuple[int, int, int]:
        row = await store.get_job("job-1")
        assert row is not None
        detail = await store.load("job-1")
        assert detail is not None
        [summary] = await store.list_jobs()
        # Every view reads the same row: they can never disagree (trap 1).
        assert (
            (row.completed_sheets, row.failed_sheets)
            == (detail.completed_sheets, detail.failed_sheets)
            == (summary.completed_sheets, summary.failed_sheets)
        )
        return row.total_sheets, row.completed_sheets, row.failed_sheets

    assert await counters() == (4, 0, 0)

    await store.write(
        sheets=[
            sheet_row("job-1", 1, status=SheetStatus.COMPLETED),
            sheet_row("job-1", 2, status=SheetStatus.FAILED),
        ]
    )
    assert await counters() == (4, 1, 1)

    await store.write(sheets=[sheet_row("job-1", 3, status=SheetStatus.COMPLETED)])
    assert await counters() == (4, 2, 1)

    # A job write with stale or bogus counters does not overwrite the derived ones.
    stale = await store.get_job("job-1")
    assert stale is not None
    stale.status = JobStatus.RUNNING
    stale.completed_sheets, stale.failed_sheets, stale.total_sheets = 50, 50, 50
    await store.write(stale)
    assert await counters() == (4, 2, 1)
    running = await store.get_job("job-1")
    assert running is not None and running.status is JobStatus.RUNNING

    # A failed sheet reset to pending (resume) drops out of failed_sheets.
    await store.write(sheets=[sheet_row("job-1", 2, status=SheetStatus.PENDING)])
    assert await counters() == (4, 2, 0)

    # Skipped/cancelled sheets count as neither completed nor failed.
    await store.write(
        sheets=[
            sheet_row("job-1", 2, status=SheetStatus.SKIPPED),
            sheet_row("job-1", 4, status=SheetStatus.CANCELLED),
        ]
    )
    assert await counters() == (4, 2, 0)


async def test_write_is_one_transaction(store: SQLiteStore, db_path: Path) -> None:
    await make_job(store, "job-1")
    job = await store.get_job("job-1")
    assert job is not None
    job.status = JobStatus.RUNNING
    # The attempt refers to a job that does not exist: the whole write must roll back.
    with pytest.raises(sqlite3.IntegrityError):
        await store.write(
            job,
            sheets=[sheet_row("job-1", 1, status=SheetStatus.COMPLETED)],
            attempts=[finished_attempt("ghost", 1, 1)],
        )
    detail = await store.load("job-1")
    assert detail is not None
    assert detail.status is JobStatus.QUEUED
    assert detail.sheets[0].status is SheetStatus.PENDING
    assert detail.completed_sheets == 0
    assert raw_count(db_path, "SELECT count(*) FROM attempts") == 0

    # The writer is usable afterwards (lock released, no transaction left open).
    await store.write(job, sheets=[sheet_row("job-1", 1, status=SheetStatus.COMPLETED)])
    detail = await store.load("job-1")
    assert detail is not None
    assert (detail.status, detail.completed_sheets) == (JobStatus.RUNNING, 1)


# ----- durability across processes (trap 5) --------------------------------------------------

_LOAD_IN_SUBPROCESS = """
import json, sys
from pathlib import Path
import anyio
from podium.core.store.sqlite import SQLiteStore

async def main():
    store = await SQLiteStore.open(Path(sys.argv[1]))
    try:
        detail = await store.load(sys.argv[2])
        history = await store.get_execution_history(sys.argv[2])
    finally:
        await store.close()
    print(json.dumps({
        "detail": detail.model_dump(mode="json"),
        "history": [h.model_dump(mode="json") for h in history],
    }))

anyio.run(main)
"""


async def test_checkpoint_is_durable_and_identical_in_a_new_process(
    store: SQLiteStore, db_path: Path
) -> None:
    await make_job(store, "job-1", labels=["a"])
    await store.update_status("job-1", JobStatus.RUNNING)
    await store.write(
        sheets=[sheet_row("job-1", 1, status=SheetStatus.RUNNING, attempts=1, started_at=T0)],
        attempts=[attempt_row("job-1", 1, 1, pid=1234, pgid=1234, pid_start_time=1.5)],
    )
    await store.write(
        sheets=[
            sheet_row(
                "job-1",
                1,
                status=SheetStatus.COMPLETED,
                attempts=1,
                started_at=T0,
                completed_at=T0 + timedelta(seconds=2),
                duration_seconds=2.0,
                output_tail="hello\n",
                log_path="/logs/1.log",
            )
        ],
        attempts=[
            finished_attempt(
                "job-1",
                1,
                1,
                validations=[ValidationResult(type="file_exists", passed=True, detail=None)],
            )
        ],
    )
    await store.mark_sheet_status(
        "job-1", 2, SheetStatus.FAILED, error="exit 3", error_category=ErrorCategory.FAILED
    )

    # The in-process store stays open: committed transitions are visible to another process
    # without any close or flush.
    result = await anyio.run_process(
        [sys.executable, "-c", _LOAD_IN_SUBPROCESS, str(db_path), "job-1"], check=True
    )
    other = json.loads(result.stdout)

    detail = await store.load("job-1")
    assert detail is not None
    history = await store.get_execution_history("job-1")
    assert other["detail"] == detail.model_dump(mode="json")
    assert other["history"] == [h.model_dump(mode="json") for h in history]
    # And the content is what was written, not just equal-but-empty.
    assert other["detail"]["status"] == "running"
    assert [s["status"] for s in other["detail"]["sheets"]] == ["completed", "failed", "pending"]
    assert other["detail"]["completed_sheets"] == 1 and other["detail"]["failed_sheets"] == 1
    assert other["detail"]["sheets"][1]["last_error"] == "exit 3"
    assert [(h["sheet_num"], h["attempt"], h["outcome"]) for h in other["history"]] == [
        (1, 1, "completed")
    ]


# ----- attempts and execution history (trap 6, 12) --------------------------------------------


async def test_attempt_is_inserted_in_flight_then_updated(store: SQLiteStore) -> None:
    await make_job(store, "job-1", status=JobStatus.RUNNING)
    await store.write(
        sheets=[sheet_row("job-1", 1, status=SheetStatus.RUNNING, attempts=1)],
        attempts=[
            attempt_row(
                "job-1", 1, 1, pid=4321, pgid=4321, pid_start_time=99.5, log_path="/logs/1.1.log"
            )
        ],
    )
    in_flight = await store.get_attempt("job-1", 1, 1)
    assert in_flight is not None
    assert in_flight.outcome is None and in_flight.ended_at is None
    assert (in_flight.pid, in_flight.pgid, in_flight.pid_start_time) == (4321, 4321, 99.5)
    assert [(a.job_id, a.sheet_num, a.attempt) for a in await store.get_in_flight_attempts()] == [
        ("job-1", 1, 1)
    ]
    [entry] = await store.get_execution_history("job-1")
    assert entry.outcome is None and entry.exit_code is None

    validations = [
        ValidationResult(type="file_exists", passed=True, detail=None),
        ValidationResult(type="content_regex", passed=False, detail="no match for ^[0-9]+$"),
    ]
    done = finished_attempt(
        "job-1",
        1,
        1,
        outcome=Outcome.FAILED,
        duration=3.25,
        error_category=ErrorCategory.VALIDATION_FAILED,
        error="validation failed",
        validations=validations,
        pid=4321,
        pgid=4321,
        pid_start_time=99.5,
    )
    await store.write(
        sheets=[sheet_row("job-1", 1, status=SheetStatus.FAILED, attempts=1)], attempts=[done]
    )
    updated = await store.get_attempt("job-1", 1, 1)
    assert updated == done
    assert await store.get_execution_history_count("job-1") == 1
    assert await store.get_in_flight_attempts() == []
    [entry] = await store.get_execution_history("job-1")
    assert entry.outcome is Outcome.FAILED
    assert entry.exit_code == 1
    assert entry.duration_seconds == 3.25
    assert entry.error_category is ErrorCategory.VALIDATION_FAILED
    assert entry.validations == validations
    assert entry.log_path == "/logs/job-1/1.1.log"
    assert entry.ended_at == T0 + timedelta(minutes=1, seconds=3.25)


async def test_execution_history_paging_and_sheet_filter(store: SQLiteStore) -> None:
    await make_job(store, "job-1", status=JobStatus.RUNNING)
    await make_job(store, "job-2")
    attempts = [
        finished_attempt(
            "job-1", sheet, n, outcome=Outcome.FAILED if n < last else Outcome.COMPLETED
        )
        for sheet, last in ((1, 3), (2, 2), (3, 1))
        for n in range(1, last + 1)
    ]
    # Insert out of order: the history order is (sheet_num, attempt), not insertion order.
    await store.write(attempts=list(reversed(attempts)))
    await store.write(attempts=[finished_attempt("job-2", 1, 1)])

    expected = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 1)]
    everything = await store.get_execution_history("job-1")
    assert [(e.sheet_num, e.attempt) for e in everything] == expected

    page1 = await store.get_execution_history("job-1", limit=4)
    page2 = await store.get_execution_history("job-1", limit=4, offset=4)
    page3 = await store.get_execution_history("job-1", limit=4, offset=8)
    assert [(e.sheet_num, e.attempt) for e in page1] == expected[:4]
    assert [(e.sheet_num, e.attempt) for e in page2] == expected[4:]
    assert page3 == []

    sheet1 = await store.get_execution_history("job-1", sheet_num=1)
    assert [e.attempt for e in sheet1] == [1, 2, 3]
    assert [e.outcome for e in sheet1] == [Outcome.FAILED, Outcome.FAILED, Outcome.COMPLETED]
    assert [
        e.attempt
        for e in await store.get_execution_history("job-1", sheet_num=1, limit=1, offset=1)
    ] == [2]
    assert await store.get_execution_history("job-1", sheet_num=9) == []

    assert await store.get_execution_history_count("job-1") == 6
    assert await store.get_execution_history_count("job-1", sheet_num=2) == 2
    assert await store.get_execution_history_count("job-2") == 1
    assert await store.get_execution_history_count("nope") == 0

    latest = await store.get_latest_attempt("job-1", 1)
    assert latest is not None and latest.attempt == 3
    assert await store.get_latest_attempt("job-1", 9) is None


async def test_in_flight_attempts_of_every_job(store: SQLiteStore) -> None:
    """Every attempt without an outcome, whatever its job's status: a cancel or deadline marks
    the job terminal before its running sheets die, and a crash then must still find them."""
    for job_id, status in (
        ("a-running", JobStatus.RUNNING),
        ("b-paused", JobStatus.PAUSED),
        ("c-completed", JobStatus.COMPLETED),
        ("d-failed", JobStatus.FAILED),
        ("e-cancelled", JobStatus.CANCELLED),
        ("f-queued", JobStatus.QUEUED),
    ):
        await make_job(store, job_id, status=status)
        await store.write(
            attempts=[
                finished_attempt(job_id, 1, 1),  # finished: never in flight
                attempt_row(job_id, 2, 1, pid=10, pgid=10, pid_start_time=1.0),
            ]
        )
    found = await store.get_in_flight_attempts()
    assert [(a.job_id, a.sheet_num, a.attempt) for a in found] == [
        ("a-running", 2, 1),
        ("b-paused", 2, 1),
        ("c-completed", 2, 1),
        ("d-failed", 2, 1),
        ("e-cancelled", 2, 1),
        ("f-queued", 2, 1),
    ]
    assert all(a.outcome is None and a.pgid == 10 for a in found)


async def test_record_execution_upserts_and_keeps_process_identity(store: SQLiteStore) -> None:
    await make_job(store, "job-1", status=JobStatus.RUNNING)
    await store.write(
        attempts=[attempt_row("job-1", 1, 1, pid=777, pgid=777, pid_start_time=12.25)]
    )
    entry = HistoryEntry(
        sheet_num=1,
        attempt=1,
        started_at=T0 + timedelta(minutes=1),
        ended_at=T0 + timedelta(minutes=2),
        exit_code=2,
        duration_seconds=60.0,
        outcome=Outcome.FAILED,
        error_category=ErrorCategory.VALIDATION_FAILED,
        error="count.txt does not match",
        validations=[ValidationResult(type="content_regex", passed=False, detail="no match")],
        log_path="/logs/1.1.log",
    )
    await store.record_execution("job-1", entry)
    assert await store.get_execution_history_count("job-1") == 1
    row = await store.get_attempt("job-1", 1, 1)
    assert row is not None
    assert row.entry() == entry
    # The upsert does not forget which process group ran the attempt.
    assert (row.pid, row.pgid, row.pid_start_time) == (777, 777, 12.25)

    second = entry.model_copy(
        update={
            "attempt": 2,
            "outcome": Outcome.COMPLETED,
            "exit_code": 0,
            "error_category": None,
            "error": None,
            "validations": [],
        }
    )
    await store.record_execution("job-1", second)
    assert await store.get_execution_history("job-1") == [entry, second]
    fresh = await store.get_attempt("job-1", 1, 2)
    assert fresh is not None and fresh.pid is None


# ----- listing: query_jobs, list_jobs, counts -------------------------------------------------


async def test_query_jobs_order_and_filters(store: SQLiteStore) -> None:
    specs = [
        ("j1", "alpha", JobStatus.COMPLETED, ["nightly"]),
        ("j2", "beta", JobStatus.FAILED, ["nightly", "repo-x"]),
        ("j3", "alpha", JobStatus.RUNNING, []),
        ("j4", "gamma", JobStatus.QUEUED, ["repo-x"]),
        ("j5", "alpha", JobStatus.PAUSED, ["nightly"]),
        ("j6", "beta", JobStatus.CANCELLED, []),
    ]
    for i, (job_id, name, status, labels) in enumerate(specs):
        await make_job(
            store,
            job_id,
            name=name,
            status=status,
            labels=labels,
            submitted_at=T0 + timedelta(minutes=i),
        )

    async def ids(**kw: Any) -> list[str]:
        jobs, cursor = await store.query_jobs(JobQuery(**kw))
        assert cursor is None
        return job_ids(jobs)

    assert await ids() == ["j6", "j5", "j4", "j3", "j2", "j1"]
    assert await ids(statuses=(JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.PAUSED)) == [
        "j5",
        "j2",
        "j1",
    ]
    assert await ids(statuses=(JobStatus.RUNNING,)) == ["j3"]
    assert await ids(name="alpha") == ["j5", "j3", "j1"]
    assert await ids(name="nope") == []
    assert await ids(label="nightly") == ["j5", "j2", "j1"]
    assert await ids(label="repo-x") == ["j4", "j2"]
    assert await ids(name="alpha", label="nightly", statuses=(JobStatus.COMPLETED,)) == ["j1"]
    assert await ids(name="beta", statuses=(JobStatus.QUEUED,)) == []

    jobs, _ = await store.query_jobs(JobQuery(label="repo-x"))
    assert [j.labels for j in jobs] == [["repo-x"], ["nightly", "repo-x"]]
    assert all(j.total_sheets == 3 for j in jobs)


async def test_cursor_paging_visits_each_job_once_with_shared_timestamps(
    store: SQLiteStore,
) -> None:
    # 30 jobs, 24 of them submitted in the very same microsecond; 3 pages of 10.
    for i in range(30):
        submitted = T0 if i < 24 else T0 + timedelta(seconds=i)
        status = JobStatus.COMPLETED if i % 2 else JobStatus.FAILED
        await make_job(store, f"job-{i:02d}", sheets=(), submitted_at=submitted, status=status)

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        jobs, cursor = await store.query_jobs(JobQuery(limit=10, cursor=cursor))
        pages += 1
        assert len(jobs) == 10
        seen += job_ids(jobs)
        if cursor is None:
            break
        assert pages < 5, "paging does not terminate"
    assert pages == 3
    assert len(seen) == len(set(seen)) == 30
    expected = [f"job-{i:02d}" for i in range(29, 23, -1)] + [
        f"job-{i:02d}" for i in range(23, -1, -1)
    ]
    assert seen == expected

    # The same with a filter: 15 completed jobs in pages of 4 (4 + 4 + 4 + 3).
    seen, cursor, sizes = [], None, []
    while True:
        jobs, cursor = await store.query_jobs(
            JobQuery(statuses=(JobStatus.COMPLETED,), limit=4, cursor=cursor)
        )
        sizes.append(len(jobs))
        seen += job_ids(jobs)
        if cursor is None:
            break
    assert sizes == [4, 4, 4, 3]
    assert seen == [j for j in expected if int(j[-2:]) % 2]


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!",
        base64.urlsafe_b64encode(b"[1, 2, 3]").decode(),
        base64.urlsafe_b64encode(b'["not-a-time", "job-1"]').decode(),
        base64.urlsafe_b64encode(b"null").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
async def test_garbage_cursor_is_a_value_error(store: SQLiteStore, cursor: str) -> None:
    await make_job(store, "job-1")
    with pytest.raises(ValueError, match="cursor"):
        await store.query_jobs(JobQuery(cursor=cursor))


async def test_list_jobs_limit_and_count_by_status(store: SQLiteStore) -> None:
    statuses = [JobStatus.QUEUED] * 3 + [JobStatus.RUNNING] * 2 + [JobStatus.COMPLETED]
    for i, status in enumerate(statuses):
        await make_job(
            store,
            f"job-{i}",
            status=status,
            sheets=(SheetStatus.PENDING,),
            submitted_at=T0 + timedelta(seconds=i),
        )
    assert job_ids(await store.list_jobs(limit=2)) == ["job-5", "job-4"]
    assert job_ids(await store.list_jobs()) == [f"job-{i}" for i in range(5, -1, -1)]
    assert len(await store.list_jobs(limit=0)) == 1  # clamped to at least one
    assert await store.count_jobs_by_status() == {"queued": 3, "running": 2, "completed": 1}

    by_status = await store.jobs_with_status([JobStatus.RUNNING, JobStatus.COMPLETED])
    assert sorted(job_ids(by_status)) == ["job-3", "job-4", "job-5"]
    assert await store.jobs_with_status([]) == []


async def test_sheets_page_and_running_count(store: SQLiteStore) -> None:
    statuses = [
        SheetStatus.COMPLETED,
        SheetStatus.RUNNING,
        SheetStatus.PENDING,
        SheetStatus.RUNNING,
        SheetStatus.FAILED,
    ]
    await make_job(store, "job-1", sheets=statuses)
    await make_job(store, "job-2", sheets=(SheetStatus.RUNNING,))
    rows, total = await store.get_sheets_page("job-1", None, offset=1, limit=2)
    assert [r.sheet_num for r in rows] == [2, 3] and total == 5
    rows, total = await store.get_sheets_page(
        "job-1", [SheetStatus.RUNNING, SheetStatus.FAILED], offset=0, limit=2
    )
    assert [r.sheet_num for r in rows] == [2, 4] and total == 3
    assert await store.count_running_sheets() == 3


# ----- indexes (EXPLAIN QUERY PLAN, no timing) -----------------------------------------------


@pytest.fixture
async def big_store(store: SQLiteStore, db_path: Path) -> SQLiteStore:
    """2,000 jobs written as rows in one transaction on a second connection."""
    statuses = list(JobStatus)
    rows = [
        job_params(
            job_row(
                f"job-{i:05d}",
                name=f"name-{i % 25}",
                status=statuses[i % len(statuses)],
                submitted_at=T0 + timedelta(seconds=i // 4),  # shared timestamps too
            )
        )
        for i in range(2000)
    ]
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            conn.executemany(Q["insert_job"], rows)
    finally:
        conn.close()
    return store


def query_plan(path: Path, sql: str, params: Any = ()) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    finally:
        conn.close()


def assert_indexed_and_ordered(plan: list[str]) -> None:
    assert any("USING INDEX" in step or "USING COVERING INDEX" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
    assert not any(step.startswith("SCAN jobs") and "INDEX" not in step for step in plan), plan


async def captured_listing_sql(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, query: JobQuery
) -> tuple[str, dict[str, Any], list[str]]:
    """The exact SQL and parameters the store runs for `query`, and the jobs it returned."""
    seen: list[tuple[str, dict[str, Any]]] = []
    real = store._fetchall

    async def recording(sql: str, params: dict[str, Any]) -> list[sqlite3.Row]:
        seen.append((sql, dict(params)))
        return await real(sql, params)

    monkeypatch.setattr(store, "_fetchall", recording)
    try:
        jobs, _ = await store.query_jobs(query)
    finally:
        monkeypatch.setattr(store, "_fetchall", real)
    [(sql, params)] = seen
    return sql, params, job_ids(jobs)


async def test_reference_listing_queries_use_indexes(big_store: SQLiteStore, db_path: Path) -> None:
    assert raw_count(db_path, "SELECT count(*) FROM jobs") == 2000
    order = " ORDER BY submitted_at DESC, job_id DESC LIMIT 51"
    newest = query_plan(db_path, "SELECT * FROM jobs" + order)
    assert_indexed_and_ordered(newest)
    assert any("jobs_by_submitted" in step for step in newest)
    by_status = query_plan(db_path, "SELECT * FROM jobs WHERE status = ?" + order, ("failed",))
    assert_indexed_and_ordered(by_status)
    by_name = query_plan(db_path, "SELECT * FROM jobs WHERE name = ?" + order, ("name-3",))
    assert_indexed_and_ordered(by_name)


async def test_store_newest_first_and_name_listings_use_indexes(
    big_store: SQLiteStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql, params, ids = await captured_listing_sql(big_store, monkeypatch, JobQuery(limit=50))
    assert ids[:2] == ["job-01999", "job-01998"] and len(ids) == 50
    assert_indexed_and_ordered(query_plan(db_path, sql, params))

    _, cursor = await big_store.query_jobs(JobQuery(limit=50))
    sql, params, ids = await captured_listing_sql(
        big_store, monkeypatch, JobQuery(limit=50, cursor=cursor)
    )
    assert ids[0] == "job-01949"
    assert_indexed_and_ordered(query_plan(db_path, sql, params))

    sql, params, ids = await captured_listing_sql(
        big_store, monkeypatch, JobQuery(name="name-3", limit=50)
    )
    assert ids[:2] == ["job-01978", "job-01953"]
    assert_indexed_and_ordered(query_plan(db_path, sql, params))


async def test_store_single_status_listing_uses_index_order(
    big_store: SQLiteStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql, params, ids = await captured_listing_sql(
        big_store, monkeypatch, JobQuery(statuses=(JobStatus.FAILED,), limit=50)
    )
    assert len(ids) == 50
    assert_indexed_and_ordered(query_plan(db_path, sql, params))


async def test_store_multi_status_listing_uses_index_order(
    big_store: SQLiteStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql, params, ids = await captured_listing_sql(
        big_store,
        monkeypatch,
        JobQuery(statuses=(JobStatus.FAILED, JobStatus.CANCELLED), limit=50),
    )
    assert len(ids) == 50
    assert_indexed_and_ordered(query_plan(db_path, sql, params))


# ----- deletion, activity, orphans ------------------------------------------------------------


async def test_delete_jobs_only_terminal_and_cascades(store: SQLiteStore, db_path: Path) -> None:
    for status in JobStatus:
        job_id = f"job-{status.value}"
        await make_job(store, job_id, status=status, labels=["keep-or-drop"])
        await store.write(attempts=[finished_attempt(job_id, 1, 1)])

    asked = [f"job-{s.value}" for s in JobStatus] + ["no-such-job"]
    deleted = await store.delete_jobs(asked)
    assert deleted == ["job-completed", "job-failed", "job-cancelled"]

    for status in ACTIVE:
        job_id = f"job-{status.value}"
        assert await store.get_job(job_id) is not None
        assert len(await store.get_sheets(job_id)) == 3
        assert await store.get_execution_history_count(job_id) == 1
    for status in TERMINAL:
        job_id = f"job-{status.value}"
        assert await store.load(job_id) is None
        for table in ("sheets", "attempts", "job_labels"):
            assert (
                raw_count(db_path, f"SELECT count(*) FROM {table} WHERE job_id = ?", job_id) == 0
            ), table
    jobs, _ = await store.query_jobs(JobQuery(label="keep-or-drop"))
    assert sorted(job_ids(jobs)) == ["job-paused", "job-queued", "job-running"]
    assert await store.delete_jobs(["job-queued", "job-running", "job-paused"]) == []
    assert await store.delete_jobs([]) == []


async def test_delete_removes_one_job_with_its_rows(store: SQLiteStore, db_path: Path) -> None:
    await make_job(store, "job-1", labels=["x"])
    await make_job(store, "job-2")
    await store.write(attempts=[finished_attempt("job-1", 1, 1), finished_attempt("job-2", 1, 1)])
    assert await store.delete("job-1") is True
    assert await store.delete("job-1") is False
    assert await store.load("job-1") is None
    assert raw_count(db_path, "SELECT count(*) FROM sheets WHERE job_id = 'job-1'") == 0
    assert raw_count(db_path, "SELECT count(*) FROM attempts WHERE job_id = 'job-1'") == 0
    assert raw_count(db_path, "SELECT count(*) FROM job_labels WHERE job_id = 'job-1'") == 0
    # The other job is untouched.
    assert len(await store.get_sheets("job-2")) == 3
    assert await store.get_execution_history_count("job-2") == 1


async def test_has_active_job(store: SQLiteStore) -> None:
    for status in JobStatus:
        await make_job(store, f"job-{status.value}", status=status)
    for status in JobStatus:
        assert await store.has_active_job(f"job-{status.value}") is (status in ACTIVE), status
    assert await store.has_active_job("no-such-job") is False


async def test_get_orphaned_jobs(store: SQLiteStore) -> None:
    S = SheetStatus
    cases = [
        ("a-running", JobStatus.RUNNING, (S.RUNNING, S.RUNNING, S.PENDING), True),
        ("b-paused-waiting", JobStatus.PAUSED, (S.COMPLETED, S.WAITING), True),
        ("c-queued-waiting", JobStatus.QUEUED, (S.WAITING,), True),
        ("d-queued-pending", JobStatus.QUEUED, (S.PENDING, S.PENDING), False),
        ("e-running-done", JobStatus.RUNNING, (S.COMPLETED, S.FAILED), False),
        ("f-completed", JobStatus.COMPLETED, (S.RUNNING,), False),
        ("g-cancelled", JobStatus.CANCELLED, (S.WAITING,), False),
    ]
    for i, (job_id, status, sheets, _) in enumerate(cases):
        await make_job(
            store, job_id, sheets=sheets, status=status, submitted_at=T0 + timedelta(seconds=i)
        )
    orphans = await store.get_orphaned_jobs()
    assert job_ids(orphans) == [job_id for job_id, *_, orphan in cases if orphan]
    assert orphans[0].status is JobStatus.RUNNING


async def test_job_ids_completed_before(store: SQLiteStore) -> None:
    await make_job(store, "old", status=JobStatus.COMPLETED, completed_at=T0 + timedelta(hours=1))
    await make_job(store, "older", status=JobStatus.FAILED, completed_at=T0)
    await make_job(store, "new", status=JobStatus.CANCELLED, completed_at=T0 + timedelta(hours=3))
    await make_job(store, "active", status=JobStatus.RUNNING)
    assert sorted(await store.job_ids_completed_before(T0 + timedelta(hours=2))) == ["old", "older"]
    assert await store.job_ids_completed_before(T0) == []
    assert sorted(await store.job_ids_completed_before(T0 + timedelta(days=1))) == [
        "new",
        "old",
        "older",
    ]


# ----- scheduling helpers and transitions ----------------------------------------------------


async def test_get_next_sheet_respects_dependencies(store: SQLiteStore) -> None:
    await store.create_job(
        job_row("job-1"),
        [
            sheet_row("job-1", 1, status=SheetStatus.COMPLETED),
            sheet_row("job-1", 2, depends_on=[1]),
            sheet_row("job-1", 3, depends_on=[2]),
            sheet_row("job-1", 4),
            sheet_row("job-1", 5, depends_on=[1, 4]),
        ],
    )
    assert await store.get_next_sheet("job-1") == 2
    await store.mark_sheet_status("job-1", 2, SheetStatus.RUNNING)
    assert await store.get_next_sheet("job-1") == 4  # 3 waits for 2, 5 waits for 4
    await store.mark_sheet_status("job-1", 4, SheetStatus.COMPLETED)
    assert await store.get_next_sheet("job-1") == 5
    await store.mark_sheet_status("job-1", 5, SheetStatus.RUNNING)
    assert await store.get_next_sheet("job-1") is None
    await store.mark_sheet_status("job-1", 2, SheetStatus.FAILED)
    assert await store.get_next_sheet("job-1") is None  # 3 depends on a failed sheet
    await store.mark_sheet_status("job-1", 2, SheetStatus.SKIPPED)
    assert await store.get_next_sheet("job-1") is None  # skipped is not completed
    await store.mark_sheet_status("job-1", 2, SheetStatus.COMPLETED)
    assert await store.get_next_sheet("job-1") == 3

    await make_job(store, "all-done", sheets=(SheetStatus.COMPLETED,) * 2)
    assert await store.get_next_sheet("all-done") is None
    assert await store.get_next_sheet("no-such-job") is None


async def test_mark_sheet_status(store: SQLiteStore) -> None:
    await store.create_job(
        job_row("job-1"),
        [
            sheet_row("job-1", 1, attempts=2, output_tail="out", log_path="/l.log"),
            sheet_row("job-1", 2),
        ],
    )
    before = utcnow()
    await store.mark_sheet_status(
        "job-1", 1, SheetStatus.FAILED, error="exit 2", error_category=ErrorCategory.FAILED
    )
    sheet = await store.get_sheet("job-1", 1)
    assert sheet is not None
    assert sheet.status is SheetStatus.FAILED
    assert (sheet.last_error, sheet.error_category) == ("exit 2", ErrorCategory.FAILED)
    assert (sheet.attempts, sheet.output_tail, sheet.log_path) == (2, "out", "/l.log")
    assert sheet.updated_at >= before - timedelta(seconds=1)
    job = await store.get_job("job-1")
    assert job is not None and job.failed_sheets == 1

    # No error given: the previous one is kept.
    await store.mark_sheet_status("job-1", 1, SheetStatus.SKIPPED)
    sheet = await store.get_sheet("job-1", 1)
    assert sheet is not None
    assert (sheet.status, sheet.last_error) == (SheetStatus.SKIPPED, "exit 2")
    job = await store.get_job("job-1")
    assert job is not None and job.failed_sheets == 0

    other = await store.get_sheet("job-1", 2)
    assert other is not None and other.status is SheetStatus.PENDING
    with pytest.raises(KeyError):
        await store.mark_sheet_status("job-1", 9, SheetStatus.RUNNING)


async def test_update_status_timestamps_and_pause_reason(store: SQLiteStore) -> None:
    await make_job(store, "job-1")

    async def get() -> JobRow:
        row = await store.get_job("job-1")
        assert row is not None
        return row

    before = utcnow()
    await store.update_status("job-1", JobStatus.RUNNING, pause_reason=PauseReason.USER)
    job = await get()
    assert job.status is JobStatus.RUNNING
    assert job.pause_reason is None  # only kept while paused
    assert job.started_at is not None and job.started_at >= before - timedelta(seconds=1)
    assert job.started_at.utcoffset() == timedelta(0)
    assert job.completed_at is None
    started = job.started_at

    await store.update_status("job-1", JobStatus.PAUSED, pause_reason=PauseReason.USER)
    job = await get()
    assert (job.status, job.pause_reason) == (JobStatus.PAUSED, PauseReason.USER)
    assert job.completed_at is None

    await store.update_status("job-1", JobStatus.RUNNING)
    job = await get()
    assert job.started_at == started  # set on the first `running` only
    assert job.pause_reason is None

    await store.update_status("job-1", JobStatus.FAILED, error="sheet 2 failed")
    job = await get()
    assert (job.status, job.error) == (JobStatus.FAILED, "sheet 2 failed")
    assert job.completed_at is not None and job.completed_at >= started
    assert job.pause_reason is None

    await store.update_status("job-1", JobStatus.QUEUED)  # resume of a failed job
    job = await get()
    assert (job.status, job.completed_at, job.error) == (JobStatus.QUEUED, None, None)
    assert job.started_at == started

    await store.update_status("job-1", JobStatus.CANCELLED, pause_reason=PauseReason.SHUTDOWN)
    job = await get()
    assert job.completed_at is not None and job.pause_reason is None

    with pytest.raises(KeyError):
        await store.update_status("no-such-job", JobStatus.RUNNING)


async def test_update_progress_repairs_counters(store: SQLiteStore, db_path: Path) -> None:
    await make_job(
        store, "job-1", sheets=(SheetStatus.COMPLETED, SheetStatus.FAILED, SheetStatus.COMPLETED)
    )
    conn = raw(db_path)
    try:
        with conn:
            conn.execute(
                "UPDATE jobs SET completed_sheets = 42, failed_sheets = 42, "
                "total_sheets = 42 WHERE job_id = 'job-1'"
            )
    finally:
        conn.close()
    job = await store.get_job("job-1")
    assert job is not None and job.completed_sheets == 42
    await store.update_progress("job-1")
    job = await store.get_job("job-1")
    assert job is not None
    assert (job.total_sheets, job.completed_sheets, job.failed_sheets) == (3, 2, 1)


def checkpoint(job_id: str = "imported") -> JobDetail:
    return JobDetail(
        job_id=job_id,
        name="imported",
        status=JobStatus.PAUSED,
        total_sheets=2,
        completed_sheets=1,
        failed_sheets=0,
        submitted_at=T0,
        started_at=T0 + timedelta(seconds=1),
        completed_at=None,
        pause_reason=PauseReason.INTERRUPTED,
        error=None,
        labels=["restored"],
        workspace="/w/imported",
        priority=2,
        sheets_total_matching=2,
        sheets=[
            SheetState(
                sheet_num=1,
                name="first",
                status=SheetStatus.COMPLETED,
                attempts=1,
                depends_on=[],
                instrument="shell",
                started_at=T0,
                completed_at=T0 + timedelta(seconds=5),
                duration_seconds=5.0,
                last_error=None,
                error_category=None,
                waiting_reason=None,
                waiting_until=None,
                output_tail="42\n",
                log_uri=None,
            ),
            SheetState(
                sheet_num=2,
                name="second",
                status=SheetStatus.PENDING,
                attempts=0,
                depends_on=[1],
                instrument="claude-code",
                started_at=None,
                completed_at=None,
                duration_seconds=None,
                last_error="interrupted",
                error_category=ErrorCategory.INTERRUPTED,
                waiting_reason=None,
                waiting_until=None,
                output_tail=None,
                log_uri=None,
            ),
        ],
        spec={"name": "imported", "sheets": [{"prompt": "a"}, {"prompt": "b"}]},
    )


async def test_save_checkpoint_round_trip_for_a_new_job(store: SQLiteStore) -> None:
    detail = checkpoint()
    await store.save_checkpoint(detail)
    loaded = await store.load_checkpoint("imported")
    assert loaded is not None
    assert loaded.model_dump(mode="json") == detail.model_dump(mode="json")
    # Written as rows, not a blob: the row-level API sees them.
    sheet = await store.get_sheet("imported", 2)
    assert sheet is not None and sheet.depends_on == [1] and sheet.instrument == "claude-code"
    jobs, _ = await store.query_jobs(JobQuery(label="restored"))
    assert job_ids(jobs) == ["imported"]

    # `save` (the seed name) does the same, and derives counters from the sheets.
    other = checkpoint("imported-2").model_copy(update={"completed_sheets": 9})
    await store.save(other)
    loaded = await store.load("imported-2")
    assert loaded is not None and loaded.completed_sheets == 1


async def test_save_checkpoint_updates_an_existing_job(store: SQLiteStore) -> None:
    await make_job(store, "job-1", labels=["old"])
    original = await store.load("job-1")
    assert original is not None
    changed = original.model_copy(deep=True)
    changed.status = JobStatus.RUNNING
    changed.labels = ["new"]
    changed.sheets[0].status = SheetStatus.COMPLETED
    changed.sheets[0].attempts = 1
    changed.sheets[1].status = SheetStatus.FAILED
    changed.sheets[1].last_error = "boom"
    changed.spec = None  # no spec in the checkpoint: the stored one is kept
    await store.save_checkpoint(changed)

    loaded = await store.load_checkpoint("job-1")
    assert loaded is not None
    assert loaded.status is JobStatus.RUNNING
    assert loaded.labels == ["new"]
    assert [s.status for s in loaded.sheets] == [
        SheetStatus.COMPLETED,
        SheetStatus.FAILED,
        SheetStatus.PENDING,
    ]
    assert loaded.sheets[1].last_error == "boom"
    assert (loaded.completed_sheets, loaded.failed_sheets) == (1, 1)
    assert loaded.spec == original.spec
    assert job_ids((await store.query_jobs(JobQuery(label="old")))[0]) == []
    assert job_ids((await store.query_jobs(JobQuery(label="new")))[0]) == ["job-1"]

    # Saving what was loaded changes nothing visible.
    await store.save_checkpoint(loaded)
    again = await store.load_checkpoint("job-1")
    assert again is not None
    assert again.model_dump(mode="json") == loaded.model_dump(mode="json")


async def test_save_of_a_loaded_checkpoint_keeps_row_only_fields(store: SQLiteStore) -> None:
    job = job_row(
        "job-1",
        description="nightly build",
        spec_path="/specs/a.yaml",
        snapshot_path="/snaps/x",
        conductor_pid=4242,
    )
    await store.create_job(
        job,
        [
            sheet_row(
                "job-1",
                1,
                status=SheetStatus.FAILED,
                attempts=3,
                retries_used=2,
                rate_limit_hits=4,
                log_path="/logs/job-1/1.3.log",
            ),
        ],
    )
    before = await store.load("job-1")
    assert before is not None and before.sheets[0].log_uri is not None

    await store.save_checkpoint(before)

    after = await store.load("job-1")
    assert after is not None
    assert after.model_dump(mode="json") == before.model_dump(mode="json")
    sheet = await store.get_sheet("job-1", 1)
    assert sheet is not None
    assert (sheet.log_path, sheet.retries_used, sheet.rate_limit_hits) == (
        "/logs/job-1/1.3.log",
        2,
        4,
    )
    row = await store.get_job("job-1")
    assert row is not None
    assert (row.description, row.spec_path, row.snapshot_path, row.conductor_pid) == (
        "nightly build",
        "/specs/a.yaml",
        "/snaps/x",
        4242,
    )


async def test_job_statistics(store: SQLiteStore) -> None:
    await make_job(
        store,
        "job-1",
        status=JobStatus.RUNNING,
        sheets=(
            SheetStatus.COMPLETED,
            SheetStatus.COMPLETED,
            SheetStatus.FAILED,
            SheetStatus.RUNNING,
        ),
    )
    await store.write(
        attempts=[
            finished_attempt("job-1", 1, 1, duration=2.0),
            finished_attempt("job-1", 2, 1, outcome=Outcome.TIMEOUT, duration=10.0),
            finished_attempt("job-1", 2, 2, duration=3.5),
            finished_attempt("job-1", 3, 1, outcome=Outcome.FAILED, duration=0.5),
            finished_attempt("job-1", 3, 2, outcome=Outcome.FAILED, duration=0.25),
            attempt_row("job-1", 4, 1),
        ]
    )
    stats = await store.get_job_statistics("job-1")
    assert stats is not None
    assert stats.job_id == "job-1"
    assert stats.sheets_by_status == {"completed": 2, "failed": 1, "running": 1}
    assert stats.total_attempts == 6
    assert stats.attempts_by_outcome == {"completed": 2, "timeout": 1, "failed": 2, "in_flight": 1}
    assert stats.total_duration_seconds == pytest.approx(16.25)
    assert await store.get_job_statistics("no-such-job") is None

    await make_job(store, "empty", sheets=())
    empty = await store.get_job_statistics("empty")
    assert empty is not None
    assert (empty.total_attempts, empty.sheets_by_status, empty.total_duration_seconds) == (
        0,
        {},
        0.0,
    )


# ----- rate limits ----------------------------------------------------------------------------


async def test_rate_limits_set_get_clear_and_persist(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    try:
        assert await store.get_rate_limits() == []
        gemini = RateLimitRow("gemini-cli", T0 + timedelta(minutes=5), "429", T0)
        claude = RateLimitRow("claude-code", T0 + timedelta(minutes=1), None, T0)
        await store.set_rate_limit(gemini)
        await store.set_rate_limit(claude)
        assert await store.get_rate_limits() == [claude, gemini]

        later = RateLimitRow(
            "gemini-cli", T0 + timedelta(hours=1), "quota", T0 + timedelta(minutes=1)
        )
        await store.set_rate_limit(later)  # one row per instrument: replaced
        assert await store.get_rate_limits() == [claude, later]
        assert all(r.until.utcoffset() == timedelta(0) for r in await store.get_rate_limits())

        assert await store.clear_rate_limit("claude-code") is True
        assert await store.clear_rate_limit("claude-code") is False
        assert await store.clear_rate_limit("never-set") is False
    finally:
        await store.close()

    reopened = await SQLiteStore.open(db_path)
    try:
        assert await reopened.get_rate_limits() == [later]
    finally:
        await reopened.close()


# ----- schema versions and migrations ---------------------------------------------------------


def schema_version(path: Path) -> int:
    return raw_count(path, "SELECT version FROM schema_version")


def table_names(path: Path) -> set[str]:
    conn = raw(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


async def make_v1_database(path: Path) -> None:
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        assert await migrate(conn, path, target=1) == 1
        params = job_params(
            job_row("old-job", status=JobStatus.COMPLETED, total_sheets=1, completed_at=T0)
        )
        await conn.execute(Q["insert_job"], params)
        await conn.execute(
            "INSERT INTO sheets (job_id, sheet_num, name, status, instrument, updated_at) "
            "VALUES ('old-job', 1, 'only', 'completed', 'shell', ?)",
            (params["updated_at"],),
        )
    finally:
        await conn.close()


async def test_older_database_is_migrated_in_place(tmp_path: Path) -> None:
    assert LATEST_SCHEMA_VERSION >= 2
    path = tmp_path / "old.db"
    await make_v1_database(path)
    assert schema_version(path) == 1
    assert "rate_limits" not in table_names(path)
    assert "jobs" in table_names(path)

    store = await SQLiteStore.open(path)
    try:
        assert schema_version(path) == LATEST_SCHEMA_VERSION
        detail = await store.load("old-job")
        assert detail is not None
        assert detail.status is JobStatus.COMPLETED
        assert [s.name for s in detail.sheets] == ["only"]
        until = T0 + timedelta(minutes=3)
        await store.set_rate_limit(RateLimitRow("shell", until, "test", T0))
        assert [r.until for r in await store.get_rate_limits()] == [until]
    finally:
        await store.close()

    # Opening again is a no-op migration.
    store = await SQLiteStore.open(path)
    try:
        assert schema_version(path) == LATEST_SCHEMA_VERSION
        assert len(await store.get_rate_limits()) == 1
    finally:
        await store.close()


async def test_newer_database_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    store = await SQLiteStore.open(path)
    await make_job(store, "job-1")
    await store.close()
    too_new = LATEST_SCHEMA_VERSION + 5
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("UPDATE schema_version SET version = ?", (too_new,))
    finally:
        conn.close()
    before = path.read_bytes()

    with pytest.raises(SchemaTooNewError) as info:
        await SQLiteStore.open(path)
    message = str(info.value)
    assert str(path) in message
    assert str(too_new) in message and str(LATEST_SCHEMA_VERSION) in message

    assert path.read_bytes() == before
    assert schema_version(path) == too_new


async def test_newer_rollback_journal_database_is_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "new-delete-mode.db"
    await make_v1_database(path)  # a plain aiosqlite connection: rollback-journal mode
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("UPDATE schema_version SET version = ?", (LATEST_SCHEMA_VERSION + 1,))
    finally:
        conn.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNewError):
        await SQLiteStore.open(path)
    assert path.read_bytes() == before


async def test_failed_migration_rolls_back_completely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "broken.db"
    store = await SQLiteStore.open(path)
    await store.close()
    broken = (
        LATEST_SCHEMA_VERSION + 1,
        "broken",
        "CREATE TABLE half_done (x);\nINSERT INTO no_such_table VALUES (1);",
    )
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, broken])
    monkeypatch.setattr(schema, "LATEST_SCHEMA_VERSION", LATEST_SCHEMA_VERSION + 1)
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        await SQLiteStore.open(path)
    assert schema_version(path) == LATEST_SCHEMA_VERSION
    assert "half_done" not in table_names(path)


async def test_wal_mode_and_foreign_keys(store: SQLiteStore, db_path: Path) -> None:
    conn = raw(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    with pytest.raises(sqlite3.IntegrityError):
        await store.write(sheets=[sheet_row("ghost", 1)])
    with pytest.raises(sqlite3.IntegrityError):
        await store.write(attempts=[attempt_row("ghost", 1, 1)])
    assert raw_count(db_path, "SELECT count(*) FROM sheets") == 0
    assert raw_count(db_path, "SELECT count(*) FROM attempts") == 0


# ----- times ----------------------------------------------------------------------------------


async def test_times_are_utc_and_serialize_with_z(store: SQLiteStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=plus_two)  # == T0
    await store.create_job(
        job_row("job-1", submitted_at=local, started_at=local),
        [
            sheet_row(
                "job-1",
                1,
                status=SheetStatus.WAITING,
                started_at=local,
                waiting_until=local + timedelta(minutes=5),
            )
        ],
    )
    await store.write(attempts=[attempt_row("job-1", 1, 1, started_at=local)])

    row = await store.get_job("job-1")
    assert row is not None
    assert row.submitted_at == T0
    assert row.submitted_at.tzinfo is not None and row.submitted_at.utcoffset() == timedelta(0)
    assert row.submitted_at.hour == 12 and row.submitted_at.microsecond == 123456

    detail = await store.load("job-1")
    assert detail is not None
    dumped = detail.model_dump(mode="json")
    assert dumped["submitted_at"] == "2024-05-01T12:00:00.123456Z"
    assert dumped["started_at"] == "2024-05-01T12:00:00.123456Z"
    assert dumped["completed_at"] is None
    assert dumped["sheets"][0]["started_at"] == "2024-05-01T12:00:00.123456Z"
    assert dumped["sheets"][0]["waiting_until"] == "2024-05-01T12:05:00.123456Z"
    [entry] = await store.get_execution_history("job-1")
    assert entry.started_at == T0 and entry.started_at.utcoffset() == timedelta(0)
    assert entry.model_dump(mode="json")["started_at"].endswith("Z")
    [summary] = await store.list_jobs()
    assert summary.model_dump(mode="json")["submitted_at"].endswith("Z")


async def test_cancelled_read_or_write_leaves_the_store_usable(store: SQLiteStore) -> None:
    """A call cancelled while its BEGIN is in flight must not leave a connection inside a
    transaction (every later call would fail)."""
    import asyncio

    await store.create_job(job_row("job-c"), [sheet_row("job-c", 1)])
    for connection in (store._reader, store._writer):
        original = connection._execute
        armed = {"on": True}

        async def slow_begin(
            fn: Any, *args: Any, _orig: Any = original, _armed: Any = armed, **kwargs: Any
        ) -> Any:
            if _armed["on"] and args and str(args[0]).startswith("BEGIN"):
                queued = asyncio.ensure_future(_orig(fn, *args, **kwargs))
                await anyio.sleep(0.3)
                return await queued
            return await _orig(fn, *args, **kwargs)

        connection._execute = slow_begin  # type: ignore[method-assign]
        try:
            with anyio.move_on_after(0.1) as scope:
                if connection is store._reader:
                    await store.get_job("job-c")
                else:
                    await store.update_progress("job-c")
            assert scope.cancelled_caught
        finally:
            armed["on"] = False
            connection._execute = original  # type: ignore[method-assign]
        await anyio.sleep(0.4)
        assert await store.get_job("job-c") is not None
        await store.update_progress("job-c")

"""What only the SQLite store has: the file itself (WAL, foreign keys), schema versions and
migrations (SPEC §3), the counters its triggers keep, and its indexes (query plans, not
timings). The behaviour every store shares is in test_store_contract.py."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from podium.core.errors import SchemaTooNewError
from podium.core.models import JobStatus, SheetStatus
from podium.core.store.base import NewJob, WriteBatch
from podium.core.store.rows import HoldRow, JobQuery, JobRow, SheetRow
from podium.core.store.sqlite import schema
from podium.core.store.sqlite.schema import LATEST_SCHEMA_VERSION, migrate
from podium.core.store.sqlite.store import SQLiteStore

pytestmark = pytest.mark.anyio

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


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


def raw(path: Path) -> sqlite3.Connection:
    """A separate, plain sqlite3 connection to the same file (what another process sees)."""
    return sqlite3.connect(path)


def raw_value(path: Path, sql: str, *params: Any) -> Any:
    conn = raw(path)
    try:
        return conn.execute(sql, params).fetchone()[0]
    finally:
        conn.close()


def table_names(path: Path) -> set[str]:
    conn = raw(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def job(job_id: str, status: JobStatus = JobStatus.QUEUED, **extra: Any) -> JobRow:
    return JobRow(
        job_id=job_id,
        name="demo",
        status=status,
        workspace=f"/w/{job_id}",
        spec_fingerprint="fp",
        total_sheets=0,
        submitted_at=extra.pop("submitted_at", T0),
        updated_at=T0,
        **extra,
    )


def sheet(job_id: str, num: int, status: SheetStatus = SheetStatus.PENDING) -> SheetRow:
    return SheetRow(job_id, num, None, status, "shell", T0)


async def add_job(store: SQLiteStore, row: JobRow, sheets: int = 2) -> None:
    batch = WriteBatch(
        new_jobs=[
            NewJob(row, {"name": row.name}, [sheet(row.job_id, n) for n in range(1, sheets + 1)])
        ]
    )
    assert await store.commit([batch]) == [None]


# ----- the file ----------------------------------------------------------------------------


async def test_wal_mode_and_foreign_keys(store: SQLiteStore, db_path: Path) -> None:
    assert raw_value(db_path, "PRAGMA journal_mode") == "wal"
    # A row of a job that does not exist breaks the batch (and the store stays usable).
    with pytest.raises(sqlite3.IntegrityError):
        await store.commit([WriteBatch(new_sheets=[sheet("ghost", 1)])])
    assert raw_value(db_path, "SELECT count(*) FROM sheets") == 0
    await add_job(store, job("job-1"))
    assert raw_value(db_path, "SELECT count(*) FROM sheets") == 2


async def test_an_unreadable_stored_spec_travels_with_the_job(
    store: SQLiteStore, db_path: Path
) -> None:
    await add_job(store, job("job-1"))
    conn = raw(db_path)
    with conn:
        conn.execute("UPDATE jobs SET spec_json = 'not json {' WHERE job_id = 'job-1'")
    conn.close()
    record = await store.load_job("job-1")
    assert record is not None and record.spec is None
    assert record.spec_error is not None and "not readable JSON" in record.spec_error
    # Every other read of the job still works.
    assert (await store.query_jobs(JobQuery()))[0][0].job_id == "job-1"
    assert await store.get_spec("job-1") is None


async def test_counters_kept_by_triggers_match_a_recount(store: SQLiteStore, db_path: Path) -> None:
    statuses = list(JobStatus)
    for i in range(30):
        await add_job(store, job(f"job-{i}", statuses[i % 6]), sheets=3)
    rows = await store.get_sheets("job-7")
    rows[0].status = SheetStatus.COMPLETED
    rows[1].status = SheetStatus.FAILED
    assert await store.commit([WriteBatch(sheets=rows[:2])]) == [None]
    finished = await store.get_job("job-3")
    assert finished is not None
    assert await store.commit([WriteBatch(deleted_jobs=[finished])]) == [None]
    conn = raw(db_path)
    try:
        recount = dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
        kept = dict(conn.execute("SELECT status, n FROM job_status_counts WHERE n > 0").fetchall())
        assert kept == recount
        progress = conn.execute(
            "SELECT total_sheets, completed_sheets, failed_sheets FROM jobs WHERE job_id='job-7'"
        ).fetchone()
        assert progress == (3, 1, 1)
    finally:
        conn.close()


# ----- indexes (EXPLAIN QUERY PLAN, no timing) ---------------------------------------------


@pytest.fixture
async def big_store(store: SQLiteStore, db_path: Path) -> SQLiteStore:
    """2,000 jobs with shared timestamps, written on a second connection."""
    statuses = list(JobStatus)
    conn = raw(db_path)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO jobs (job_id, name, status, workspace, spec_json, spec_fingerprint,"
                " total_sheets, submitted_at, updated_at) VALUES (?, ?, ?, '/w', '{}', 'fp', 0,"
                " ?, ?)",
                [
                    (
                        f"job-{i:05d}",
                        f"name-{i % 25}",
                        statuses[i % len(statuses)].value,
                        (T0 + timedelta(seconds=i // 4)).isoformat()[:26] + "Z",
                        T0.isoformat()[:26] + "Z",
                    )
                    for i in range(2000)
                ],
            )
    finally:
        conn.close()
    return store


def query_plan(path: Path, sql: str, params: Any = ()) -> list[str]:
    conn = raw(path)
    try:
        return [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    finally:
        conn.close()


def assert_indexed_and_ordered(plan: list[str]) -> None:
    assert any("USING INDEX" in step or "USING COVERING INDEX" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
    assert not any(step.startswith("SCAN jobs") and "INDEX" not in step for step in plan), plan


@pytest.mark.parametrize(
    "query",
    [
        JobQuery(limit=50),
        JobQuery(name="name-3", limit=50),
        JobQuery(statuses=(JobStatus.FAILED,), limit=50),
        JobQuery(statuses=(JobStatus.FAILED, JobStatus.CANCELLED), limit=50),
    ],
    ids=["newest", "by-name", "one-status", "two-statuses"],
)
async def test_listings_read_an_index_in_order(
    big_store: SQLiteStore, db_path: Path, query: JobQuery
) -> None:
    sql, params = big_store.listing_sql(query)
    assert_indexed_and_ordered(query_plan(db_path, sql, params))
    jobs, cursor = await big_store.query_jobs(query)
    assert len(jobs) == 50 and cursor is not None
    # The next page too.
    sql, params = big_store.listing_sql(JobQuery(**{**query.__dict__, "cursor": cursor}))
    assert_indexed_and_ordered(query_plan(db_path, sql, params))


async def test_status_counts_read_no_job_row(big_store: SQLiteStore, db_path: Path) -> None:
    counts = await big_store.count_jobs_by_status()
    assert sum(counts.values()) == 2000
    plan = query_plan(db_path, "SELECT status, n FROM job_status_counts WHERE n > 0")
    assert not any("jobs" in step.split() for step in plan), plan


# ----- schema versions and migrations --------------------------------------------------------


def make_v2_database(path: Path) -> None:
    """A database as Podium left it before engine v2: conductor_pid, rate_limits, and
    counters recounted on every write."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrate(conn, path, target=2) == 2
        stamp = T0.isoformat()[:26] + "Z"
        conn.execute(
            "INSERT INTO jobs (job_id, name, status, workspace, spec_json, spec_fingerprint,"
            " total_sheets, completed_sheets, submitted_at, completed_at, updated_at,"
            " conductor_pid) VALUES ('old-job', 'old', 'completed', '/w', '{\"name\": \"old\"}',"
            " 'fp', 1, 1, ?, ?, ?, 4242)",
            (stamp, stamp, stamp),
        )
        conn.execute(
            "INSERT INTO sheets (job_id, sheet_num, name, status, instrument, updated_at) "
            "VALUES ('old-job', 1, 'only', 'completed', 'shell', ?)",
            (stamp,),
        )
        conn.execute(
            "INSERT INTO rate_limits (instrument, until, reason, set_at) "
            "VALUES ('claude-code', ?, '429', ?)",
            (stamp, stamp),
        )
    finally:
        conn.close()


async def test_an_older_database_is_migrated_in_place(tmp_path: Path) -> None:
    assert LATEST_SCHEMA_VERSION >= 3
    path = tmp_path / "old.db"
    make_v2_database(path)
    assert raw_value(path, "SELECT version FROM schema_version") == 2
    store = await SQLiteStore.open(path)
    try:
        assert raw_value(path, "SELECT version FROM schema_version") == LATEST_SCHEMA_VERSION
        assert "rate_limits" not in table_names(path) and "holds" in table_names(path)
        record = await store.load_job("old-job")
        assert record is not None and record.job.version == 1
        assert record.job.status is JobStatus.COMPLETED
        assert (record.job.total_sheets, record.job.completed_sheets) == (1, 1)
        assert [s.name for s in record.sheets] == ["only"]
        assert record.spec == {"name": "old"}
        [hold] = await store.holds()
        assert (hold.hold_key, hold.reason, hold.released) == ("claude-code", "429", False)
        assert await store.count_jobs_by_status() == {"completed": 1}
    finally:
        await store.close()
    # Opening again is a no-op migration.
    store = await SQLiteStore.open(path)
    try:
        assert raw_value(path, "SELECT version FROM schema_version") == LATEST_SCHEMA_VERSION
        assert len(await store.holds()) == 1
        assert await store.commit([WriteBatch(holds=[HoldRow("x", T0, None, T0)])]) == [None]
    finally:
        await store.close()


async def test_a_v3_database_gains_attempt_usage_and_job_totals(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrate(conn, path, target=3) == 3
        stamp = T0.isoformat()[:26] + "Z"
        conn.execute(
            "INSERT INTO jobs (job_id, name, status, workspace, spec_json, spec_fingerprint,"
            " total_sheets, submitted_at, updated_at) VALUES ('v3-job', 'old', 'failed', '/w',"
            " '{\"name\": \"old\"}', 'fp', 0, ?, ?)",
            (stamp, stamp),
        )
        conn.execute(
            "INSERT INTO attempts (job_id, sheet_num, attempt, started_at, outcome) "
            "VALUES ('v3-job', 1, 1, ?, 'timeout')",
            (stamp,),
        )
    finally:
        conn.close()
    store = await SQLiteStore.open(path)
    try:
        record = await store.load_job("v3-job")
        assert record is not None
        assert (record.job.cost_usd, record.job.input_tokens, record.job.cost_limit_usd) == (
            None, None, None,
        )  # fmt: skip
        (attempt,), _ = await store.get_history("v3-job", None, 10, 0)
        entry = attempt.entry()
        assert (entry.session_id, entry.cost_usd, entry.output_tokens, entry.instrument) == (
            None, None, None, None,
        )  # fmt: skip
        # The new columns are written and read back like any other.
        edited = attempt
        edited.session_id, edited.cost_usd, edited.input_tokens = "s-1", 0.25, 1200
        job_row = record.job
        job_row.cost_usd, job_row.input_tokens = 0.25, 1200
        assert await store.commit([WriteBatch(attempts=[edited], jobs=[job_row])]) == [None]
        (again,), _ = await store.get_history("v3-job", None, 10, 0)
        assert (again.session_id, again.cost_usd, again.input_tokens) == ("s-1", 0.25, 1200)
        reread = await store.get_job("v3-job")
        assert reread is not None and (reread.cost_usd, reread.input_tokens) == (0.25, 1200)
    finally:
        await store.close()


async def test_a_newer_database_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    store = await SQLiteStore.open(path)
    await add_job(store, job("job-1"))
    await store.close()
    too_new = LATEST_SCHEMA_VERSION + 5
    conn = raw(path)
    with conn:
        conn.execute("UPDATE schema_version SET version = ?", (too_new,))
    conn.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNewError) as info:
        await SQLiteStore.open(path)
    message = str(info.value)
    assert str(path) in message
    assert str(too_new) in message and str(LATEST_SCHEMA_VERSION) in message
    assert path.read_bytes() == before


async def test_a_newer_rollback_journal_database_is_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "new-delete-mode.db"
    make_v2_database(path)  # a plain connection: rollback-journal mode
    conn = raw(path)
    with conn:
        conn.execute("UPDATE schema_version SET version = ?", (LATEST_SCHEMA_VERSION + 1,))
    conn.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNewError):
        await SQLiteStore.open(path)
    assert path.read_bytes() == before


async def test_a_failed_migration_rolls_back_completely(
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
    assert raw_value(path, "SELECT version FROM schema_version") == LATEST_SCHEMA_VERSION
    assert "half_done" not in table_names(path)


# ----- big writes --------------------------------------------------------------------------


async def test_a_write_of_thousands_of_rows_leaves_the_loop_free(
    store: SQLiteStore, db_path: Path
) -> None:
    """A job of thousands of sheets (a spec may have 10,000) committed on the event loop held it
    for ~2 s: every other client of the conductor waited that long. Such a write runs in a
    worker thread; a small write meanwhile waits for it and then lands."""
    lags: list[float] = []
    stop = anyio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            await anyio.sleep(0.01)
            lags.append(time.monotonic() - t0 - 0.01)

    big = job("big")
    rows = [sheet("big", n) for n in range(1, 30_001)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0.05)
        writes = [store.commit([WriteBatch(new_jobs=[NewJob(big, {"name": "demo"}, rows)])])]
        results: list[list[Any]] = []

        async def small() -> None:
            await anyio.sleep(0.02)  # starts while the big write runs
            results.append(
                await store.commit([WriteBatch(new_jobs=[NewJob(job("small"), {}, [])])])
            )

        tg.start_soon(small)
        results.append(await writes[0])
        while len(results) < 2:
            await anyio.sleep(0.01)
        stop.set()
    assert results == [[None], [None]]
    assert raw_value(db_path, "SELECT total_sheets FROM jobs WHERE job_id = 'big'") == 30_000
    assert raw_value(db_path, "SELECT count(*) FROM jobs") == 2
    assert max(lags) < 0.15, sorted(lags)[-3:]

"""The store contract: what every implementation of `podium.core.store.base.Store` must do,
run against each backend in `tests/store_backends.py` (SPEC §2: one state model, rows not
blobs, progress in the same transaction, compare-and-set on row versions, attempt ownership
and leases; §7 field names and `Z` times; §9 traps 1, 3, 5, 6, 12)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
from store_backends import BACKENDS, Opener

from podium.core.checkpoint import read_checkpoint
from podium.core.models import (
    Decision,
    ErrorCategory,
    JobStatus,
    Outcome,
    SheetStatus,
    ValidationResult,
    WaitingReason,
    sheet_log_uri,
)
from podium.core.store.base import Conflict, NewJob, Store, StoreError, WriteBatch
from podium.core.store.rows import AttemptRow, HoldRow, JobQuery, JobRow, SheetRow, clone

pytestmark = pytest.mark.anyio

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
TERMINAL = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED)


@pytest.fixture(params=sorted(BACKENDS))
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return BACKENDS[request.param](tmp_path, request)


@pytest.fixture
async def store(opener: Opener) -> AsyncIterator[Store]:
    s = await opener()
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
    **extra: Any,
) -> JobRow:
    extra.setdefault("total_sheets", 0)
    return JobRow(
        job_id=job_id,
        name=name,
        status=status,
        workspace=f"/work/{job_id}",
        spec_fingerprint=f"fp-{job_id}",
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


def spec_of(job: JobRow) -> dict[str, Any]:
    return {"name": job.name, "labels": list(job.labels), "variables": {1: "Ada"}}


async def commit(store: Store, **rows: Any) -> Conflict | None:
    [result] = await store.commit([WriteBatch(**rows)])
    return result


async def make_job(
    store: Store,
    job_id: str = "job-1",
    sheets: Sequence[SheetStatus] = (SheetStatus.PENDING,) * 3,
    **job_kw: Any,
) -> JobRow:
    job = job_row(job_id, **job_kw)
    rows = [sheet_row(job_id, i, status=s) for i, s in enumerate(sheets, 1)]
    assert await commit(store, new_jobs=[NewJob(job, spec_of(job), rows)]) is None
    found = await store.get_job(job_id)
    assert found is not None
    return found


async def fresh(store: Store, job_id: str) -> JobRow:
    found = await store.get_job(job_id)
    assert found is not None
    return found


def job_ids(jobs: Sequence[Any]) -> list[str]:
    return [j.job_id for j in jobs]


# ----- rows in, rows out: the job, its sheets and spec, assembled on read ---------------------


async def test_a_job_reads_back_with_every_sheet_and_its_spec(store: Store) -> None:
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
    spec = spec_of(job)
    assert await commit(store, new_jobs=[NewJob(job, spec, list(reversed(sheets)))]) is None

    record = await store.load_job("job-1")
    assert record is not None and record.spec_error is None
    # Keys that are not strings survive (a template reading variables[1] needs them).
    assert record.spec == spec and record.spec["variables"] == {1: "Ada"}
    assert [s.sheet_num for s in record.sheets] == [1, 2, 3]
    assert record.job.version == 1 and all(s.version == 1 for s in record.sheets)
    assert await store.get_spec("job-1") == spec

    detail = await read_checkpoint(store, "job-1")
    assert detail is not None
    assert (detail.job_id, detail.name, detail.status) == ("job-1", "demo", JobStatus.QUEUED)
    assert detail.workspace == "/work/job-1"
    assert detail.priority == 3
    assert detail.labels == ["nightly", "repo-x"]
    assert (detail.total_sheets, detail.sheets_total_matching) == (3, 3)
    assert (detail.completed_sheets, detail.failed_sheets) == (1, 0)
    s1, s2, s3 = detail.sheets
    assert s1.status is SheetStatus.COMPLETED and s1.attempts == 1
    assert s1.log_uri == sheet_log_uri("job-1", 1)
    assert s1.duration_seconds == 4.0 and s1.completed_at == T0 + timedelta(seconds=4)
    # The view carries the last 2 KiB of the stored 4 KiB tail.
    assert s1.output_tail is not None and s1.output_tail.endswith("THE-END")
    assert len(s1.output_tail.encode()) == 2048
    assert s2.depends_on == [1] and s2.status is SheetStatus.WAITING
    assert s2.waiting_reason is WaitingReason.RATE_LIMIT
    assert s2.waiting_until == T0 + timedelta(hours=1)
    assert (s2.last_error, s2.error_category) == ("429", ErrorCategory.RATE_LIMITED)
    assert s2.log_uri is None
    assert s3.depends_on == [1, 2] and s3.name is None
    # The row keeps the full tail (the source of `outputs[N]`).
    row = await store.get_sheet("job-1", 1)
    assert row is not None and row.output_tail == long_tail

    assert await store.load_job("no-such-job") is None
    assert await store.get_job("no-such-job") is None
    assert await store.get_spec("no-such-job") is None
    assert await store.get_job_page("no-such-job", None, 0, 10) is None


async def test_a_job_row_reads_back_with_some_of_its_sheets_in_one_snapshot(
    store: Store,
) -> None:
    await make_job(store, "job-1", sheets=(SheetStatus.PENDING,) * 4)
    found = await store.load_rows("job-1", [4, 2, 9])
    assert found is not None
    job, sheets = found
    assert job == await fresh(store, "job-1")
    assert [s.sheet_num for s in sheets] == [2, 4]
    assert sheets[0] == await store.get_sheet("job-1", 2)
    assert await store.load_rows("no-such-job", [1]) is None


async def test_progress_follows_the_sheets_in_the_same_commit(store: Store) -> None:
    # Counters handed in by the caller are ignored: only the sheet rows count (trap 3).
    job = job_row("job-1", total_sheets=99, completed_sheets=7, failed_sheets=5)
    rows = [sheet_row("job-1", i) for i in range(1, 5)]
    await commit(store, new_jobs=[NewJob(job, spec_of(job), rows)])

    async def counters() -> tuple[int, int, int]:
        row = await fresh(store, "job-1")
        page = await store.get_job_page("job-1", None, 0, 10)
        assert page is not None
        [listed], _ = await store.query_jobs(JobQuery())
        # Every view reads the same row: they can never disagree (trap 1).
        assert (
            (row.completed_sheets, row.failed_sheets)
            == (page[0].completed_sheets, page[0].failed_sheets)
            == (listed.completed_sheets, listed.failed_sheets)
        )
        return row.total_sheets, row.completed_sheets, row.failed_sheets

    assert await counters() == (4, 0, 0)
    sheets = {s.sheet_num: s for s in await store.get_sheets("job-1")}

    def moved(num: int, status: SheetStatus) -> SheetRow:
        row = clone(sheets[num])
        row.status = status
        sheets[num] = clone(row)
        sheets[num].version += 1
        return row

    await commit(store, sheets=[moved(1, SheetStatus.COMPLETED), moved(2, SheetStatus.FAILED)])
    assert await counters() == (4, 1, 1)
    await commit(store, sheets=[moved(3, SheetStatus.COMPLETED)])
    assert await counters() == (4, 2, 1)

    # A job write with bogus counters does not overwrite the derived ones.
    stale = await fresh(store, "job-1")
    stale.status = JobStatus.RUNNING
    stale.completed_sheets, stale.failed_sheets, stale.total_sheets = 50, 50, 50
    assert await commit(store, jobs=[stale]) is None
    assert await counters() == (4, 2, 1)
    assert (await fresh(store, "job-1")).status is JobStatus.RUNNING

    # A failed sheet reset to pending (resume) drops out of failed_sheets.
    await commit(store, sheets=[moved(2, SheetStatus.PENDING)])
    assert await counters() == (4, 2, 0)
    # Skipped/cancelled sheets count as neither completed nor failed.
    await commit(store, sheets=[moved(2, SheetStatus.SKIPPED), moved(4, SheetStatus.CANCELLED)])
    assert await counters() == (4, 2, 0)
    # A sheet added later (a changed spec) counts too.
    added = sheet_row("job-1", 5, status=SheetStatus.COMPLETED)
    await commit(store, new_sheets=[added])
    assert await counters() == (5, 3, 0)


async def test_checkpoint_is_durable_and_identical_in_another_store(
    store: Store, opener: Opener
) -> None:
    await make_job(store, "job-1", labels=["a"])
    (sheet1,) = [s for s in await store.get_sheets("job-1") if s.sheet_num == 1]
    sheet1.status, sheet1.attempts = SheetStatus.COMPLETED, 1
    sheet1.output_tail, sheet1.log_path = "hello\n", "/logs/1.log"
    done = finished_attempt(
        "job-1",
        1,
        1,
        validations=[ValidationResult(type="file_exists", passed=True, detail=None)],
    )
    assert await commit(store, sheets=[sheet1], new_attempts=[done]) is None

    # A second store on the same location (another process, another conductor) sees the
    # committed transition without any close or flush.
    other = await opener()
    try:
        theirs = await read_checkpoint(other, "job-1")
        their_history = await other.get_history("job-1", None, 100, 0)
    finally:
        await other.close()
    ours = await read_checkpoint(store, "job-1")
    assert theirs is not None and ours is not None
    assert theirs.model_dump(mode="json") == ours.model_dump(mode="json")
    assert their_history == await store.get_history("job-1", None, 100, 0)
    # And the content is what was written, not just equal-but-empty.
    assert theirs.sheets[0].status is SheetStatus.COMPLETED
    assert theirs.completed_sheets == 1
    assert [(a.sheet_num, a.attempt, a.outcome) for a in their_history[0]] == [
        (1, 1, Outcome.COMPLETED)
    ]


# ----- compare-and-set ------------------------------------------------------------------------


async def test_a_stale_write_is_refused_whole_and_a_fresh_one_goes_through(store: Store) -> None:
    await make_job(store, "job-1")
    first = await fresh(store, "job-1")
    second = clone(first)  # another writer read the same version
    first.status = JobStatus.PAUSED
    assert await commit(store, jobs=[first]) is None
    assert (await fresh(store, "job-1")).version == first.version + 1

    # The second writer's copy is stale: its write is refused, and nothing of its batch lands.
    [sheet] = [s for s in await store.get_sheets("job-1") if s.sheet_num == 1]
    sheet.status = SheetStatus.COMPLETED
    second.status = JobStatus.CANCELLED
    conflict = await commit(store, jobs=[second], sheets=[sheet])
    assert conflict is not None and conflict.table == "jobs" and conflict.key == "job-1"
    after = await fresh(store, "job-1")
    assert after.status is JobStatus.PAUSED and after.completed_sheets == 0
    assert (await store.get_sheet("job-1", 1)).status is SheetStatus.PENDING  # type: ignore[union-attr]

    # Re-read, re-apply: the retry lands.
    second = await fresh(store, "job-1")
    second.status = JobStatus.CANCELLED
    assert await commit(store, jobs=[second], sheets=[sheet]) is None
    assert (await fresh(store, "job-1")).status is JobStatus.CANCELLED


@pytest.mark.parametrize("table", ["sheets", "attempts", "holds"])
async def test_every_versioned_row_is_compare_and_set(store: Store, table: str) -> None:
    await make_job(store, "job-1")
    assert await commit(store, new_attempts=[attempt_row("job-1", 1, 1)]) is None
    hold = HoldRow("shell", T0 + timedelta(minutes=5), "429", T0)
    assert await commit(store, holds=[hold]) is None
    if table == "sheets":
        [row] = [s for s in await store.get_sheets("job-1") if s.sheet_num == 1]
        field, value, key = "last_error", "x", "job-1/1"
    elif table == "attempts":
        row = await store.get_attempt("job-1", 1, 1)
        field, value, key = "error", "x", "job-1/1/1"
    else:
        [row] = await store.holds()
        field, value, key = "reason", "x", "shell"
    assert row is not None and row.version == 1
    stale = clone(row)
    setattr(row, field, value)
    assert await commit(store, **{table: [row]}) is None
    setattr(stale, field, "lost update")
    conflict = await commit(store, **{table: [stale]})
    assert conflict == Conflict(table, key)
    if table == "sheets":
        now = await store.get_sheet("job-1", 1)
    elif table == "attempts":
        now = await store.get_attempt("job-1", 1, 1)
    else:
        [now] = await store.holds()
    assert now is not None and getattr(now, field) == value and now.version == 2
    # A stale delete of a hold is refused as well.
    if table == "holds":
        assert await commit(store, deleted_holds=[stale]) == Conflict("holds", "shell")
        assert await commit(store, deleted_holds=[now]) is None
        assert await store.holds() == []


async def test_inserting_a_row_that_exists_is_refused(store: Store) -> None:
    await make_job(store, "job-1")
    again = job_row("job-1", name="other")
    refused = await commit(store, new_jobs=[NewJob(again, spec_of(again), [])])
    assert refused == Conflict("jobs", "job-1")
    assert (await fresh(store, "job-1")).name == "demo"
    assert await commit(store, new_attempts=[attempt_row("job-1", 1, 1)]) is None
    assert await commit(store, new_attempts=[attempt_row("job-1", 1, 1)]) == Conflict(
        "attempts", "job-1/1/1"
    )
    assert await commit(store, new_sheets=[sheet_row("job-1", 2)]) == Conflict("sheets", "job-1/2")
    hold = HoldRow("shell", T0, None, T0)
    assert await commit(store, holds=[hold]) is None
    assert await commit(store, holds=[HoldRow("shell", T0, None, T0)]) == Conflict("holds", "shell")


async def test_batches_of_one_commit_stand_or_fall_alone(store: Store) -> None:
    await make_job(store, "job-a")
    await make_job(store, "job-b")
    a, b = await fresh(store, "job-a"), await fresh(store, "job-b")
    stale_b = clone(b)
    b.status = JobStatus.PAUSED
    assert await commit(store, jobs=[b]) is None
    a.status = JobStatus.RUNNING
    stale_b.status = JobStatus.RUNNING
    c = job_row("job-c")
    results = await store.commit(
        [
            WriteBatch(jobs=[a]),
            WriteBatch(jobs=[stale_b], new_attempts=[attempt_row("job-b", 1, 1)]),
            WriteBatch(new_jobs=[NewJob(c, spec_of(c), [sheet_row("job-c", 1)])]),
        ]
    )
    assert results == [None, Conflict("jobs", "job-b"), None]
    assert (await fresh(store, "job-a")).status is JobStatus.RUNNING
    assert (await fresh(store, "job-b")).status is JobStatus.PAUSED
    assert await store.get_attempt("job-b", 1, 1) is None
    assert (await fresh(store, "job-c")).total_sheets == 1


async def test_two_stores_racing_on_one_row_never_lose_an_update(
    store: Store, opener: Opener
) -> None:
    """Two conductors on one store: each reads the row, changes it, writes it back; of two
    writes from the same version exactly one lands, and the loser's retry keeps both."""
    await make_job(store, "job-1", labels=[])
    other = await opener()
    rounds = 20
    try:

        async def add_labels(s: Store, prefix: str) -> int:
            refused = 0
            for i in range(rounds):
                while True:
                    row = await fresh(s, "job-1")
                    row.error = (row.error or "") + f"{prefix}{i};"
                    if await commit(s, jobs=[row]) is None:
                        break
                    refused += 1
            return refused

        refusals: dict[str, int] = {}

        async def run(s: Store, prefix: str) -> None:
            refusals[prefix] = await add_labels(s, prefix)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, store, "a")
            tg.start_soon(run, other, "b")
    finally:
        await other.close()
    final = await fresh(store, "job-1")
    parts = [p for p in (final.error or "").split(";") if p]
    assert sorted(parts) == sorted(
        [f"a{i}" for i in range(rounds)] + [f"b{i}" for i in range(rounds)]
    )
    assert final.version == 1 + 2 * rounds


# ----- attempts, ownership, leases, history (traps 6, 12) -------------------------------------


async def test_attempt_is_inserted_in_flight_then_finished(store: Store) -> None:
    await make_job(store, "job-1", status=JobStatus.RUNNING)
    lease = T0 + timedelta(seconds=30)
    started = attempt_row(
        "job-1",
        1,
        1,
        pid=4321,
        pgid=4321,
        pid_start_time=99.5,
        log_path="/logs/1.1.log",
        conductor_id="host-a",
        lease_expires_at=lease,
    )
    assert await commit(store, new_attempts=[started]) is None
    in_flight = await store.get_attempt("job-1", 1, 1)
    assert in_flight is not None
    assert in_flight.outcome is None and in_flight.ended_at is None
    assert (in_flight.pid, in_flight.pgid, in_flight.pid_start_time) == (4321, 4321, 99.5)
    assert (in_flight.conductor_id, in_flight.lease_expires_at) == ("host-a", lease)
    assert [(a.job_id, a.sheet_num, a.attempt) for a in await store.in_flight_attempts()] == [
        ("job-1", 1, 1)
    ]
    validations = [
        ValidationResult(type="file_exists", passed=True, detail=None),
        ValidationResult(type="content_regex", passed=False, detail="no match for ^[0-9]+$"),
    ]
    done = clone(in_flight)
    done.ended_at = T0 + timedelta(minutes=1, seconds=3.25)
    done.exit_code, done.duration_seconds, done.outcome = 1, 3.25, Outcome.FAILED
    done.error_category, done.error = ErrorCategory.VALIDATION_FAILED, "validation failed"
    done.validations = validations
    assert await commit(store, attempts=[done]) is None
    updated = await store.get_attempt("job-1", 1, 1)
    done.version += 1
    assert updated == done
    assert await store.in_flight_attempts() == []
    [entries], total = await store.get_history("job-1", None, 10, 0)
    assert total == 1
    entry = entries.entry()
    assert entry.outcome is Outcome.FAILED and entry.exit_code == 1
    assert entry.error_category is ErrorCategory.VALIDATION_FAILED
    assert entry.validations == validations
    assert entry.ended_at == T0 + timedelta(minutes=1, seconds=3.25)


async def test_text_holding_a_nul_is_kept_with_it_replaced_alike_in_every_store(
    store: Store,
) -> None:
    """A sheet may print NUL, and a tail or an error quotes it: PostgreSQL's text refuses
    the character (the whole result was lost), so every store keeps U+FFFD in its place."""
    await make_job(store, "job-1", status=JobStatus.RUNNING)
    assert await commit(store, new_attempts=[attempt_row("job-1", 1, 1)]) is None
    stored = await store.get_attempt("job-1", 1, 1)
    assert stored is not None
    done = clone(stored)
    done.ended_at, done.outcome = T0 + timedelta(seconds=1), Outcome.FAILED
    done.error, done.note = "exited: a\0b", "\0\0note"
    done.validations = [ValidationResult(type="content_contains", passed=False, detail="x\0y")]
    assert await commit(store, attempts=[done]) is None
    read = await store.get_attempt("job-1", 1, 1)
    assert read is not None
    assert (read.error, read.note) == ("exited: a\ufffdb", "\ufffd\ufffdnote")
    # JSON columns carry it escaped, so it comes back as it was.
    assert read.validations[0].detail == "x\0y"


async def test_leases_are_renewed_only_for_the_owners_attempts_in_flight(store: Store) -> None:
    await make_job(store, "job-1", status=JobStatus.RUNNING)
    old = T0 + timedelta(seconds=30)
    rows = [
        attempt_row("job-1", 1, 1, conductor_id="host-a", lease_expires_at=old),
        attempt_row("job-1", 2, 1, conductor_id="host-b", lease_expires_at=old),
        finished_attempt("job-1", 3, 1, conductor_id="host-a", lease_expires_at=old),
    ]
    assert await commit(store, new_attempts=rows) is None
    later = T0 + timedelta(minutes=5)
    renewed = T0 + timedelta(minutes=4, seconds=30)
    assert await store.renew_leases("host-a", later, renewed) == 1
    leases = {
        a.sheet_num: (a.lease_expires_at, a.lease_renewed_at)
        for a in (await store.get_history("job-1", None, 10, 0))[0]
    }
    # The renewal time is kept with the lease: when the attempt was last known running.
    assert leases == {1: (later, renewed), 2: (old, None), 3: (old, None)}
    # A lease renewal is not a change of the row: the owner's next write still lands, and
    # leaves the lease and its renewal time as the renewal wrote them.
    mine = await store.get_attempt("job-1", 1, 1)
    assert mine is not None and mine.version == 1
    mine.outcome = Outcome.INTERRUPTED
    mine.lease_renewed_at = None
    assert await commit(store, attempts=[mine]) is None
    written = await store.get_attempt("job-1", 1, 1)
    assert written is not None
    assert (written.outcome, written.lease_renewed_at) == (Outcome.INTERRUPTED, renewed)
    # Nothing of host-a in flight now.
    assert await store.renew_leases("host-a", later, later) == 0


async def test_history_is_paged_and_filtered(store: Store) -> None:
    await make_job(store, "job-1", status=JobStatus.RUNNING)
    await make_job(store, "job-2")
    attempts = [
        finished_attempt(
            "job-1", sheet, n, outcome=Outcome.FAILED if n < last else Outcome.COMPLETED
        )
        for sheet, last in ((1, 3), (2, 2), (3, 1))
        for n in range(1, last + 1)
    ]
    # Inserted out of order: the history order is (sheet_num, attempt), not insertion order.
    assert await commit(store, new_attempts=list(reversed(attempts))) is None
    assert await commit(store, new_attempts=[finished_attempt("job-2", 1, 1)]) is None

    def keys(rows: list[AttemptRow]) -> list[tuple[int, int]]:
        return [(a.sheet_num, a.attempt) for a in rows]

    expected = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 1)]
    everything, total = await store.get_history("job-1", None, 100, 0)
    assert keys(everything) == expected and total == 6
    page1, _ = await store.get_history("job-1", None, 4, 0)
    page2, _ = await store.get_history("job-1", None, 4, 4)
    page3, total3 = await store.get_history("job-1", None, 4, 8)
    assert keys(page1) == expected[:4] and keys(page2) == expected[4:]
    assert page3 == [] and total3 == 6
    sheet1, count1 = await store.get_history("job-1", 1, 100, 0)
    assert [a.attempt for a in sheet1] == [1, 2, 3] and count1 == 3
    assert [a.outcome for a in sheet1] == [Outcome.FAILED, Outcome.FAILED, Outcome.COMPLETED]
    assert [a.attempt for a in (await store.get_history("job-1", 1, 1, 1))[0]] == [2]
    assert await store.get_history("job-1", 9, 100, 0) == ([], 0)
    assert (await store.get_history("job-2", None, 100, 0))[1] == 1
    assert await store.get_history("nope", None, 100, 0) == ([], 0)
    latest = await store.get_latest_attempt("job-1", 1)
    assert latest is not None and latest.attempt == 3
    assert await store.get_latest_attempt("job-1", 9) is None


async def test_in_flight_attempts_of_every_job(store: Store) -> None:
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
        rows = [
            finished_attempt(job_id, 1, 1),  # finished: never in flight
            attempt_row(job_id, 2, 1, pid=10, pgid=10, pid_start_time=1.0),
        ]
        assert await commit(store, new_attempts=rows) is None
    found = await store.in_flight_attempts()
    assert [(a.job_id, a.sheet_num, a.attempt) for a in found] == [
        ("a-running", 2, 1),
        ("b-paused", 2, 1),
        ("c-completed", 2, 1),
        ("d-failed", 2, 1),
        ("e-cancelled", 2, 1),
        ("f-queued", 2, 1),
    ]
    assert all(a.outcome is None and a.pgid == 10 for a in found)


# ----- listing ------------------------------------------------------------------------------


async def test_query_jobs_order_and_filters(store: Store) -> None:
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


async def test_cursor_paging_visits_each_job_once_with_shared_timestamps(store: Store) -> None:
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
async def test_a_cursor_the_store_did_not_hand_out_is_refused(store: Store, cursor: str) -> None:
    await make_job(store, "job-1")
    with pytest.raises(StoreError, match="cursor"):
        await store.query_jobs(JobQuery(cursor=cursor))


async def test_limits_and_counts_by_status(store: Store) -> None:
    statuses = [JobStatus.QUEUED] * 3 + [JobStatus.RUNNING] * 2 + [JobStatus.COMPLETED]
    for i, status in enumerate(statuses):
        await make_job(
            store,
            f"job-{i}",
            status=status,
            sheets=(SheetStatus.PENDING,),
            submitted_at=T0 + timedelta(seconds=i),
        )
    assert job_ids((await store.query_jobs(JobQuery(limit=2)))[0]) == ["job-5", "job-4"]
    assert len((await store.query_jobs(JobQuery(limit=0)))[0]) == 1  # at least one
    assert await store.count_jobs_by_status() == {"queued": 3, "running": 2, "completed": 1}
    # Kept as jobs move and go.
    job = await fresh(store, "job-0")
    job.status = JobStatus.COMPLETED
    await commit(store, jobs=[job])
    assert await store.count_jobs_by_status() == {"queued": 2, "running": 2, "completed": 2}
    assert await commit(store, deleted_jobs=[await fresh(store, "job-0")]) is None
    assert await store.count_jobs_by_status() == {"queued": 2, "running": 2, "completed": 1}
    overview = await store.overview(5)
    assert overview.jobs_by_status == {"queued": 2, "running": 2, "completed": 1}
    assert (overview.approvals, overview.approvals_total) == ([], 0)
    # What the start's reconciliation of files reads: every job, a few columns.
    done = await fresh(store, "job-5")
    done.completed_at = T0 + timedelta(hours=1, microseconds=7)
    done.snapshot_path = "/home/snapshots/job-5/20250101T010000000007Z"
    assert await commit(store, jobs=[done]) is None
    files = {f.job_id: f for f in await store.job_files()}
    assert files["job-5"].completed_at == T0 + timedelta(hours=1, microseconds=7)
    assert files["job-5"].snapshot_path == done.snapshot_path
    assert sorted(files) == ["job-1", "job-2", "job-3", "job-4", "job-5"]
    for job_id, found in files.items():
        row = await fresh(store, job_id)
        assert (found.status, found.completed_at, found.snapshot_path) == (
            row.status,
            row.completed_at,
            row.snapshot_path,
        )
    by_status = await store.jobs_with_status([JobStatus.RUNNING, JobStatus.COMPLETED])
    assert sorted(job_ids(by_status)) == ["job-3", "job-4", "job-5"]
    assert await store.jobs_with_status([]) == []
    assert sorted(job_ids(await store.active_jobs())) == ["job-1", "job-2", "job-3", "job-4"]


async def test_sheet_pages_and_running_count(store: Store) -> None:
    statuses = [
        SheetStatus.COMPLETED,
        SheetStatus.RUNNING,
        SheetStatus.PENDING,
        SheetStatus.RUNNING,
        SheetStatus.FAILED,
    ]
    await make_job(store, "job-1", sheets=statuses)
    await make_job(store, "job-2", sheets=(SheetStatus.RUNNING,))
    page = await store.get_job_page("job-1", None, 1, 2)
    assert page is not None
    assert [r.sheet_num for r in page[1]] == [2, 3] and page[2] == 5
    page = await store.get_job_page("job-1", [SheetStatus.RUNNING, SheetStatus.FAILED], 0, 2)
    assert page is not None
    assert [r.sheet_num for r in page[1]] == [2, 4] and page[2] == 3
    assert await store.count_running_sheets() == 3


# ----- deletion, specs, holds -------------------------------------------------------------------


async def test_only_terminal_jobs_are_deleted_and_their_rows_go_with_them(store: Store) -> None:
    for status in JobStatus:
        job_id = f"job-{status.value}"
        await make_job(store, job_id, status=status, labels=["keep-or-drop"])
        assert await commit(store, new_attempts=[finished_attempt(job_id, 1, 1)]) is None
    for status in ACTIVE:
        refused = await commit(store, deleted_jobs=[await fresh(store, f"job-{status.value}")])
        assert refused == Conflict("jobs", f"job-{status.value}")
    for status in TERMINAL:
        row = await fresh(store, f"job-{status.value}")
        assert await commit(store, deleted_jobs=[row]) is None
    for status in ACTIVE:
        job_id = f"job-{status.value}"
        assert await store.get_job(job_id) is not None
        assert len(await store.get_sheets(job_id)) == 3
        assert (await store.get_history(job_id, None, 10, 0))[1] == 1
    for status in TERMINAL:
        job_id = f"job-{status.value}"
        assert await store.load_job(job_id) is None
        assert await store.get_sheets(job_id) == []
        assert await store.get_history(job_id, None, 10, 0) == ([], 0)
    jobs, _ = await store.query_jobs(JobQuery(label="keep-or-drop"))
    assert sorted(job_ids(jobs)) == ["job-paused", "job-queued", "job-running"]


async def test_a_replaced_spec_rewrites_the_labels_listed_by(store: Store) -> None:
    await make_job(store, "job-1", labels=["old"])
    job = await fresh(store, "job-1")
    job.labels = ["new", "more"]
    spec = {"name": "demo", "labels": ["new", "more"]}
    assert await commit(store, jobs=[job], specs={"job-1": spec}) is None
    assert await store.get_spec("job-1") == spec
    assert job_ids((await store.query_jobs(JobQuery(label="old")))[0]) == []
    assert job_ids((await store.query_jobs(JobQuery(label="more")))[0]) == ["job-1"]
    assert (await fresh(store, "job-1")).labels == ["new", "more"]


async def test_holds_persist_with_their_release(store: Store, opener: Opener) -> None:
    assert await store.holds() == []
    gemini = HoldRow("gemini-cli", T0 + timedelta(minutes=5), "429", T0)
    claude = HoldRow("claude-code", T0 + timedelta(minutes=1), None, T0)
    assert await commit(store, holds=[gemini, claude]) is None
    stored = await store.holds()
    assert [h.hold_key for h in stored] == ["claude-code", "gemini-cli"]
    released = clone(stored[1])
    released.released = True
    assert await commit(store, holds=[released]) is None
    other = await opener()
    try:
        [c, g] = await other.holds()
    finally:
        await other.close()
    assert (c.hold_key, c.released, c.reason) == ("claude-code", False, None)
    assert (g.hold_key, g.released, g.version) == ("gemini-cli", True, 2)
    assert g.until == T0 + timedelta(minutes=5) and g.until.utcoffset() == timedelta(0)


# ----- times, cancellation ------------------------------------------------------------------


async def test_times_are_utc_and_serialize_with_z(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=plus_two)  # == T0
    job = job_row("job-1", submitted_at=local, started_at=local)
    sheet = sheet_row(
        "job-1",
        1,
        status=SheetStatus.WAITING,
        started_at=local,
        waiting_until=local + timedelta(minutes=5),
    )
    await commit(store, new_jobs=[NewJob(job, spec_of(job), [sheet])])
    await commit(store, new_attempts=[attempt_row("job-1", 1, 1, started_at=local)])
    row = await fresh(store, "job-1")
    assert row.submitted_at == T0
    assert row.submitted_at.utcoffset() == timedelta(0)
    assert row.submitted_at.hour == 12 and row.submitted_at.microsecond == 123456
    detail = await read_checkpoint(store, "job-1")
    assert detail is not None
    dumped = detail.model_dump(mode="json")
    assert dumped["submitted_at"] == "2024-05-01T12:00:00.123456Z"
    assert dumped["started_at"] == "2024-05-01T12:00:00.123456Z"
    assert dumped["completed_at"] is None
    assert dumped["sheets"][0]["started_at"] == "2024-05-01T12:00:00.123456Z"
    assert dumped["sheets"][0]["waiting_until"] == "2024-05-01T12:05:00.123456Z"
    [attempt], _ = await store.get_history("job-1", None, 10, 0)
    entry = attempt.entry()
    assert entry.started_at == T0 and entry.started_at.utcoffset() == timedelta(0)
    assert entry.model_dump(mode="json")["started_at"].endswith("Z")
    [summary], _ = await store.query_jobs(JobQuery())
    assert summary.summary().model_dump(mode="json")["submitted_at"].endswith("Z")


async def test_a_cancelled_call_leaves_the_store_usable(store: Store) -> None:
    """A caller cancelled while its commit or read is under way must not leave the store in
    a transaction: the change is made whole or not at all, and every later call works."""
    await make_job(store, "job-c")
    for _ in range(20):
        row = await fresh(store, "job-c")
        row.error = "changed"
        with anyio.move_on_after(0):
            await store.commit([WriteBatch(jobs=[row])])
        with anyio.move_on_after(0):
            await store.get_job_page("job-c", None, 0, 10)
    after = await fresh(store, "job-c")
    assert after.error in (None, "changed")
    after.error = "final"
    assert await commit(store, jobs=[after]) is None
    assert (await fresh(store, "job-c")).error == "final"


# ----- approvals (issue 12) -------------------------------------------------------------------


async def test_pending_approvals_are_the_sheets_waiting_for_a_decision(store: Store) -> None:
    waiting = {"status": SheetStatus.WAITING, "waiting_until": T0 + timedelta(hours=1)}
    for n, job_id in enumerate(("job-a", "job-b", "job-c")):
        await make_job(store, job_id, sheets=(SheetStatus.COMPLETED, SheetStatus.PENDING))
        gate = sheet_row(
            job_id,
            2,
            waiting_reason=WaitingReason.APPROVAL,
            output_tail=f"Ship {job_id}?",
            started_at=T0 + timedelta(minutes=n),
            **waiting,
        )
        gate.updated_at = T0 + timedelta(minutes=n)
        gate.version = 1
        assert await commit(store, sheets=[gate]) is None
    # A sheet waiting for another reason is not an approval.
    other = sheet_row("job-c", 1, waiting_reason=WaitingReason.RATE_LIMIT, **waiting)
    other.version = 1
    assert await commit(store, sheets=[other]) is None
    rows, total = await store.pending_approvals(2)
    assert total == 3
    assert [(r.job_id, r.sheet_num, r.output_tail) for r in rows] == [
        ("job-a", 2, "Ship job-a?"),
        ("job-b", 2, "Ship job-b?"),
    ]
    # The status's one read: the same approvals beside the counts by status.
    overview = await store.overview(2)
    assert overview.approvals_total == 3
    assert [(r.job_id, r.sheet_num) for r in overview.approvals] == [("job-a", 2), ("job-b", 2)]
    assert overview.jobs_by_status == await store.count_jobs_by_status() == {"queued": 3}
    # The decision is the sheet's attempt: recorded with who made it and why.
    decided = finished_attempt(
        "job-a", 2, 1, decision=Decision.REJECT, decided_by="reviewer 1.0", note="not today"
    )
    assert await commit(store, new_attempts=[decided]) is None
    entry = (await store.get_history("job-a", 2, 10, 0))[0][0].entry()
    assert (entry.decision, entry.decided_by, entry.note) == (
        Decision.REJECT,
        "reviewer 1.0",
        "not today",
    )

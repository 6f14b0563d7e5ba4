"""The store contract for durable tasks, on every backend of `tests/store_backends.py`: a
task row reads back as written, its final state is written once (the first one stands, even
when two stores race), it outlives its job's rows, and the tasks not yet final are found by
job. Also: a task row of a schema from before final states gains them, empty."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from store_backends import BACKENDS, Opener
from test_store_contract import commit, fresh, make_job

from podium.core.models import JobStatus, SheetStatus
from podium.core.store.base import Store
from podium.core.store.rows import TaskRow, clone
from podium.core.store.sqlite.store import SQLiteStore

pytestmark = pytest.mark.anyio

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


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


def task_row(task_id: str, job_id: str = "job-1") -> TaskRow:
    return TaskRow(
        task_id=task_id,
        job_id=job_id,
        tool="run_job",
        created_at=T0,
        expires_at=T0 + timedelta(hours=2),
        ttl_ms=7_200_000,
        poll_interval_ms=2000,
        created_by="client 1.0",
    )


def finished(row: TaskRow, status: str, message: str, job_status: str = "completed") -> TaskRow:
    done = clone(row)
    done.final_status = status
    done.final_message = message
    done.final_at = T0 + timedelta(minutes=3)
    done.final_job_failed = job_status == "failed"
    done.final_detail = {
        "job_id": row.job_id,
        "status": job_status,
        "sheets": [{"sheet_num": 1, "output_tail": "tail ünïcode\n", "exit_code": 3}],
        "cost": {"usd": 0.25, "tokens": None},
    }
    return done


async def test_a_task_reads_back_and_its_first_final_state_stands(store: Store) -> None:
    await make_job(store, "job-1", sheets=(SheetStatus.FAILED,), status=JobStatus.FAILED)
    row = task_row("task-a")
    assert await commit(store, new_tasks=[row]) is None
    got = await store.get_task("task-a")
    assert got is not None and got.final_status is None and got.final_detail is None
    assert (got.job_id, got.created_at, got.created_by) == ("job-1", T0, "client 1.0")
    assert [t.task_id for t in await store.open_tasks(["job-1", "job-x"])] == ["task-a"]

    first = finished(got, "completed", "job job-1 failed: exit 3", job_status="failed")
    assert await commit(store, finished_tasks=[first]) is None
    stored = await store.get_task("task-a")
    assert stored is not None
    assert (stored.final_status, stored.final_message, stored.final_at) == (
        "completed",
        "job job-1 failed: exit 3",
        T0 + timedelta(minutes=3),
    )
    assert stored.final_job_failed is True and stored.final_error is None
    assert stored.final_detail == first.final_detail
    assert await store.open_tasks(["job-1"]) == []

    # Another final state later (the job resumed and ended otherwise) changes nothing, and
    # is not a conflict: the first one stands.
    later = finished(got, "cancelled", "job job-1 cancelled", job_status="cancelled")
    assert await commit(store, finished_tasks=[later]) is None
    again = await store.get_task("task-a")
    assert again is not None and again.final_status == "completed"
    assert again.final_detail == first.final_detail
    # A task that is gone (purged) is skipped, not an error.
    assert await commit(store, finished_tasks=[finished(task_row("gone"), "failed", "x")]) is None
    assert await store.get_task("gone") is None


async def test_a_final_state_outlives_the_job_and_a_reopen(store: Store, opener: Opener) -> None:
    job = await make_job(
        store, "job-2", sheets=(SheetStatus.COMPLETED,), status=JobStatus.COMPLETED
    )
    row = task_row("task-b", "job-2")
    assert await commit(store, new_tasks=[row], locks={"job-2": job.version}) is None
    done = finished(row, "completed", "job job-2 completed: 1/1 sheets completed")
    done.final_error = None
    assert await commit(store, finished_tasks=[done]) is None
    assert await commit(store, deleted_jobs=[await fresh(store, "job-2")]) is None
    assert await store.get_job("job-2") is None
    other = await opener()
    try:
        kept = await other.get_task("task-b")
        assert kept is not None and kept.final_status == "completed"
        assert kept.final_detail == done.final_detail and kept.final_job_failed is False
    finally:
        await other.close()


async def test_a_failed_task_keeps_its_error_and_no_detail(store: Store) -> None:
    row = task_row("task-c", "job-gone")
    assert await commit(store, new_tasks=[row]) is None
    failed = clone(row)
    failed.final_status, failed.final_message = "failed", "job 'job-gone' no longer exists"
    failed.final_error, failed.final_at = "job 'job-gone' no longer exists", T0
    assert await commit(store, finished_tasks=[failed]) is None
    got = await store.get_task("task-c")
    assert got is not None and (got.final_status, got.final_error) == ("failed", failed.final_error)
    assert got.final_detail is None and got.final_at == T0


async def test_open_tasks_are_found_for_many_jobs_at_once(store: Store) -> None:
    rows = [task_row(f"task-{n:03}", f"job-{n % 7}") for n in range(40)]
    assert await commit(store, new_tasks=rows) is None
    done = [finished(r, "cancelled", "c") for r in rows if r.job_id == "job-3"][:2]
    assert await commit(store, finished_tasks=done) is None
    wanted = [f"job-{n}" for n in (3, 5)] + [f"missing-{n}" for n in range(600)]
    found = await store.open_tasks(wanted)
    closed = {r.task_id for r in done}
    expected = sorted(
        r.task_id for r in rows if r.job_id in ("job-3", "job-5") and r.task_id not in closed
    )
    assert sorted(t.task_id for t in found) == expected
    assert await store.open_tasks([]) == []


async def test_two_stores_finishing_one_task_keep_exactly_one_state(
    store: Store, opener: Opener
) -> None:
    row = task_row("task-race", "job-r")
    assert await commit(store, new_tasks=[row]) is None
    other = await opener()
    try:
        states = [
            finished(row, "completed", "from a", job_status="completed"),
            finished(row, "cancelled", "from b", job_status="cancelled"),
        ]
        results: list[Any] = []

        async def finish(s: Store, state: TaskRow) -> None:
            results.append(await commit(s, finished_tasks=[state]))

        async with anyio.create_task_group() as tg:
            tg.start_soon(finish, store, states[0])
            tg.start_soon(finish, other, states[1])
        assert results == [None, None]
        got = await other.get_task("task-race")
        assert got is not None
        # Whole rows, never a mix of the two.
        assert (got.final_status, got.final_message) in [
            ("completed", "from a"),
            ("cancelled", "from b"),
        ]
        winner = states[0] if got.final_message == "from a" else states[1]
        assert got.final_detail == winner.final_detail
    finally:
        await other.close()


async def test_a_task_of_schema_8_gains_an_empty_final_state(tmp_path: Path) -> None:
    from podium.core.store.sqlite.schema import migrate

    path = tmp_path / "v8.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrate(conn, path, target=8) == 8
        conn.execute(
            "INSERT INTO tasks (task_id, job_id, tool, created_at, expires_at, ttl_ms,"
            " poll_interval_ms) VALUES ('task-old', 'job-old', 'run_job',"
            " '2024-05-01T12:00:00.000000Z', '2999-01-01T00:00:00.000000Z', 1000, 2000)"
        )
    finally:
        conn.close()
    store = await SQLiteStore.open(path)
    try:
        got = await store.get_task("task-old")
        assert got is not None and got.final_status is None and got.final_job_failed is False
        assert [t.task_id for t in await store.open_tasks(["job-old"])] == ["task-old"]
    finally:
        await store.close()


async def test_a_postgres_task_of_schema_8_gains_an_empty_final_state(tmp_path: Path) -> None:
    import psycopg
    from pg import fresh_schema

    from podium.core.config import load_config
    from podium.core.store.open import open_store
    from podium.core.store.postgres.schema import migrate

    with fresh_schema("tasks8") as url:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            assert await migrate(conn, "test", target=8) == 8
            await conn.execute(
                "INSERT INTO tasks (task_id, job_id, tool, created_at, expires_at, ttl_ms,"
                " poll_interval_ms) VALUES ('task-old', 'job-old', 'run_job', %s, %s, 1, 2)",
                [T0, T0 + timedelta(days=3650)],
            )
        config = load_config(home=tmp_path / "pg-home", overrides={"store_url": url}, env={})
        store = await open_store(config)
        try:
            got = await store.get_task("task-old")
            assert got is not None and got.final_status is None
            assert got.final_job_failed is False and got.created_at == T0
            assert [t.task_id for t in await store.open_tasks(["job-old"])] == ["task-old"]
        finally:
            await store.close()

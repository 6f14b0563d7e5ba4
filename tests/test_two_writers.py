"""Two engines on one store (the test double for two conductors sharing a database): every
write is a compare-and-set on the row version, so the second write of a stale row is refused,
the refused change is re-read, re-decided and retried, and no update is ever lost (SPEC §2)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import anyio
import pytest
from helpers import commit_rows

from podium.core.config import PodiumConfig
from podium.core.engine.engine import Engine
from podium.core.engine.state import RunningSheet
from podium.core.engine.tx import Op, Tx
from podium.core.events import EventBus
from podium.core.instruments.catalog import InstrumentCatalog
from podium.core.models import JobStatus, Outcome, SheetStatus, utcnow
from podium.core.runner.runner import AttemptResult
from podium.core.store.base import NewJob, Store
from podium.core.store.open import open_store
from podium.core.store.rows import AttemptRow, JobRow, SheetRow

pytestmark = pytest.mark.anyio


@dataclass
class Conductor2:
    """An engine with its own store connection and name, as another conductor would be."""

    engine: Engine
    store: Store


@asynccontextmanager
async def two_engines(
    make_config: Callable[..., PodiumConfig],
) -> AsyncIterator[tuple[Conductor2, Conductor2]]:
    catalog = await anyio.to_thread.run_sync(InstrumentCatalog.load, None)
    async with anyio.create_task_group() as tg:
        made = []
        for name in ("conductor-a", "conductor-b"):
            config = make_config(conductor_id=name)
            store = await open_store(config)
            engine = Engine(config, store, catalog, EventBus())
            await engine.start(tg, recover=False, dispatch=False)
            made.append(Conductor2(engine, store))
        try:
            yield made[0], made[1]
        finally:
            for c in made:
                await c.store.close()
            tg.cancel_scope.cancel()


def two_sheet_job(job_id: str = "shared") -> tuple[JobRow, list[SheetRow], list[AttemptRow]]:
    """A job whose two sheets are running, one attempt each, as the store holds it."""
    now = utcnow()
    job = JobRow(job_id, "shared", JobStatus.RUNNING, "/tmp", "fp", 2, now, now, started_at=now)
    sheets = [
        SheetRow(job_id, n, f"s{n}", SheetStatus.RUNNING, "shell", now, attempts=1, started_at=now)
        for n in (1, 2)
    ]
    attempts = [
        AttemptRow(
            job_id,
            n,
            1,
            now,
            conductor_id=f"conductor-{'ab'[n - 1]}",
            lease_expires_at=now + timedelta(minutes=5),
        )
        for n in (1, 2)
    ]
    return job, sheets, attempts


def completed(now_offset: float = 0.0) -> AttemptResult:
    now = utcnow()
    return AttemptResult(
        outcome=Outcome.COMPLETED,
        error_category=None,
        error=None,
        exit_code=0,
        signal=None,
        started_at=now,
        ended_at=now,
        duration_seconds=now_offset,
        stdout_tail="ok",
        log_path="",
    )


async def take_in_hand(c: Conductor2, job_id: str, sheet_num: int) -> RunningSheet:
    """The engine holds the job (its view read from the store now) and runs one attempt."""
    await c.engine.writer.load(job_id)
    for attempt in await c.store.in_flight_attempts():
        if attempt.sheet_num == sheet_num:
            c.engine.state.attempts[(job_id, sheet_num, 1)] = attempt
    entry = RunningSheet(job_id, sheet_num, 1)
    c.engine.state.add_running(entry)
    return entry


async def test_a_result_recorded_on_a_stale_view_is_refused_re_read_and_not_lost(
    make_config: Callable[..., PodiumConfig],
) -> None:
    async with two_engines(make_config) as (a, b):
        job, sheets, attempts = two_sheet_job()
        spec = {"name": "shared", "sheets": [{"name": f"s{n}", "prompt": "true"} for n in (1, 2)]}
        await commit_rows(a.store, new_jobs=[NewJob(job, spec, sheets)], new_attempts=attempts)
        # Both read the job while both sheets run: each sees the other's sheet running.
        entry_a = await take_in_hand(a, "shared", 1)
        entry_b = await take_in_hand(b, "shared", 2)

        await a.engine.writer.run(a.engine.result_op(entry_a, completed()))
        assert a.engine.writer.conflicts == 0
        # B decides on its stale view (sheet 1 still running, so the job would stay running);
        # its write is refused, it re-reads, and the retry sees the job is done.
        await b.engine.writer.run(b.engine.result_op(entry_b, completed()))
        assert b.engine.writer.conflicts >= 1

        record = await a.store.load_job("shared")
        assert record is not None
        assert [s.status for s in record.sheets] == [SheetStatus.COMPLETED] * 2
        assert record.job.status is JobStatus.COMPLETED
        assert record.job.completed_sheets == 2
        history, total = await a.store.get_history("shared", None, 10, 0)
        assert total == 2 and all(h.outcome is Outcome.COMPLETED for h in history)


async def test_racing_read_modify_writes_of_one_job_keep_every_update(
    make_config: Callable[..., PodiumConfig],
) -> None:
    rounds = 30
    async with two_engines(make_config) as (a, b):
        job, sheets, _ = two_sheet_job("counted")
        job.status = JobStatus.PAUSED
        spec = {"name": "shared", "sheets": [{"name": f"s{n}", "prompt": "true"} for n in (1, 2)]}
        await commit_rows(a.store, new_jobs=[NewJob(job, spec, sheets)])

        def append(token: str) -> Op[None]:
            def apply(tx: Tx) -> None:
                row = tx.edit_job("counted")
                row.error = f"{row.error or ''}{token};"

            # Each engine holds the job in its view, so after the other's write its copy is
            # stale: its next write must be refused, re-read and retried.
            return Op(apply, jobs=["counted"], name=f"append {token}")

        async def writer(c: Conductor2, prefix: str) -> None:
            for i in range(rounds):
                await c.engine.writer.run(append(f"{prefix}{i}"))
                await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer, a, "a")
            tg.start_soon(writer, b, "b")
        final = await a.store.get_job("counted")
        assert final is not None
        tokens = [t for t in (final.error or "").split(";") if t]
        expected = [f"a{i}" for i in range(rounds)] + [f"b{i}" for i in range(rounds)]
        assert sorted(tokens) == sorted(expected)
        assert final.version == 1 + 2 * rounds
        assert a.engine.writer.conflicts + b.engine.writer.conflicts >= 1


async def test_a_re_read_that_lands_after_a_later_commit_leaves_no_sheet_behind(
    make_config: Callable[..., PodiumConfig],
) -> None:
    """B hears of A's two commits one notice at a time, each naming the sheet it changed.
    The first re-read already finds the job row of the second commit: B's view must not
    take that row and keep the second commit's sheet as it was, or its view holds a sheet
    running that has ended, and the job B's last result should end stays running."""
    async with two_engines(make_config) as (a, b):
        now = utcnow()
        job = JobRow("three", "three", JobStatus.RUNNING, "/tmp", "fp", 2, now, now)
        job.started_at = now
        sheets = [
            SheetRow("three", n, f"s{n}", SheetStatus.RUNNING, "shell", now, attempts=1)
            for n in (1, 2, 3)
        ]
        owners = {1: "conductor-a", 2: "conductor-a", 3: "conductor-b"}
        attempts = [
            AttemptRow(
                "three",
                n,
                1,
                now,
                conductor_id=owners[n],
                lease_expires_at=now + timedelta(minutes=5),
            )
            for n in (1, 2, 3)
        ]
        spec = {"name": "three", "sheets": [{"name": f"s{n}", "prompt": "true"} for n in (1, 2, 3)]}
        await commit_rows(a.store, new_jobs=[NewJob(job, spec, sheets)], new_attempts=attempts)
        first, second = await take_in_hand(a, "three", 1), await take_in_hand(a, "three", 2)
        last = await take_in_hand(b, "three", 3)

        await a.engine.writer.run(a.engine.result_op(first, completed()))
        await a.engine.writer.run(a.engine.result_op(second, completed()))
        writer = b.engine.writer
        for changed in (1, 2):  # the two notices, in order, after both commits landed
            syncs = writer.syncs
            writer.mark_stale(["three"], sheets={"three": {changed}})
            with anyio.fail_after(10):
                while writer.syncs == syncs:
                    await anyio.sleep(0.01)
        seen = b.engine.state.jobs["three"].sheets
        assert [seen[n].status for n in (1, 2)] == [SheetStatus.COMPLETED] * 2

        await writer.run(b.engine.result_op(last, completed()))
        record = await b.store.load_job("three")
        assert record is not None
        assert [s.status for s in record.sheets] == [SheetStatus.COMPLETED] * 3
        assert record.job.status is JobStatus.COMPLETED

"""Conductors sharing one PostgreSQL store, in one process (each with its own home, engine
and store connections; they meet only through the store and its notifications): control
calls through one reach sheets another runs, rate-limit holds are shared, and starting or
stopping one conductor leaves the others' jobs running. The multi-process scenarios (kill -9,
a frozen conductor) are in test_multi_conductor.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from helpers import wait_until
from pg import fresh_schema

from podium.core.conductor import Conductor
from podium.core.config import load_config
from podium.core.errors import NotFoundError
from podium.core.models import JobStatus, Outcome, SheetStatus, utcnow
from podium.core.store.base import WriteBatch
from podium.core.store.open import open_store
from podium.core.store.rows import HoldRow

pytestmark = pytest.mark.anyio


@pytest.fixture
def store_url() -> Iterator[str]:
    with fresh_schema("shared") as url:
        yield url


Make = Callable[..., Any]


@pytest.fixture
def make(tmp_path: Path, store_url: str) -> Make:
    @asynccontextmanager
    async def conductor(name: str, **settings: Any) -> AsyncIterator[Conductor]:
        settings.setdefault("lease_seconds", 1.5)
        settings.setdefault("kill_grace_seconds", 1)
        config = load_config(
            home=tmp_path / name,
            overrides={
                "store_url": store_url,
                "conductor_id": name,
                "allowed_roots": [tmp_path],
                **settings,
            },
            env={},
        )
        async with Conductor(config) as c:
            yield c

    return conductor


def job(tmp_path: Path, name: str, sheets: int, prompt: str, **extra: Any) -> dict[str, Any]:
    ws = tmp_path / f"ws-{name}"
    ws.mkdir(exist_ok=True)
    return {
        "name": name,
        "workspace": str(ws),
        "sheets": [{"name": f"s{n}", "prompt": prompt} for n in range(1, sheets + 1)],
        **extra,
    }


async def status_of(c: Conductor, job_id: str) -> JobStatus:
    return (await c.get_job(job_id)).status


async def test_pause_immediate_and_resume_through_one_reach_the_sheets_another_runs(
    make: Make, tmp_path: Path
) -> None:
    marker = tmp_path / "resumed"
    prompt = f"sleep 0.8; touch {marker}"
    async with make("a") as a, make("b", host_labels=["here"]) as b:
        submitted = await a.submit_job(spec=job(tmp_path, "frozen", 1, prompt, hosts=["here"]))
        job_id = submitted.job_id

        async def pgid() -> int | None:
            found = await a.store.get_latest_attempt(job_id, 1)
            return found.pgid if found is not None and found.outcome is None else None

        async def recorded() -> bool:
            return await pgid() is not None

        await wait_until(recorded, timeout=20)
        group = await pgid()
        assert group is not None and b.engine.running_count == 1
        await a.pause_job(job_id, immediate=True)

        async def stopped() -> bool:
            procs = [p for p in psutil.process_iter() if _group(p) == group]
            return bool(procs) and all(p.status() == psutil.STATUS_STOPPED for p in procs)

        await wait_until(stopped, timeout=10)
        assert await status_of(b, job_id) is JobStatus.PAUSED
        await a.resume_job(job_id)

        async def done() -> bool:
            return await status_of(a, job_id) is JobStatus.COMPLETED

        await wait_until(done, timeout=20)
    assert marker.exists()


async def hold_as_a_third_conductor(tmp_path: Path, store_url: str, hold: HoldRow) -> None:
    """The hold written to the shared store as a conductor that met the rate limit would."""
    other = await open_store(
        load_config(home=tmp_path / "c", overrides={"store_url": store_url}, env={})
    )
    try:
        assert await other.commit([WriteBatch(holds=[hold])]) == [None]
    finally:
        await other.close()


async def test_a_rate_limit_hold_holds_every_conductor_and_is_lifted_through_any(
    make: Make, tmp_path: Path, store_url: str
) -> None:
    async with make("a") as a, make("b") as b:
        now = utcnow()
        # As a third conductor that met a rate limit on `shell` wrote it: a minute's wait.
        hold = HoldRow("shell", now + timedelta(seconds=60), "429", now)
        await hold_as_a_third_conductor(tmp_path, store_url, hold)

        async def a_knows() -> bool:
            return any(r.instrument == "shell" for r in (await a.status()).rate_limits)

        await wait_until(a_knows, timeout=10)

        async def b_knows() -> bool:
            return any(r.instrument == "shell" for r in (await b.status()).rate_limits)

        await wait_until(b_knows, timeout=10)
        submitted = await b.submit_job(spec=job(tmp_path, "held", 2, "true"))
        detail = await b.get_job(submitted.job_id)
        assert all(s.attempts == 0 for s in detail.sheets)
        # What b's dispatcher decides by: the shell hold holds its sheets.
        assert "shell" in b.engine.state.held_keys(utcnow())
        assert await a.clear_rate_limits() == ["shell"]

        async def done() -> bool:
            return await status_of(b, submitted.job_id) is JobStatus.COMPLETED

        await wait_until(done, timeout=20)
        assert (await b.status()).rate_limits == []


async def test_when_a_shared_hold_ends_one_sheet_goes_first_across_conductors(
    make: Make, tmp_path: Path, store_url: str
) -> None:
    async with make("a", host_labels=["at-a"]) as a, make("b", host_labels=["at-b"]) as b:
        now = utcnow()
        # Both conductors' timers fire at the hold's end; each has a ready sheet behind it.
        hold = HoldRow("shell", now + timedelta(seconds=2), "429", now)
        await hold_as_a_third_conductor(tmp_path, store_url, hold)

        async def both_know() -> bool:
            return all("shell" in c.engine.state.held_keys(utcnow()) for c in (a, b))

        await wait_until(both_know, timeout=10)
        jobs = [
            (await a.submit_job(spec=job(tmp_path, "on-a", 1, "sleep 0.5", hosts=["at-a"]))).job_id,
            (await a.submit_job(spec=job(tmp_path, "on-b", 1, "sleep 0.5", hosts=["at-b"]))).job_id,
        ]

        async def done() -> bool:
            return all([await status_of(a, j) is JobStatus.COMPLETED for j in jobs])

        await wait_until(done, timeout=30)
        attempts = []
        for job_id in jobs:
            history, _ = await a.get_execution_history(job_id)
            attempts += history
        first, then = sorted(attempts, key=lambda h: h.started_at)
        # The first sheet's success lifted the hold: only then did the other start.
        assert first.ended_at is not None and then.started_at >= first.ended_at, attempts


async def test_a_conductor_starting_or_stopping_leaves_the_others_jobs_running(
    make: Make, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    prompt = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    async with make("a", max_concurrent_sheets=1) as a:
        submitted = await a.submit_job(
            spec=job(tmp_path, "long", 2, prompt, concurrency={"max_parallel_sheets": 2})
        )
        job_id = submitted.job_id

        async def a_runs() -> bool:
            return a.engine.running_count == 1

        await wait_until(a_runs, timeout=20)
        async with make("b", max_concurrent_sheets=1) as b:
            # b's start-up recovery saw a alive: a's job and its running sheet are left alone.
            assert await status_of(b, job_id) is JobStatus.RUNNING
            statuses = {s.sheet_num: s.status for s in (await b.get_job(job_id)).sheets}
            assert SheetStatus.RUNNING in statuses.values()

            async def both_run() -> bool:
                return b.engine.running_count == 1

            # b takes the second sheet.
            await wait_until(both_run, timeout=20)
        # b stopped gracefully while a runs: its sheet went back to pending, the job did not
        # pause, and a runs the sheet once it has room.
        assert await status_of(a, job_id) is JobStatus.RUNNING
        history, _ = await a.get_execution_history(job_id)
        by_b = [h for h in history if h.outcome is Outcome.INTERRUPTED]
        assert len(by_b) == 1
        gate.touch()

        async def done() -> bool:
            return await status_of(a, job_id) is JobStatus.COMPLETED

        await wait_until(done, timeout=30)
        history, _ = await a.get_execution_history(job_id)
        assert sorted(h.outcome.value for h in history if h.outcome) == [
            "completed",
            "completed",
            "interrupted",
        ]
        assert [c.conductor_id for c in (await a.status()).conductors] == ["a"]


async def test_a_job_whose_hosts_no_live_conductor_carries_says_why_until_one_starts(
    make: Make, tmp_path: Path
) -> None:
    async with make("a", host_labels=["cpu"]) as a:
        submitted = await a.submit_job(spec=job(tmp_path, "gpu", 1, "true", hosts=["gpu"]))
        job_id = submitted.job_id
        # Nothing runs it, and every view says why instead of a silent `pending`.
        detail = await a.get_job(job_id)
        assert detail.status is JobStatus.QUEUED
        why = detail.waiting_for_host
        assert why is not None and "gpu" in why and "a (cpu" in why
        assert (await a.checkpoint(job_id)).waiting_for_host == why
        diagnosis = await a.diagnose(job_id)
        assert why in diagnosis.verdict
        steps = " ".join(step.action for step in diagnosis.next_steps)
        assert "host_labels: [gpu]" in steps
        assert any(step.tool == "resume" for step in diagnosis.next_steps)
        async with make("b", host_labels=["gpu"]) as b:

            async def done() -> bool:
                return await status_of(b, job_id) is JobStatus.COMPLETED

            await wait_until(done, timeout=20)
        assert (await a.get_job(job_id)).waiting_for_host is None


async def test_logs_and_snapshots_of_sheets_another_conductor_ran_say_where_they_are(
    make: Make, tmp_path: Path
) -> None:
    async with make("a") as a, make("b", host_labels=["here"]) as b:
        submitted = await a.submit_job(
            spec=job(tmp_path, "there", 1, "echo printed-on-b", hosts=["here"])
        )
        job_id = submitted.job_id

        async def done() -> bool:
            return await status_of(a, job_id) is JobStatus.COMPLETED

        await wait_until(done, timeout=20)
        assert "printed-on-b" in (await b.read_logs(job_id, sheet=1)).text
        # Through a: not a confinement error that advises allowed_roots, but who has it.
        with pytest.raises(NotFoundError, match="ran on conductor 'b'") as err:
            await a.read_logs(job_id, sheet=1)
        assert "allowed_roots" not in str(err.value)
        combined = await a.read_logs(job_id)
        assert "sheet 1" in combined.text and "conductor that ran it" in combined.text

        async def captured() -> bool:
            return bool(await b.list_snapshots(job_id))

        await wait_until(captured, timeout=20)
        [taken] = await b.list_snapshots(job_id)
        assert await a.list_snapshots(job_id) == []
        [away] = await a.snapshots.elsewhere(job_id)
        assert (away.job_id, away.path) == (job_id, taken.path)
        assert await b.snapshots.elsewhere(job_id) == []


def _group(proc: psutil.Process) -> int | None:
    try:
        import os

        return os.getpgid(proc.pid)
    except (ProcessLookupError, psutil.Error):
        return None


async def test_a_clear_waits_for_the_sheets_another_conductor_is_still_stopping(
    make: Make, tmp_path: Path
) -> None:
    """A job cancelled through one conductor while another runs its sheet is `cancelled` at
    once, but its attempt is still to be written by the other: a clear through the first
    keeps it (reported in skipped_active) until that sheet has ended, then deletes it."""
    ws = tmp_path / "ws-stopping"
    prompt = (
        "trap 'touch stopping; sleep 1.5; touch stopped; exit 143' TERM; "
        "touch started; sleep 60 & wait"
    )
    async with (
        make("a") as a,
        make("b", host_labels=["here"], kill_grace_seconds=10) as b,
        make("c") as c,
    ):
        spec = job(tmp_path, "stopping", 1, prompt, hosts=["here"])
        job_id = (await a.submit_job(spec=spec)).job_id

        async def started() -> bool:
            return (ws / "started").exists() and b.engine.running_count == 1

        await wait_until(started, timeout=20)
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.cancel_job, job_id)

            async def stopping() -> bool:
                return (ws / "stopping").exists() and await status_of(a, job_id) is (
                    JobStatus.CANCELLED
                )

            await wait_until(stopping, timeout=10)
            # Even the delete itself, from a conductor that never held the job, reads
            # its sheets in the same op and keeps it.
            assert await c.engine.delete_jobs([job_id]) == ([], [job_id])
            a.housekeeping.stopping_wait_seconds = 0.1
            kept = await a.clear_jobs(job_ids=[job_id])
            assert kept.deleted == 0 and kept.skipped_active == [job_id], kept
            assert not (ws / "stopped").exists()
            a.housekeeping.stopping_wait_seconds = 10
            cleared = await a.clear_jobs(job_ids=[job_id])
        assert (ws / "stopped").exists()  # the sheet had ended, and its attempt been written
        assert cleared.job_ids == [job_id] and cleared.skipped_active == []
        assert await b.store.get_job(job_id) is None

"""Regressions for races and edge cases found in review: stops that meet finished work,
crashes during a cancel, jobs that could wait forever, late deadlines."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import anyio
import psutil
import pytest
from helpers import wait_for_job, wait_until, write_rows

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.engine.rules import begin_attempt
from podium.core.engine.state import RunningSheet
from podium.core.engine.tx import Op, Tx
from podium.core.models import (
    ErrorCategory,
    JobStatus,
    Outcome,
    SheetStatus,
    utcnow,
)
from podium.core.runner.runner import AttemptResult
from podium.core.store.open import open_store
from podium.core.store.rows import AttemptRow

pytestmark = pytest.mark.anyio


async def _sheet_status(c: Conductor, job_id: str, n: int = 1) -> SheetStatus:
    return (await c.get_job(job_id)).sheets[n - 1].status


async def _mark_running(c: Conductor, job_id: str) -> RunningSheet:
    """Put sheet 1 of a not-started job in flight, as the dispatcher would."""

    def apply(tx: Tx) -> None:
        job = tx.edit_job(job_id)
        job.status, job.pause_reason, job.started_at = JobStatus.RUNNING, None, tx.now
        begin_attempt(tx.edit_sheet(job_id, 1), 1, tx.now, "")
        tx.add_attempt(AttemptRow(job_id, 1, 1, tx.now, conductor_id=c.config.conductor_id))

    await c.engine.writer.run(Op(apply, jobs=[job_id]))
    entry = RunningSheet(job_id, 1, 1)
    c.engine.state.add_running(entry)
    return entry


@pytest.mark.parametrize("stop_reason", ["shutdown", "cancel", "deadline"])
async def test_a_completed_attempt_is_kept_whatever_stop_arrives(
    conductor: Conductor, stop_reason: str
) -> None:
    job = await conductor.submit_job(
        spec={"name": "done", "sheets": [{"prompt": "true"}]}, start=False
    )
    entry = await _mark_running(conductor, job.job_id)
    entry.stop_reason = stop_reason
    if stop_reason == "cancel":
        # As a real cancel leaves it: the job already cancelled while the attempt finishes.

        def cancel(tx: Tx) -> None:
            tx.edit_job(job.job_id).status = JobStatus.CANCELLED

        await conductor.engine.writer.run(Op(cancel, jobs=[job.job_id]))
    now = utcnow()
    result = AttemptResult(
        outcome=Outcome.COMPLETED,
        error_category=None,
        error=None,
        exit_code=0,
        signal=None,
        started_at=now,
        ended_at=now,
        duration_seconds=0.1,
        stdout_tail="ok",
        log_path="",
    )
    engine = conductor.engine
    await engine.writer.run(engine.result_op(entry, result))
    detail = await conductor.get_job(job.job_id)
    assert detail.sheets[0].status is SheetStatus.COMPLETED
    history, _ = await conductor.get_execution_history(job.job_id)
    assert history[0].outcome is Outcome.COMPLETED


async def test_crash_during_cancel_leaves_no_process_and_no_stuck_job(
    make_config: Callable[..., PodiumConfig],
) -> None:
    config = make_config()
    async with Conductor(config) as setup:
        job = await setup.submit_job(
            spec={"name": "cut", "sheets": [{"prompt": "true"}]}, start=False
        )
    leader = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        store = await open_store(config)
        try:
            row = await store.get_job(job.job_id)
            assert row is not None
            (sheet,) = await store.get_sheets(job.job_id)
        finally:
            await store.close()
        now = utcnow()
        # The cancel had marked the job before its running sheet died; then a crash.
        row.status, row.pause_reason, row.completed_at = JobStatus.CANCELLED, None, now
        sheet.status, sheet.attempts = SheetStatus.RUNNING, 1
        attempt = AttemptRow(
            job.job_id,
            1,
            1,
            now,
            pid=leader.pid,
            pgid=leader.pid,
            pid_start_time=psutil.Process(leader.pid).create_time(),
        )
        await write_rows(config, jobs=[row], sheets=[sheet], new_attempts=[attempt])

        async with Conductor(make_config()) as c:
            assert leader.wait(timeout=5) is not None  # the leftover group was ended
            detail = await c.get_job(job.job_id)
            assert detail.status is JobStatus.CANCELLED
            assert detail.sheets[0].status is SheetStatus.CANCELLED
            history, _ = await c.get_execution_history(job.job_id)
            assert history[0].outcome is Outcome.INTERRUPTED
            await c.resume_job(job.job_id)
            assert (await wait_for_job(c, job.job_id)).status is JobStatus.COMPLETED
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()


async def test_changed_spec_adding_a_dependent_of_a_failed_sheet_cannot_hang(
    conductor: Conductor,
) -> None:
    spec = {
        "name": "grow",
        "on_failure": "continue",
        "retry": {"max_retries": 0},
        "sheets": [{"name": "x", "prompt": "exit 1"}, {"name": "ok", "prompt": "true"}],
    }
    job = await conductor.submit_job(spec=spec)
    assert (await wait_for_job(conductor, job.job_id)).status is JobStatus.FAILED
    grown = {
        **spec,
        "sheets": [*spec["sheets"], {"name": "y", "depends_on": ["x"], "prompt": "true"}],
    }
    await conductor.resume_job(job.job_id, spec=grown, retry_failed=False)
    detail = await wait_for_job(conductor, job.job_id, timeout=10)
    assert detail.status is JobStatus.FAILED
    assert detail.sheets[2].status is SheetStatus.SKIPPED
    assert detail.sheets[2].error_category is ErrorCategory.DEPENDENCY_FAILED


async def test_pause_calls_off_a_pending_modify(conductor: Conductor) -> None:
    spec = {
        "name": "modpause",
        "concurrency": {"max_parallel_sheets": 1},
        "sheets": [{"name": "a", "prompt": "sleep 0.8"}, {"name": "b", "prompt": "true"}],
    }
    job = await conductor.submit_job(spec=spec)
    await wait_until(lambda: _is(conductor, job.job_id, SheetStatus.RUNNING))
    changed = {**spec, "sheets": [spec["sheets"][0], {"name": "b", "prompt": "echo changed"}]}
    await conductor.resume_job(job.job_id, spec=changed)  # pending modify
    await conductor.resume_job(job.job_id)  # the user resumes by hand...
    await conductor.pause_job(job.job_id)  # ...then pauses
    await wait_until(lambda: _is(conductor, job.job_id, SheetStatus.COMPLETED))
    await anyio.sleep(0.5)
    detail = await conductor.get_job(job.job_id)
    assert detail.status is JobStatus.PAUSED
    assert detail.sheets[1].status is SheetStatus.PENDING


async def _is(c: Conductor, job_id: str, status: SheetStatus) -> bool:
    return await _sheet_status(c, job_id) is status


async def test_deadline_fires_on_time_and_resume_starts_a_new_clock(conductor: Conductor) -> None:
    spec = {"name": "late", "deadline_seconds": 1, "sheets": [{"prompt": "sleep 5"}]}
    started = time.monotonic()
    job = await conductor.submit_job(spec=spec)
    detail = await wait_for_job(conductor, job.job_id, timeout=10)
    assert detail.status is JobStatus.FAILED and "deadline" in (detail.error or "")
    assert time.monotonic() - started < 3.5  # not the 5 s idle re-check
    await wait_until(lambda: _is(conductor, job.job_id, SheetStatus.CANCELLED), timeout=5)
    await conductor.resume_job(job.job_id)
    await anyio.sleep(0.4)
    assert (await conductor.get_job(job.job_id)).status in (JobStatus.QUEUED, JobStatus.RUNNING)
    await conductor.cancel_job(job.job_id)


async def test_cancel_does_not_wait_for_a_long_validation(conductor: Conductor) -> None:
    spec = {
        "name": "slowcheck",
        "sheets": [
            {
                "prompt": "true",
                "validations": [{"type": "command_succeeds", "command": "sleep 30"}],
            }
        ],
    }
    job = await conductor.submit_job(spec=spec)
    await wait_until(lambda: _is(conductor, job.job_id, SheetStatus.RUNNING))
    await anyio.sleep(0.4)  # the process is done; the validation runs
    started = time.monotonic()
    summary = await conductor.cancel_job(job.job_id)
    assert time.monotonic() - started < conductor.config.kill_grace_seconds + 2
    assert summary.status is JobStatus.CANCELLED
    assert await _sheet_status(conductor, job.job_id) is SheetStatus.CANCELLED
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] == ["bash", "-c", "sleep 30"]
    ]
    assert not [p for p in leftovers if p.status() != psutil.STATUS_ZOMBIE], os.getpid()


async def test_snapshot_after_the_end_never_overwrites_a_resume(
    conductor: Conductor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot is taken just after a job ends, and its path written afterwards; a
    resume that lands meanwhile must survive it: the path write is a compare-and-set on the
    row as it is then, never a (stale) copy of the job row read when the job ended."""
    snapshots = conductor.snapshots
    original_capture = snapshots.capture

    async def slow_capture(*args: Any, **kwargs: Any) -> Any:
        info = await original_capture(*args, **kwargs)
        await anyio.sleep(0.6)  # widen the window a resume can land in
        return info

    monkeypatch.setattr(snapshots, "capture", slow_capture)
    spec = {
        "name": "flip",
        "retry": {"max_retries": 0},
        "sheets": [{"prompt": "test -f marker || { touch marker; exit 1; }"}],
    }
    job = await conductor.submit_job(spec=spec)
    assert (await wait_for_job(conductor, job.job_id)).status is JobStatus.FAILED
    await anyio.sleep(0.2)
    await conductor.resume_job(job.job_id)
    assert (await wait_for_job(conductor, job.job_id, timeout=10)).status is JobStatus.COMPLETED
    await anyio.sleep(0.8)  # past any delayed write
    assert (await conductor.get_job(job.job_id)).status is JobStatus.COMPLETED
    await wait_until(lambda: _has_snapshot_path(conductor, job.job_id))


async def _has_snapshot_path(c: Conductor, job_id: str) -> bool:
    row = await c.store.get_job(job_id)
    return row is not None and row.snapshot_path is not None


async def test_a_resume_in_the_same_group_as_a_write_to_the_finished_job_runs_it(
    conductor: Conductor,
) -> None:
    """An op that writes a finished job (its snapshot path) and a resume of that job are
    committed together: the job must stay in the engine's hands and run, not be let go of
    by the first op's commit."""
    job = await conductor.submit_job(
        spec={"name": "again", "sheets": [{"prompt": "true"}]}, start=False
    )
    await conductor.cancel_job(job.job_id)
    await conductor.engine.hooks_settled()

    def note(tx: Tx) -> None:
        tx.edit_job(job.job_id).snapshot_path = "/elsewhere"

    conductor.engine.writer.submit_nowait(Op(note, job_rows=[job.job_id], name="note"))
    resumed = await conductor.resume_job(job.job_id)
    assert resumed.status in (JobStatus.QUEUED, JobStatus.RUNNING)
    assert (await wait_for_job(conductor, job.job_id, timeout=10)).status is JobStatus.COMPLETED


async def test_a_result_the_store_cannot_hold_fails_the_sheet_not_the_conductor(
    conductor: Conductor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value in an attempt's result that the store refuses (here an exit code past a
    64-bit integer) must fail that attempt, saying so; it ended the dispatcher, and with it
    every other job of the conductor."""
    import dataclasses

    from podium.core.engine import dispatch

    real = dispatch.run_attempt

    async def unstorable(*args: Any, **kwargs: Any) -> AttemptResult:
        result = await real(*args, **kwargs)
        if "unstorable" in result.stdout_tail:
            return dataclasses.replace(result, exit_code=2**70)
        return result

    monkeypatch.setattr(dispatch, "run_attempt", unstorable)
    bad = await conductor.submit_job(
        spec={"name": "bad", "sheets": [{"prompt": "echo unstorable"}], "retry": {"max_retries": 0}}
    )
    detail = await wait_for_job(conductor, bad.job_id)
    assert detail.status is JobStatus.FAILED
    [sheet] = detail.sheets
    assert "the store could not record this attempt's result" in (sheet.last_error or "")
    history, _ = await conductor.get_execution_history(bad.job_id)
    assert [a.outcome for a in history] == [Outcome.FAILED]
    # The conductor goes on with other work.
    good = await conductor.submit_job(spec={"name": "good", "sheets": [{"prompt": "echo fine"}]})
    assert (await wait_for_job(conductor, good.job_id)).status is JobStatus.COMPLETED


async def test_a_sheet_that_prints_nul_completes_on_every_store(conductor: Conductor) -> None:
    """PostgreSQL's text refuses NUL: the result of a sheet that printed one was lost and
    the sheet failed there. Its tail keeps U+FFFD in the NUL's place."""
    job = await conductor.submit_job(
        spec={"name": "nul", "sheets": [{"prompt": "printf 'a\\0b\\n'; printf 'c\\0d' >&2"}]}
    )
    detail = await wait_for_job(conductor, job.job_id)
    assert detail.status is JobStatus.COMPLETED, detail.sheets[0].last_error
    assert detail.sheets[0].output_tail == "a\ufffdb\n"


class FlakyStore:
    """Fails the next `failures` writes that `which` picks (as an unreachable store does),
    then lets everything through."""

    def __init__(self, conductor: Conductor, which: Callable[[Any], bool], failures: int) -> None:
        self.writer = conductor.engine.writer
        self.real = self.writer.store.write
        self.which, self.left, self.refused = which, failures, 0

    async def write(self, batches: Any) -> Any:
        if self.left > 0 and any(self.which(b) for b in batches):
            self.left -= 1
            self.refused += 1
            raise OSError("the store is unreachable")
        return await self.real(batches)


def ends_an_attempt(batch: Any) -> bool:
    return any(a.outcome is not None for a in batch.attempts)


def starts_an_attempt(batch: Any) -> bool:
    return bool(batch.new_attempts)


@pytest.mark.parametrize(
    ("which", "failures"),
    [(ends_an_attempt, 2), (starts_an_attempt, 2)],
    ids=["its-result", "its-start"],
)
async def test_a_store_unreachable_for_a_moment_loses_no_result_and_no_conductor(
    conductor: Conductor,
    monkeypatch: pytest.MonkeyPatch,
    which: Callable[[Any], bool],
    failures: int,
) -> None:
    """Writes that fail for a while (not refused by rule, not a value the store cannot
    hold): the attempt's full result is recorded once the store answers again, and a start
    that failed is made by a later pass. Raised, either ended the conductor; a result never
    recorded left its sheet running with nothing behind it."""
    flaky = FlakyStore(conductor, which, failures)
    monkeypatch.setattr(flaky.writer.store, "write", flaky.write)
    job = await conductor.submit_job(
        spec={"name": "flaky", "sheets": [{"prompt": "echo made it"}], "retry": {"max_retries": 0}}
    )
    detail = await wait_for_job(conductor, job.job_id, timeout=30)
    assert flaky.refused == failures
    assert detail.status is JobStatus.COMPLETED, detail.sheets[0].last_error
    assert detail.sheets[0].output_tail == "made it\n"
    history, _ = await conductor.get_execution_history(job.job_id)
    assert [a.outcome for a in history] == [Outcome.COMPLETED]

"""`status` long-poll semantics at the facade: wake on a job status change, not on every
sheet transition; bounded by wait_seconds; immediate for a finished job."""

from __future__ import annotations

import time

import anyio
import pytest
from helpers import wait_for_job

from podium.core.conductor import Conductor
from podium.core.models import JobStatus

pytestmark = pytest.mark.anyio

THREE_STEPS = {
    "name": "steps",
    "concurrency": {"max_parallel_sheets": 1},
    "sheets": [{"prompt": "sleep 0.3"}, {"prompt": "sleep 0.3"}, {"prompt": "sleep 0.3"}],
}


@pytest.mark.parametrize("scoped", [True, False])
async def test_wait_ignores_sheet_transitions_and_wakes_on_job_status(
    conductor: Conductor, scoped: bool
) -> None:
    job = await conductor.submit_job(spec=THREE_STEPS)
    await wait_for_job(conductor, job.job_id, statuses=("running",))
    started = time.monotonic()
    changed = await conductor.wait_for_change(job.job_id if scoped else None, 20)
    elapsed = time.monotonic() - started
    assert changed
    # Three sheet transitions happened on the way; only the job's completion ended the wait.
    assert (await conductor.get_job(job.job_id)).status is JobStatus.COMPLETED
    assert 0.5 < elapsed < 10


async def test_wait_is_bounded_and_reports_ticks(conductor: Conductor) -> None:
    job = await conductor.submit_job(
        spec={"name": "idle", "sheets": [{"prompt": "true"}]}, start=False
    )
    ticks: list[float] = []

    async def on_tick(elapsed: float) -> None:
        ticks.append(elapsed)

    started = time.monotonic()
    assert not await conductor.wait_for_change(job.job_id, 1.0, on_tick=on_tick, tick_seconds=0.3)
    assert 0.9 < time.monotonic() - started < 3
    assert len(ticks) >= 2


async def test_wait_on_finished_job_returns_at_once(conductor: Conductor) -> None:
    job = await conductor.submit_job(spec={"name": "done", "sheets": [{"prompt": "true"}]})
    await wait_for_job(conductor, job.job_id)
    with anyio.fail_after(1):
        assert not await conductor.wait_for_change(job.job_id, 30)


async def test_wait_without_job_wakes_on_a_new_submission(conductor: Conductor) -> None:
    async def submit_later() -> None:
        await anyio.sleep(0.3)
        await conductor.submit_job(
            spec={"name": "late", "sheets": [{"prompt": "true"}]}, start=False
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit_later)
        with anyio.fail_after(5):
            assert await conductor.wait_for_change(None, 20)


async def test_a_stop_beginning_ends_every_wait_with_what_there_is(conductor: Conductor) -> None:
    """begin_stop (what a server calls before it closes its connections) wakes the status
    long-poll, scoped or not, and run_job's wait, each with the job as it is; a wait begun
    after it returns at once, with no tick still to come."""
    held = await conductor.submit_job(
        spec={"name": "held", "sheets": [{"prompt": "true"}]}, start=False
    )
    results: dict[str, object] = {}

    async def wait(name: str, job_id: str | None) -> None:
        results[name] = await conductor.wait_for_change(job_id, 40)

    async def run() -> None:
        results["run_job"] = await conductor.tasks.run_job(
            spec={"name": "slow", "sheets": [{"prompt": "sleep 30"}]}
        )

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, "job", held.job_id)
            tg.start_soon(wait, "any", None)
            tg.start_soon(run)
            await anyio.sleep(0.5)
            conductor.begin_stop()
        assert results["job"] is True and results["any"] is True
        detail = results["run_job"]
        assert getattr(detail, "status", None) in (JobStatus.QUEUED, JobStatus.RUNNING), detail
        assert await conductor.wait_for_change(held.job_id, 40) is True

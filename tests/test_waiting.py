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

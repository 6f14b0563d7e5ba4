"""Control calls that meet a job in between: a `clear` while a cancel is still stopping the
job's sheets, an `approve` of a gate that already ended undecided, and a `resume` whose
changed spec renamed or removed sheets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from helpers import wait_for_job, wait_until

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import JobStatus, SheetStatus

pytestmark = pytest.mark.anyio


def _slow_to_stop(marker: str, seconds: float) -> dict[str, object]:
    """A sheet that takes `seconds` to end after SIGTERM, saying when it starts to stop and
    when it has stopped (files in the workspace)."""
    prompt = (
        f"trap 'touch stopping; sleep {seconds}; touch {marker}; exit 143' TERM; "
        "touch started; sleep 60 & wait"
    )
    return {"name": "slow-stop", "sheets": [{"prompt": prompt}]}


async def _started(c: Conductor, spec: dict[str, object]) -> tuple[str, Path]:
    job = await c.submit_job(spec=spec)
    workspace = Path((await c.get_job(job.job_id)).workspace)

    async def started() -> bool:
        detail = await c.get_job(job.job_id)
        return detail.sheets[0].status is SheetStatus.RUNNING and (workspace / "started").exists()

    await wait_until(started)
    return job.job_id, workspace


async def _cancelled_while_stopping(c: Conductor, job_id: str, workspace: Path) -> None:
    async def stopping() -> bool:
        detail = await c.get_job(job_id)
        return detail.status is JobStatus.CANCELLED and (workspace / "stopping").exists()

    await wait_until(stopping)
    assert (await c.get_job(job_id)).sheets[0].status is SheetStatus.RUNNING


async def test_clear_during_a_cancel_waits_for_the_stopping_sheets_then_clears(
    make_config: Callable[..., PodiumConfig],
) -> None:
    async with Conductor(make_config(kill_grace_seconds=10)) as c:
        job_id, workspace = await _started(c, _slow_to_stop("stopped", 1.0))
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.cancel_job, job_id)
            await _cancelled_while_stopping(c, job_id, workspace)
            result = await c.clear_jobs(job_ids=[job_id])
        assert (workspace / "stopped").exists()  # it waited for the sheet to end
        assert result.job_ids == [job_id] and result.skipped_active == []
        jobs, _ = await c.list_jobs()
        assert job_id not in [j.job_id for j in jobs]
        assert not (c.config.logs_dir / job_id).exists()


async def test_clear_reports_a_job_whose_sheets_are_still_stopping_past_its_wait(
    make_config: Callable[..., PodiumConfig],
) -> None:
    async with Conductor(make_config(kill_grace_seconds=10)) as c:
        c.housekeeping.stopping_wait_seconds = 0.2
        job_id, workspace = await _started(c, _slow_to_stop("stopped", 3.0))
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.cancel_job, job_id)
            await _cancelled_while_stopping(c, job_id, workspace)
            result = await c.clear_jobs(job_ids=[job_id])
            assert result.deleted == 0 and result.skipped_active == [job_id]
        # The attempt was recorded in full, the job kept, and a clear now removes it.
        detail = await wait_for_job(c, job_id)
        assert detail.sheets[0].status is SheetStatus.CANCELLED
        assert (await c.clear_jobs(job_ids=[job_id])).job_ids == [job_id]

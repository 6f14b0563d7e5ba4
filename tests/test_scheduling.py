"""Global scheduling across jobs: concurrency caps measured by the sheets, fair share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from helpers import wait_for_job

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import JobStatus

pytestmark = pytest.mark.anyio


def _max_overlap(events_file: Path) -> int:
    """Largest number of sheets between their own start and end marks at once."""
    marks = []
    for line in events_file.read_text().splitlines():
        kind, stamp = line.split()
        marks.append((float(stamp), 1 if kind == "start" else -1))
    marks.sort(key=lambda m: (m[0], m[1]))  # an end at the same instant counts first
    running = peak = 0
    for _, delta in marks:
        running += delta
        peak = max(peak, running)
    return peak


async def test_twenty_jobs_respect_global_cap_and_fair_share(
    make_config: Callable[..., PodiumConfig], tmp_path: Path
) -> None:
    events = tmp_path / "events.log"
    sheet = (
        f"echo start $(date +%s.%N) >> {events}; sleep 0.05; echo end $(date +%s.%N) >> {events}"
    )
    big = {"name": "big", "sheets": [{"prompt": sheet} for _ in range(10)]}
    small = {"name": "small", "sheets": [{"prompt": "true"}]}
    async with Conductor(make_config(max_concurrent_sheets=4)) as conductor:
        big_ids = [(await conductor.submit_job(spec=big)).job_id for _ in range(20)]
        await anyio.sleep(0.3)  # the big jobs are already competing for the 4 slots
        small_id = (await conductor.submit_job(spec=small)).job_id

        small_done = await wait_for_job(conductor, small_id, timeout=60)
        bigs = [await wait_for_job(conductor, job_id, timeout=120) for job_id in big_ids]

    assert small_done.status is JobStatus.COMPLETED
    assert all(b.status is JobStatus.COMPLETED for b in bigs)
    assert all(b.completed_sheets == 10 for b in bigs)
    lines = events.read_text().splitlines()
    assert len(lines) == 2 * 200
    assert _max_overlap(events) <= 4
    assert _max_overlap(events) >= 2  # the cap was actually exercised
    last_big_end = max(b.completed_at for b in bigs if b.completed_at)
    assert small_done.completed_at is not None and small_done.completed_at < last_big_end


async def test_per_job_parallelism_and_job_cap(
    make_config: Callable[..., PodiumConfig], tmp_path: Path
) -> None:
    events = tmp_path / "events.log"
    sheet = f"echo start $(date +%s.%N) >> {events}; sleep 0.2; echo end $(date +%s.%N) >> {events}"
    spec = {
        "name": "narrow",
        "concurrency": {"max_parallel_sheets": 2},
        "sheets": [{"prompt": sheet} for _ in range(6)],
    }
    async with Conductor(make_config(max_concurrent_sheets=8)) as conductor:
        job = await conductor.submit_job(spec=spec)
        assert (await wait_for_job(conductor, job.job_id)).status is JobStatus.COMPLETED
    assert _max_overlap(events) == 2

    events.unlink()
    async with Conductor(make_config(max_concurrent_sheets=8, max_concurrent_jobs=1)) as c:
        one = {"name": "one", "sheets": [{"prompt": sheet}, {"prompt": sheet}]}
        ids = [(await c.submit_job(spec=one)).job_id for _ in range(3)]
        for job_id in ids:
            await wait_for_job(c, job_id)
    # One job at a time, each with two parallel sheets.
    assert _max_overlap(events) == 2


async def test_priority_orders_jobs_when_slots_are_scarce(
    make_config: Callable[..., PodiumConfig], tmp_path: Path
) -> None:
    order = tmp_path / "order.log"
    async with Conductor(make_config(max_concurrent_sheets=1)) as conductor:
        blocker = await conductor.submit_job(
            spec={"name": "blocker", "sheets": [{"prompt": "sleep 0.5"}]}
        )
        low = {"name": "low", "priority": 9, "sheets": [{"prompt": f"echo low >> {order}"}]}
        high = {"name": "high", "priority": 1, "sheets": [{"prompt": f"echo high >> {order}"}]}
        low_id = (await conductor.submit_job(spec=low)).job_id
        high_id = (await conductor.submit_job(spec=high)).job_id
        for job_id in (blocker.job_id, low_id, high_id):
            await wait_for_job(conductor, job_id)
    assert order.read_text().split() == ["high", "low"]

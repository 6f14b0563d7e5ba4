"""Resident memory of a conductor: idle, with 200 sheets running, with 10,000 queued,
against the same process before any conductor started."""

from __future__ import annotations

import anyio
import psutil

from bench.common import Figure, bench_config, scratch
from podium.core.conductor import Conductor
from podium.core.models import JobStatus, SheetStatus


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 1_048_576


async def wait_running(conductor: Conductor, job_id: str, count: int) -> None:
    with anyio.fail_after(120):
        while True:
            detail = await conductor.get_job(job_id, sheet_status=[SheetStatus.RUNNING])
            if detail.sheets_total_matching >= count:
                return
            await anyio.sleep(0.2)


async def run(rounds: int, quick: bool) -> list[Figure]:
    running = 200 if not quick else 50
    queued = 10_000 if not quick else 2_000
    base = rss_mb()
    with scratch("memory") as home:
        config = bench_config(
            home, max_concurrent_sheets=running, max_concurrent_jobs=1, max_processes=4096
        )
        async with Conductor(config) as conductor:
            idle = rss_mb()
            spec = {
                "name": "sleepers",
                "concurrency": {"max_parallel_sheets": running},
                "sheet": {"size": 1, "total_items": running},
                "prompt": {"template": "sleep 60"},
            }
            busy = await conductor.submit_job(spec=spec)
            await wait_running(conductor, busy.job_id, running)
            with_running = rss_mb()
            # Only one job may run at a time: this one waits, every sheet of it ready.
            waiting = {
                "name": "waiting",
                "sheet": {"size": 1, "total_items": queued},
                "prompt": {"template": "true"},
            }
            big = await conductor.submit_job(spec=waiting)
            assert (await conductor.get_job(big.job_id)).status is JobStatus.QUEUED
            await anyio.sleep(0.5)
            with_queued = rss_mb()
            await conductor.cancel_job(busy.job_id)
            await conductor.cancel_job(big.job_id)
    del rounds
    return [
        Figure("memory", "RSS idle", "MB", [idle], "before start", [base]),
        Figure(
            "memory", f"RSS with {running} sheets running", "MB", [with_running], "idle", [idle]
        ),
        Figure(
            "memory",
            f"RSS with {running} running + {queued:,} queued",
            "MB",
            [with_queued],
            "idle",
            [idle],
        ),
    ]

"""Resident memory of a conductor process: idle, with 200 sheets running, with 10,000 more
queued, against the same fresh process before the conductor started. Measured in a child
process of its own, so nothing else the benchmarks did counts."""

from __future__ import annotations

import json
import subprocess
import sys

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


async def measure(running: int, queued: int) -> dict[str, float]:
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
    return {"base": base, "idle": idle, "running": with_running, "queued": with_queued}


async def run(rounds: int, quick: bool) -> list[Figure]:
    running = 200 if not quick else 50
    queued = 10_000 if not quick else 2_000
    found: dict[str, list[float]] = {}
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, "-m", "bench.memory", str(running), str(queued)],
            check=True,
            capture_output=True,
            text=True,
        )
        for key, value in json.loads(out.stdout.strip().splitlines()[-1]).items():
            found.setdefault(key, []).append(value)
    return [
        Figure("memory", "RSS idle", "MB", found["idle"], "before start", found["base"]),
        Figure(
            "memory",
            f"RSS with {running} sheets running",
            "MB",
            found["running"],
            "idle",
            found["idle"],
        ),
        Figure(
            "memory",
            f"RSS with {running} running + {queued:,} queued",
            "MB",
            found["queued"],
            "idle",
            found["idle"],
        ),
    ]


if __name__ == "__main__":
    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(30),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    print(json.dumps(anyio.run(measure, int(sys.argv[1]), int(sys.argv[2]))))

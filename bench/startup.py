"""Conductor start time: from `start()` to ready, on a home holding 10^5 jobs, against the
same on an empty home."""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import Figure, bench_config, scratch
from bench.seed import seed
from podium.core.conductor import Conductor


async def start_time(home: Path) -> float:
    conductor = Conductor(bench_config(home))
    started = time.perf_counter()
    await conductor.start()
    elapsed = time.perf_counter() - started
    status = await conductor.status()
    assert status.ready, status
    await conductor.stop()
    return elapsed


async def run(rounds: int, quick: bool) -> list[Figure]:
    size = 100_000 if not quick else 10_000
    with scratch("startup-empty") as empty, scratch("startup-full") as full:
        await seed(full, size)
        await start_time(full)  # the first start migrates nothing but warms the page cache
        ours = [await start_time(full) for _ in range(rounds)]
        base = [await start_time(empty) for _ in range(rounds)]
    return [
        Figure(
            "startup",
            f"start on {size:,} jobs",
            "s",
            ours,
            "empty home",
            base,
            note="target: ready in under 2 s" + (" (met)" if max(ours) < 2 else " (NOT met)"),
        )
    ]

"""Queue scale: a 10,000-sheet job must dispatch its last 1,000 sheets about as fast as its
first 1,000 (no per-transition cost that grows with the job). Rates come from the
completion times committed in the store."""

from __future__ import annotations

import time

from bench.common import Figure, bench_config, scratch
from bench.dispatch import CONCURRENCY, trivial_spec, until_finished, verify
from podium.core.conductor import Conductor

WINDOW = 1000


async def first_and_last(sheets: int) -> tuple[float, float]:
    with scratch("queue") as home:
        config = bench_config(home, max_concurrent_sheets=CONCURRENCY)
        async with Conductor(config) as conductor:
            job = await conductor.submit_job(spec=trivial_spec("queue", sheets))
            await until_finished(conductor, {job.job_id})
            await verify(conductor, {job.job_id}, sheets)
            rows = await conductor.store.get_sheets(job.job_id)
    times = sorted(r.completed_at.timestamp() for r in rows if r.completed_at is not None)
    window = min(WINDOW, len(times) // 2)

    def rate(chunk: list[float]) -> float:
        return (len(chunk) - 1) / max(chunk[-1] - chunk[0], 1e-9)

    return rate(times[:window]), rate(times[-window:])


async def run(rounds: int, quick: bool) -> list[Figure]:
    sheets = 10_000 if not quick else 2_000
    first: list[float] = []
    last: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        a, b = await first_and_last(sheets)
        first.append(a)
        last.append(b)
        del started
    return [
        Figure(
            "queue",
            f"last {WINDOW:,} of {sheets:,} sheets/s",
            "/s",
            last,
            f"first {WINDOW:,}",
            first,
            compare="speed",
            target=1.1,
        )
    ]

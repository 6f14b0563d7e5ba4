"""Dispatch throughput: trivial `true` sheets through a conductor (8 at a time), against
`xargs -P8 bash -c true` over the same count and a plain asyncio loop with a semaphore of 8,
measured in the same run. Every transition is checked in the store afterwards."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import anyio

from bench.common import Figure, bench_config, scratch
from podium.core.conductor import Conductor
from podium.core.models import JobStatus, Outcome, SheetStatus

CONCURRENCY = 8

ASYNCIO_FLOOR = """
import asyncio, subprocess, sys, time
N = int(sys.argv[1])
async def one(gate):
    async with gate:
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", "true", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True)
        await proc.communicate()
async def main():
    gate = asyncio.Semaphore(8)
    started = time.perf_counter()
    await asyncio.gather(*(one(gate) for _ in range(N)))
    print(N / (time.perf_counter() - started))
asyncio.run(main())
"""


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def xargs_rate(count: int) -> tuple[float, float]:
    """Processes per second, and the CPU seconds each cost (xargs's share included)."""
    before = _cpu_seconds(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        f"seq {count} | xargs -P{CONCURRENCY} -I{{}} bash -c true",
        shell=True,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    return count / elapsed, (_cpu_seconds(resource.RUSAGE_CHILDREN) - before) / count


def asyncio_floor_rate(count: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", ASYNCIO_FLOOR, str(count)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip())


def trivial_spec(name: str, sheets: int) -> dict[str, object]:
    return {
        "name": name,
        "concurrency": {"max_parallel_sheets": CONCURRENCY},
        "sheet": {"size": 1, "total_items": sheets},
        "prompt": {"template": "true"},
    }


async def podium_rate(home: Path, jobs: int, per_job: int) -> tuple[float, int, float]:
    """Sheets per second from the first submit to the last job's completion; returns the
    rate, the number of commits the writer made, and the CPU seconds per sheet this process
    (the conductor and its threads, not the sheets' processes) spent meanwhile."""
    config = bench_config(home, max_concurrent_sheets=CONCURRENCY)
    async with Conductor(config) as conductor:
        cpu_before = _cpu_seconds(resource.RUSAGE_SELF)
        started = time.perf_counter()
        ids = set()
        for i in range(jobs):
            submitted = await conductor.submit_job(spec=trivial_spec(f"b{i}", per_job))
            ids.add(submitted.job_id)
        await until_finished(conductor, ids)
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(resource.RUSAGE_SELF) - cpu_before
        await verify(conductor, ids, per_job)
        count = jobs * per_job
        return count / elapsed, conductor.engine.writer.commits, cpu / count


async def until_finished(conductor: Conductor, ids: set[str]) -> None:
    """Wait until every job in `ids` has completed: woken by change events, and checking
    the store (cheap: counts are kept) in case a busy subscriber missed one."""
    async with conductor.events.subscribe() as events:
        while True:
            counts = await conductor.store.count_jobs_by_status()
            if counts.get("failed") or counts.get("cancelled"):
                raise AssertionError(f"a benchmark job did not complete: {counts}")
            if counts.get(JobStatus.COMPLETED.value, 0) >= len(ids):
                return
            with anyio.move_on_after(0.5):
                async for event in events:
                    if event.kind == "job_status" and event.status != "running":
                        break


async def verify(conductor: Conductor, job_ids: set[str], per_job: int) -> None:
    """Every transition committed: each job completed, each sheet completed once, one
    finished attempt per sheet in the history, nothing left in flight."""
    store = conductor.store
    for job_id in job_ids:
        record = await store.load_job(job_id)
        assert record is not None, job_id
        assert record.job.status is JobStatus.COMPLETED, (job_id, record.job.status)
        assert record.job.completed_sheets == per_job, (job_id, record.job.completed_sheets)
        assert len(record.sheets) == per_job
        for sheet in record.sheets:
            assert sheet.status is SheetStatus.COMPLETED and sheet.attempts == 1, sheet
        attempts, total = await store.get_history(job_id, None, per_job + 1, 0)
        assert total == per_job, (job_id, total)
        assert all(a.outcome is Outcome.COMPLETED and a.ended_at for a in attempts)
    assert await store.in_flight_attempts() == []
    assert await store.count_running_sheets() == 0


async def run(rounds: int, quick: bool) -> list[Figure]:
    # Every round's home is removed once all rounds are done, not before the next round: a
    # round's thousands of deleted log files would make every file the next one creates on
    # an ext4 without a journal skip them (see `scratch_root`), a cost of the benchmark's
    # own cleanup rather than of dispatch.
    with ExitStack() as homes:
        return await _run(rounds, quick, homes)


async def _run(rounds: int, quick: bool, homes: ExitStack) -> list[Figure]:
    shapes = [(1, 2000), (200, 10)] if not quick else [(1, 200), (20, 10)]
    figures = []
    for jobs, per_job in shapes:
        count = jobs * per_job
        ours: list[float] = []
        xargs: list[float] = []
        floor: list[float] = []
        commits: list[int] = []
        our_cpu: list[float] = []
        child_cpu: list[float] = []
        for _ in range(rounds):
            # Interleaved, so a change in the machine's load touches all three alike.
            xargs_per_second, per_process = await anyio.to_thread.run_sync(xargs_rate, count)
            xargs.append(xargs_per_second)
            child_cpu.append(per_process * 1000)
            floor.append(await anyio.to_thread.run_sync(asyncio_floor_rate, count))
            home = homes.enter_context(scratch("dispatch"))
            rate, made, cpu = await podium_rate(home, jobs, per_job)
            ours.append(rate)
            commits.append(made)
            our_cpu.append(cpu * 1000)
        shape = f"{jobs} x {per_job:,}"
        note = f"every transition checked in the store; commits/sheet {commits[-1] / count:.2f}"
        figures.append(
            Figure(
                "dispatch",
                f"{shape} sheets/s",
                "/s",
                ours,
                "xargs -P8",
                xargs,
                compare="speed",
                target=1.5,
                note=note,
            )
        )
        figures.append(
            Figure(
                "dispatch",
                f"{shape} sheets/s vs asyncio floor",
                "/s",
                ours,
                "asyncio+semaphore",
                floor,
                compare="speed",
            )
        )
        # Where the time goes: xargs keeps the machine's cores busy with `bash -c true`
        # alone, so a conductor 1.5x slower has, beside each sheet's own bash, half a bash's
        # CPU for everything else it does for that sheet.
        figures.append(
            Figure(
                "dispatch",
                f"{shape} conductor CPU per sheet",
                "ms",
                our_cpu,
                "bash -c true under xargs",
                child_cpu,
                note="1.5x of xargs on cores it keeps busy leaves the conductor 0.5x a bash",
            )
        )
    return figures

"""The engine's in-memory view (job and sheet rows, counts, unmet dependencies, ready and
running sets, holds, attempts in flight) always equals what a fresh read of the store gives,
after random workloads of DAG jobs that fail, retry, pause, resume and cancel."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from fake_agent_profile import fake_agent_profile

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.engine.state import JobState
from podium.core.errors import PodiumError
from podium.core.models import JobStatus, SheetStatus, utcnow
from podium.core.pressure import PressureLevel, ResourceSample

pytestmark = pytest.mark.anyio

PROMPTS = ["true", "true", "exit 1", "sleep 0.05", "echo out; sleep 0.02"]


def random_job(rng: random.Random, index: int, agent: bool = False) -> dict[str, Any]:
    sheets = []
    for n in range(1, rng.randint(3, 12) + 1):
        prompt = rng.choice(PROMPTS)
        if agent:
            prompt = rng.choice(["hello", "hello", f"ratelimit-wait:1:r{index}-{n}"])
        sheet: dict[str, Any] = {"name": f"s{n}", "prompt": prompt}
        deps = sorted({rng.randint(1, n - 1) for _ in range(rng.randint(0, 2))} if n > 1 else [])
        if deps:
            sheet["depends_on"] = deps
        sheets.append(sheet)
    return {
        "name": f"random-{index}",
        **({"instrument": "fake-agent"} if agent else {}),
        "on_failure": rng.choice(["stop", "continue"]),
        "retry": {"max_retries": rng.randint(0, 1), "base_delay_seconds": 0.01, "jitter": False},
        "concurrency": {"max_parallel_sheets": rng.randint(1, 4)},
        "priority": rng.randint(1, 10),
        "sheets": sheets,
    }


async def quiet(conductor: Conductor, timeout: float = 60) -> None:
    """Until nothing runs and nothing will start by itself (every job terminal or paused,
    no wait pending): the moment to compare the view with the store. A sheet frozen by an
    immediate pause stays running (in the view and in the store) until its job is resumed."""
    engine = conductor.engine
    deadline = anyio.current_time() + timeout

    def stirring() -> list[Any]:
        return [e for e in engine.state.running.values() if not e.control.suspended]

    while True:
        busy = stirring() or engine.writer._queue or engine.writer._deferred
        moving = {
            j: (s.job.status, sorted(s.running), s.job.error)
            for j, s in engine.state.jobs.items()
            if s.job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        }
        if not busy and not moving:
            commits = engine.writer.commits
            await anyio.sleep(0.05)  # let the last announcements out
            # A group taken off the queue may still be on its way to the store (a pass's
            # last op, say a held sheet sent back to pending): quiet only once none landed.
            if not stirring() and not engine.writer._queue and engine.writer.commits == commits:
                return
        assert anyio.current_time() < deadline, (
            f"still moving after {timeout} s: running={stirring()} "
            f"queue={engine.writer._queue} jobs={moving}"
        )
        await anyio.sleep(0.02)


def derived(state: JobState, now: datetime) -> dict[str, Any]:
    # A wait that is over but whose timer has not fired yet counts as over: a fresh read
    # keeps such a sheet waiting until the dispatcher's timer (due at once) moves it.
    over = {n for n, until in state.waiting.items() if until <= now and state.unmet[n] == 0}
    return {
        "counts": {s: n for s, n in state.counts.items() if n},
        "unmet": dict(state.unmet),
        "ready": sorted({n for n in state.sheets if state.is_ready(n)} | over),
        "running": sorted(state.running),
        "waiting": {n: until for n, until in state.waiting.items() if until > now},
        "held_back": sorted(state.held_back),
        "open": state.open_sheets,
    }


async def assert_view_matches_store(conductor: Conductor) -> None:
    engine, store = conductor.engine, conductor.store
    held = engine.state.jobs
    for job in await store.active_jobs():
        assert job.job_id in held, f"active job {job.job_id} is not in the engine's view"
    for job_id, state in held.items():
        record = await store.load_job(job_id)
        assert record is not None, job_id
        assert state.job == record.job, job_id
        stored = {s.sheet_num: s for s in record.sheets}
        assert state.sheets == stored, job_id
        fresh = JobState(record.job, record.sheets, state.spec, record.spec_error)
        now = utcnow()
        assert derived(state, now) == derived(fresh, now), job_id
        assert state.job.completed_sheets == stored_count(stored, SheetStatus.COMPLETED)
        assert state.job.failed_sheets == stored_count(stored, SheetStatus.FAILED)
    # Jobs the engine let go of are done with: terminal, nothing of them running.
    for job in await store.jobs_with_status(list(JobStatus)):
        if job.job_id not in held:
            assert job.status.is_terminal, job
            sheets = await store.get_sheets(job.job_id)
            assert not [s for s in sheets if s.status is SheetStatus.RUNNING], job.job_id
    assert {h.hold_key: h for h in await store.holds()} == engine.state.holds
    in_flight = {(a.job_id, a.sheet_num, a.attempt): a for a in await store.in_flight_attempts()}
    assert in_flight.keys() == engine.state.attempts.keys()
    for key, attempt in in_flight.items():
        mine = engine.state.attempts[key]
        assert (mine.version, mine.outcome) == (attempt.version, attempt.outcome), key


def stored_count(rows: dict[int, Any], status: SheetStatus) -> int:
    return sum(1 for r in rows.values() if r.status is status)


def _fixed(level: PressureLevel) -> Callable[[float, int], ResourceSample]:
    def prober(max_memory_mb: float, max_processes: int) -> ResourceSample:
        return ResourceSample(100.0, 1, 0, level, f"simulated ({level.value})", time.monotonic())

    return prober


def press(conductor: Conductor, level: PressureLevel) -> None:
    assert conductor.monitor is not None
    conductor.monitor._prober = _fixed(level)
    conductor._on_sample(conductor.monitor.sample())


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_view_equals_a_fresh_read_after_random_workloads(
    make_config: Callable[..., PodiumConfig], home: Path, seed: int
) -> None:
    rng = random.Random(seed)
    (home / "instruments").mkdir(exist_ok=True)
    (home / "instruments" / "fake-agent.yaml").write_text(fake_agent_profile())
    async with Conductor(make_config(max_concurrent_sheets=4, max_concurrent_jobs=3)) as c:
        ids = []
        for i in range(8):
            spec = random_job(rng, i, agent=rng.random() < 0.4)
            submitted = await c.submit_job(spec=spec, start=rng.random() < 0.8)
            ids.append(submitted.job_id)
        # Control calls land while sheets run, succeed, fail, retry, hit rate limits (and
        # holds are cleared) and pressure rises and falls.
        actions = ["pause", "resume", "resume", "cancel", "pause-now", "retry"]
        actions += ["clear-holds", "critical", "high", "none"]
        for _ in range(25):
            await anyio.sleep(rng.uniform(0, 0.08))
            job_id = rng.choice(ids)
            action = rng.choice(actions)
            try:
                if action in ("critical", "high", "none"):
                    press(c, PressureLevel(action))
                elif action == "clear-holds":
                    await c.clear_rate_limits()
                elif action == "pause":
                    await c.pause_job(job_id)
                elif action == "pause-now":
                    await c.pause_job(job_id, immediate=True)
                elif action == "cancel":
                    await c.cancel_job(job_id)
                else:
                    await c.resume_job(job_id, retry_failed=action == "retry")
            except PodiumError:
                pass  # e.g. pausing a finished job: the table says it is an error
        # Paused mid-way: compare, then let everything run to its end and compare again.
        press(c, PressureLevel.NONE)
        for job_id in ids:
            with contextlib.suppress(PodiumError):
                await c.pause_job(job_id)
        await quiet(c)
        await assert_view_matches_store(c)
        for job_id in ids:
            with contextlib.suppress(PodiumError):
                await c.resume_job(job_id)
        await quiet(c)
        await assert_view_matches_store(c)
        statuses = {(await c.get_job(j)).status for j in ids}
        assert statuses <= {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}

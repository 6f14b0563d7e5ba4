"""Backpressure from the resource monitor, config reload, and readiness (Issue 5)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import wait_for_job

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.errors import BackpressureError
from podium.core.models import JobStatus
from podium.core.pressure import PressureLevel, ResourceSample, level_for, probe

pytestmark = pytest.mark.anyio

QUICK = {"name": "quick", "sheets": [{"prompt": "true"}]}


def test_levels_follow_the_spec_thresholds() -> None:
    assert [level_for(f) for f in (0.0, 0.49, 0.5, 0.69, 0.7, 0.84, 0.85, 0.94, 0.95, 2.0)] == [
        PressureLevel.NONE,
        PressureLevel.NONE,
        PressureLevel.LOW,
        PressureLevel.LOW,
        PressureLevel.MEDIUM,
        PressureLevel.MEDIUM,
        PressureLevel.HIGH,
        PressureLevel.HIGH,
        PressureLevel.CRITICAL,
        PressureLevel.CRITICAL,
    ]


def test_probe_measures_this_process_and_fails_closed() -> None:
    sample = probe(max_memory_mb=1_000_000, max_processes=100_000)
    assert sample.memory_mb is not None and sample.memory_mb > 1
    assert sample.level is PressureLevel.NONE
    tight = probe(max_memory_mb=16, max_processes=100_000)
    assert tight.level is PressureLevel.CRITICAL and "memory" in (tight.reason or "")
    missing = probe(max_memory_mb=1000, max_processes=10, pid=2**22 + 12345)
    assert missing.level is PressureLevel.CRITICAL and "failing closed" in (missing.reason or "")


async def test_memory_pressure_refuses_submit_until_limit_is_raised(
    make_config: Callable[..., PodiumConfig], home: Path
) -> None:
    (home / "config.yaml").write_text("max_memory_mb: 16\n")
    async with Conductor(make_config()) as conductor:
        assert (await conductor.status()).pressure_level == "critical"
        assert not (await conductor.status()).ready
        with pytest.raises(BackpressureError, match="memory"):
            await conductor.submit_job(spec=QUICK)
        assert (await conductor.list_jobs())[0] == []

        (home / "config.yaml").write_text("max_memory_mb: 65536\nmax_concurrent_sheets: 2\n")
        result = await conductor.reload()
        assert result.applied["max_memory_mb"] == [16, 65536]
        assert conductor.manager.limits.max_concurrent_sheets == 2
        status = await conductor.status()
        assert status.pressure_level in ("none", "low") and status.ready
        job = await conductor.submit_job(spec=QUICK)
        assert (await wait_for_job(conductor, job.job_id)).status is JobStatus.COMPLETED


async def test_reload_reports_fields_that_need_a_restart(
    make_config: Callable[..., PodiumConfig], home: Path
) -> None:
    async with Conductor(make_config()) as conductor:
        (home / "config.yaml").write_text("auto_resume: true\n")
        result = await conductor.reload()
        assert "auto_resume" in result.not_applied and not conductor.config.auto_resume
        (home / "config.yaml").write_text("max_concurrent_sheets: 0\n")
        with pytest.raises(Exception, match="max_concurrent_sheets"):
            await conductor.reload()
        assert conductor.config.max_concurrent_sheets == 4  # a bad file changes nothing


def _fixed(level: PressureLevel) -> Callable[[float, int], ResourceSample]:
    def prober(max_memory_mb: float, max_processes: int) -> ResourceSample:
        return ResourceSample(
            100.0, 1, 0, level, f"memory: simulated ({level.value})", time.monotonic()
        )

    return prober


async def test_critical_stops_dispatch_and_high_slows_it(
    conductor: Conductor, tmp_path: Path
) -> None:
    assert conductor.monitor is not None
    job = await conductor.submit_job(spec=QUICK, start=False)
    conductor.monitor._prober = _fixed(PressureLevel.CRITICAL)
    conductor._on_sample(conductor.monitor.sample())
    await conductor.resume_job(job.job_id)
    import anyio

    await anyio.sleep(0.5)
    assert (await conductor.get_job(job.job_id)).status is JobStatus.QUEUED  # nothing started

    events = tmp_path / "starts.log"
    conductor.monitor._prober = _fixed(PressureLevel.HIGH)
    conductor._on_sample(conductor.monitor.sample())
    spec = {
        "name": "slowed",
        "sheets": [{"prompt": f"date +%s.%N >> {events}"} for _ in range(2)],
    }
    slowed = await conductor.submit_job(spec=spec)
    assert (await wait_for_job(conductor, slowed.job_id, timeout=20)).status is JobStatus.COMPLETED
    assert (await wait_for_job(conductor, job.job_id)).status is JobStatus.COMPLETED
    starts = sorted(float(x) for x in events.read_text().split())
    assert starts[1] - starts[0] >= 1.5  # high pressure spaces dispatches out


@pytest.mark.timeout(30)
async def test_high_pressure_with_nothing_to_start_leaves_the_loop_idle(
    conductor: Conductor,
) -> None:
    """Once the pause between two slow dispatches is over and nothing is ready, the
    dispatcher sleeps until something changes: it must not spin on a wake-up time that is
    always now, which starves every other task of the conductor (calls never return)."""
    import anyio

    assert conductor.monitor is not None
    conductor.monitor._prober = _fixed(PressureLevel.HIGH)
    conductor._on_sample(conductor.monitor.sample())
    job = await conductor.submit_job(spec=QUICK)
    assert (await wait_for_job(conductor, job.job_id)).status is JobStatus.COMPLETED
    passes = conductor.engine.dispatcher.passes
    # Past the pause (2 s): a spinning loop would never let this sleep end.
    await anyio.sleep(2.5)
    assert conductor.engine.dispatcher.passes - passes < 50
    later = await conductor.submit_job(spec=QUICK)
    assert (await wait_for_job(conductor, later.job_id)).status is JobStatus.COMPLETED

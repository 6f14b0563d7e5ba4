"""A cancel that lands while a sheet is being spawned leaves nothing running: the process
group is owned (and killed) from the instant it exists (SPEC §9 traps 10 and 15). Each case
is repeated 200 times (1,000 with --long), cancelling at moments spread over the spawn."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import anyio
import psutil
import pytest

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import JobStatus
from podium.core.runner.process import RunControl, run_process

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


@pytest.fixture
def repeat(long_run: bool) -> int:
    return 1000 if long_run else 200


# A leader with a child of its own: killing the leader alone would leave the child behind.
SCRIPT = "sleep 1000 & sleep 1000"


def marked(mark: str) -> list[int]:
    """Live processes whose environment carries `mark` (zombies count as gone)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if mark in "".join(f"{k}={v}" for k, v in proc.environ().items()):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


async def test_cancelling_the_task_during_spawn_leaves_no_process(
    tmp_path: Path, repeat: int
) -> None:
    mark = f"podium-spawn-cancel-{os.getpid()}"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SPAWN_TEST_MARK": mark}
    rng = random.Random(9)
    finished = 0
    for i in range(repeat):
        delay = rng.uniform(0, 0.004)
        with anyio.move_on_after(delay):
            await run_process(
                ["bash", "-c", SCRIPT],
                cwd=tmp_path,
                env=env,
                stdin_data=None,
                log_path=tmp_path / "logs" / f"{i}.log",
                log_max_bytes=1 << 16,
                timeout_seconds=None,
                idle_timeout_seconds=None,
                kill_grace_seconds=0.2,
            )
            finished += 1
    assert finished == 0, "a 1000 s sleep cannot finish; every run must have been cancelled"
    assert marked(mark) == []


async def test_a_cancel_request_during_spawn_leaves_no_process(tmp_path: Path, repeat: int) -> None:
    mark = f"podium-spawn-request-{os.getpid()}"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SPAWN_TEST_MARK": mark}
    rng = random.Random(11)

    async def one(i: int) -> None:
        control = RunControl()
        async with anyio.create_task_group() as tg:

            async def cancel_soon() -> None:
                await anyio.sleep(rng.uniform(0, 0.004))
                control.request_cancel()

            tg.start_soon(cancel_soon)
            outcome = await run_process(
                ["bash", "-c", SCRIPT],
                cwd=tmp_path,
                env=env,
                stdin_data=None,
                log_path=tmp_path / "logs" / f"{i}.log",
                log_max_bytes=1 << 16,
                timeout_seconds=None,
                idle_timeout_seconds=None,
                kill_grace_seconds=0.2,
                control=control,
            )
            assert outcome.cancelled

    for i in range(repeat):
        await one(i)
    assert marked(mark) == []


async def test_cancelling_jobs_while_their_sheets_spawn_leaves_no_process(
    make_config: Callable[..., PodiumConfig], home: Path, repeat: int
) -> None:
    """The engine's cancel: right after submit, as the start is committed, or once the
    sheet is seen running (its process may be starting in a worker thread then)."""
    rng = random.Random(5)
    mark = str(home)  # every sheet process carries PODIUM_ATTEMPT_OF=<home>|...
    spec = {"name": "spawner", "sheets": [{"prompt": SCRIPT}]}
    config = make_config(kill_grace_seconds=0.2)
    async with Conductor(config) as conductor, conductor.events.subscribe() as events:
        for _ in range(repeat):
            job = await conductor.submit_job(spec=spec)
            moment = rng.choice(["at-once", "started", "later"])
            if moment != "at-once":
                with anyio.move_on_after(5):
                    async for event in events:
                        if event.job_id == job.job_id and event.status == "running":
                            break
                if moment == "later":
                    await anyio.sleep(rng.uniform(0, 0.003))
            summary = await conductor.cancel_job(job.job_id)
            assert summary.status is JobStatus.CANCELLED
    assert marked(mark) == []

"""Intent lives in the store, not in memory (SPEC §6): a pending modify, and a rate limit's
"one sheet goes first" release, behave the same after a kill -9 and after a graceful stop."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from fake_agent_profile import fake_agent_profile
from helpers import wait_for_job, wait_until, write_rows
from test_recovery import conductor_process, kill_group_quietly, live_group_members, poll
from test_transports import echo_pid

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import JobStatus, PauseReason, SheetStatus, utcnow
from podium.core.store.open import open_store
from podium.core.store.rows import HoldRow

pytestmark = pytest.mark.anyio


def modify_specs(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job whose first sheet is held while a modify arrives, and the modified spec: the
    second sheet's prompt changes (the old one would write `old`, the new one `new`)."""
    pid_file = tmp_path / "pid-1"
    hold = tmp_path / "hold-1"
    first = {
        "name": "a",
        "prompt": f"{echo_pid(pid_file)}; while [ -e {hold} ]; do sleep 0.05; done",
    }
    old = {
        "name": "modify",
        "retry": {"max_retries": 0},
        "sheets": [first, {"name": "b", "depends_on": ["a"], "prompt": "echo old > b.txt"}],
    }
    new = {
        **old,
        "sheets": [first, {"name": "b", "depends_on": ["a"], "prompt": "echo new > b.txt"}],
    }
    return old, new


async def test_a_crash_after_a_modify_comes_back_interrupted_with_the_new_spec(
    home: Path, tmp_path: Path, make_config: Callable[..., PodiumConfig]
) -> None:
    old, new = modify_specs(tmp_path)
    (tmp_path / "hold-1").touch()
    with conductor_process(home, tmp_path, old, job_id="modified", modified=new) as proc:
        # The modify is in: the job waits for its running sheet to end, paused by the system.
        # The sheet is running in the store; its shell writes its pid a moment later.
        poll((tmp_path / "pid-1").exists, 30, "the held sheet to write its pid")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    sheet_pid = int((tmp_path / "pid-1").read_text())
    (tmp_path / "hold-1").unlink()
    try:
        async with Conductor(make_config()) as conductor:
            assert live_group_members(sheet_pid) == []
            detail = await conductor.get_job("modified", include_spec=True)
            # Not the user's pause: the conductor stopped while the job was in flight.
            assert detail.status is JobStatus.PAUSED
            assert detail.pause_reason is PauseReason.INTERRUPTED
            assert detail.spec is not None and "new" in detail.spec["sheets"][1]["prompt"]
            assert [s.status for s in detail.sheets] == [SheetStatus.PENDING] * 2
            await anyio.sleep(0.3)  # nothing resumes it behind the user's back
            assert (await conductor.get_job("modified")).status is JobStatus.PAUSED
            # One resume continues it, with the new spec.
            await conductor.resume_job("modified")
            done = await wait_for_job(conductor, "modified", timeout=20)
            assert done.status is JobStatus.COMPLETED
            assert (Path(done.workspace) / "b.txt").read_text() == "new\n"
    finally:
        kill_group_quietly(sheet_pid)


async def test_a_crash_after_a_modify_with_auto_resume_continues(
    home: Path, tmp_path: Path, make_config: Callable[..., PodiumConfig]
) -> None:
    old, new = modify_specs(tmp_path)
    (tmp_path / "hold-1").touch()
    with conductor_process(home, tmp_path, old, job_id="modified", modified=new) as proc:
        # The sheet is running in the store; its shell writes its pid a moment later.
        poll((tmp_path / "pid-1").exists, 30, "the held sheet to write its pid")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    sheet_pid = int((tmp_path / "pid-1").read_text())
    (tmp_path / "hold-1").unlink()
    try:
        async with Conductor(make_config(auto_resume=True)) as conductor:
            done = await wait_for_job(conductor, "modified", timeout=20)
            assert done.status is JobStatus.COMPLETED
            assert (Path(done.workspace) / "b.txt").read_text() == "new\n"
    finally:
        kill_group_quietly(sheet_pid)


async def test_a_graceful_stop_after_a_modify_leaves_the_job_paused_not_queued(
    tmp_path: Path, make_config: Callable[..., PodiumConfig]
) -> None:
    old, new = modify_specs(tmp_path)
    (tmp_path / "hold-1").touch()
    first = Conductor(make_config())
    await first.start()
    try:
        await first.submit_job(spec=old, job_id="modified")
        await wait_until(lambda: _sheet_running(first, "modified"), timeout=10)
        summary = await first.resume_job("modified", spec=new)  # the modify
        assert summary.status is JobStatus.PAUSED and summary.pause_reason is PauseReason.USER
    finally:
        await first.stop()
    (tmp_path / "hold-1").unlink()
    store = await open_store(make_config())
    try:
        stopped = await store.get_job("modified")
    finally:
        await store.close()
    assert stopped is not None
    assert stopped.status is JobStatus.PAUSED, "a stop must not turn a pending modify into queued"
    assert stopped.pause_reason is PauseReason.SHUTDOWN and stopped.pending_resume is None
    async with Conductor(make_config()) as second:
        await anyio.sleep(0.3)
        detail = await second.get_job("modified", include_spec=True)
        assert detail.status is JobStatus.PAUSED and detail.pause_reason is PauseReason.SHUTDOWN
        assert detail.spec is not None and "new" in detail.spec["sheets"][1]["prompt"]
        await second.resume_job("modified")
        done = await wait_for_job(second, "modified", timeout=20)
        assert done.status is JobStatus.COMPLETED
        assert (Path(done.workspace) / "b.txt").read_text() == "new\n"


async def _sheet_running(conductor: Conductor, job_id: str) -> bool:
    return (await conductor.get_job(job_id)).sheets[0].status is SheetStatus.RUNNING


# ----- the rate limit's release ----------------------------------------------------------------


def install_fake_agent(home: Path) -> None:
    (home / "instruments").mkdir(exist_ok=True)
    (home / "instruments" / "fake-agent.yaml").write_text(fake_agent_profile())


def timed_job(name: str, timeline: Path) -> dict[str, Any]:
    return {"name": name, "instrument": "fake-agent", "sheets": [{"prompt": f"timed:{timeline}"}]}


def starts_and_ends(timeline: Path, since: float = 0.0) -> tuple[list[float], list[float]]:
    lines = timeline.read_text().splitlines() if timeline.exists() else []
    times = [(line.split()[0], float(line.split()[1])) for line in lines]
    starts = sorted(t for kind, t in times if kind == "start" and t >= since)
    ends = sorted(t for kind, t in times if kind == "end" and t >= since)
    return starts, ends


def assert_went_one_first(timeline: Path, count: int, since: float = 0.0) -> None:
    starts, ends = starts_and_ends(timeline, since)
    assert len(starts) == count, (starts, ends)
    # One sheet went first alone; the others started only once it had succeeded.
    assert starts[1] >= ends[0] - 0.05, (starts, ends)


async def test_a_released_hold_survives_a_crash_and_one_sheet_still_goes_first(
    home: Path, tmp_path: Path, make_config: Callable[..., PodiumConfig]
) -> None:
    install_fake_agent(home)
    now = utcnow()
    timeline = tmp_path / "timeline.log"
    # As a conductor killed while the first sheet after a wait was running leaves the store.
    released = HoldRow("fake-agent", now - timedelta(seconds=1), "429", now, released=True)
    async with Conductor(make_config()):
        pass  # creates the store
    await write_rows(make_config(), holds=[released])
    async with Conductor(make_config(max_concurrent_sheets=4)) as conductor:
        jobs = [
            (await conductor.submit_job(spec=timed_job(f"t{i}", timeline))).job_id for i in range(3)
        ]
        for job_id in jobs:
            assert (await wait_for_job(conductor, job_id, timeout=20)).status is JobStatus.COMPLETED
        assert_went_one_first(timeline, 3)
        assert await conductor.store.holds() == []  # its success lifted the hold for everyone


async def test_a_released_hold_survives_a_graceful_stop(
    home: Path, tmp_path: Path, make_config: Callable[..., PodiumConfig]
) -> None:
    install_fake_agent(home)
    now = utcnow()
    timeline = tmp_path / "timeline.log"
    async with Conductor(make_config()):
        pass
    await write_rows(
        make_config(),
        holds=[HoldRow("fake-agent", now - timedelta(seconds=1), "429", now, released=True)],
    )
    slow = tmp_path / "slow"
    slow.touch()
    first = Conductor(make_config(max_concurrent_sheets=4))
    await first.start()
    try:
        spec = {
            "name": "first",
            "instrument": "fake-agent",
            "sheets": [{"prompt": f"hold:{slow}:{timeline}"}],
        }
        going = await first.submit_job(spec=spec)
        await wait_until(lambda: _sheet_running(first, going.job_id), timeout=10)
        others = [
            (await first.submit_job(spec=timed_job(f"t{i}", timeline))).job_id for i in range(2)
        ]
        await anyio.sleep(0.5)
        # Only one sheet may go first: the others wait behind the released hold.
        for job_id in others:
            assert (await first.get_job(job_id)).sheets[0].status is SheetStatus.PENDING
    finally:
        await first.stop()
    slow.unlink()
    store = await open_store(make_config())
    try:
        [hold] = await store.holds()
    finally:
        await store.close()
    assert hold.released, "a graceful stop must keep the release in progress"
    restarted = time.time()
    async with Conductor(make_config(max_concurrent_sheets=4)) as conductor:
        await conductor.resume_job(going.job_id)
        for job_id in [going.job_id, *others]:
            assert (await wait_for_job(conductor, job_id, timeout=20)).status is JobStatus.COMPLETED
        assert_went_one_first(timeline, 3, since=restarted)
        assert await conductor.store.holds() == []


# ----- a person's pause ------------------------------------------------------------------------


@pytest.mark.parametrize("immediate", [True, False])
async def test_a_graceful_stop_keeps_a_users_pause_so_auto_resume_leaves_it_paused(
    tmp_path: Path, make_config: Callable[..., PodiumConfig], immediate: bool
) -> None:
    """A job a person paused while a sheet still ran (frozen, or finishing) is theirs to
    resume: a graceful stop ends the sheet but keeps `pause_reason: user`, so a restart with
    auto_resume does not start it behind their back (as after a crash)."""
    old, _ = modify_specs(tmp_path)
    (tmp_path / "hold-1").touch()
    first = Conductor(make_config())
    await first.start()
    try:
        await first.submit_job(spec=old, job_id="mine")
        await wait_until(lambda: _sheet_running(first, "mine"), timeout=10)
        paused = await first.pause_job("mine", immediate=immediate)
        assert paused.pause_reason is PauseReason.USER
    finally:
        await first.stop()
    (tmp_path / "hold-1").unlink()
    async with Conductor(make_config(auto_resume=True)) as second:
        await anyio.sleep(0.3)  # time enough for an auto-resumed job to dispatch its sheet
        detail = await second.get_job("mine")
        assert (detail.status, detail.pause_reason) == (JobStatus.PAUSED, PauseReason.USER)
        assert [s.status for s in detail.sheets] == [SheetStatus.PENDING] * 2
        await second.resume_job("mine")
        done = await wait_for_job(second, "mine", timeout=20)
        assert done.status is JobStatus.COMPLETED

"""What a start may touch on the host (SPEC §9 trap 10): one conductor per home, and of the
process groups a dead conductor left, only those it can prove were its attempts'. Real
conductor processes, real SQLite in a temp home, real process groups; no mocks. The jobs'
record across a crash or stop is in test_recovery.py."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import psutil
import pytest
from helpers import write_rows
from test_recovery import (
    _kill_leftover_sheets,  # noqa: F401  (autouse: ends orphaned sheets)
    conductor_process,
    kill_group_quietly,
    live_group_members,
    poll,
)

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.errors import HomeLockedError
from podium.core.models import ErrorCategory, JobStatus, Outcome, PauseReason, SheetStatus, utcnow
from podium.core.store.open import open_store
from podium.core.store.rows import AttemptRow

pytestmark = pytest.mark.anyio


# ----- 6. one conductor per home ------------------------------------------------------------


async def test_second_conductor_on_a_locked_home_fails_at_once(
    home: Path, tmp_path: Path, make_config: Callable[..., PodiumConfig]
) -> None:
    with conductor_process(home, tmp_path, None) as proc:
        config = make_config()
        intruder = Conductor(config)
        began = time.monotonic()
        try:
            await intruder.start()
        except HomeLockedError as exc:
            error = exc
        else:
            await intruder.stop()
            pytest.fail("a second conductor started on a home that a running one holds")
        assert time.monotonic() - began < 2
        message = str(error)
        assert f"pid {proc.pid}" in message
        assert str(config.home) in message
        assert error.pid == proc.pid
        await intruder.stop()  # harmless: it never started
        assert proc.poll() is None  # the running conductor is untouched
        assert int(config.lock_path.read_text()) == proc.pid
    # Once the owner is gone (even by SIGKILL), the home can be taken.
    conductor = Conductor(make_config())
    await conductor.start()
    await conductor.stop()


# ----- 7. recorded groups are killed only when the leader's identity matches (trap 10) -------


@pytest.mark.parametrize("record", ["wrong_start_time", "wrong_pgid", "matching"])
async def test_recovery_kills_a_recorded_group_only_if_it_is_still_ours(
    record: str, make_config: Callable[..., PodiumConfig]
) -> None:
    setup = Conductor(make_config())
    await setup.start()
    try:
        submitted = await setup.submit_job(
            spec={"name": "ghost", "sheets": [{"prompt": "true"}]}, start=False
        )
    finally:
        await setup.stop()
    job_id = submitted.job_id

    def sleeper() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["sleep", "30"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    # `stranger` is the recorded leader; `bystander` is another live group, which a wrong
    # pgid record points at (as if the recorded pid now led a different group).
    stranger = sleeper()
    bystander = sleeper()
    try:
        start_time = psutil.Process(stranger.pid).create_time()
        pgid = os.getpgid(stranger.pid)
        assert pgid == stranger.pid
        if record == "wrong_start_time":
            start_time -= 3600.0  # as if the pid had been reused since it was recorded
        elif record == "wrong_pgid":
            pgid = os.getpgid(bystander.pid)

        # Leave the store as a conductor that died mid-attempt would: the job and sheet
        # running, the attempt in flight with its recorded process group.
        store = await open_store(make_config())
        try:
            job = await store.get_job(job_id)
            assert job is not None
            (sheet,) = await store.get_sheets(job_id)
        finally:
            await store.close()
        now = utcnow()
        job.status, job.pause_reason, job.started_at, job.updated_at = (
            JobStatus.RUNNING,
            None,
            now,
            now,
        )
        sheet.status, sheet.attempts, sheet.started_at = SheetStatus.RUNNING, 1, now
        attempt = AttemptRow(
            job_id=job_id,
            sheet_num=1,
            attempt=1,
            started_at=now,
            pid=stranger.pid,
            pgid=pgid,
            pid_start_time=start_time,
        )
        await write_rows(make_config(), jobs=[job], sheets=[sheet], new_attempts=[attempt])

        conductor = Conductor(make_config())
        await conductor.start()
        try:
            if record == "matching":
                stranger.wait(timeout=5)
                assert stranger.returncode == -signal.SIGTERM
            else:
                await anyio.sleep(0.3)
                assert stranger.poll() is None, "recovery killed a group it could not prove"
            history, total = await conductor.get_execution_history(job_id)
            assert total == 1
            assert history[0].outcome is Outcome.INTERRUPTED
            assert history[0].error_category is ErrorCategory.INTERRUPTED
            detail = await conductor.get_job(job_id)
            assert detail.status is JobStatus.PAUSED
            assert detail.pause_reason is PauseReason.INTERRUPTED
            assert detail.sheets[0].status is SheetStatus.PENDING
        finally:
            await conductor.stop()
        if record != "matching":
            assert stranger.poll() is None  # stop() leaves it alone too
        assert bystander.poll() is None, "recovery killed an unrelated process group"
    finally:
        for proc in (stranger, bystander):
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


async def test_recovery_finds_an_unrecorded_group_by_its_attempt_mark(
    make_config: Callable[..., PodiumConfig], tmp_path: Path
) -> None:
    """A crash between spawn and recording the pgid leaves no record; the attempt's mark in
    the environment still identifies its processes (and a grandchild whose leader died)."""
    from podium.core.runner.runner import attempt_marker

    config = make_config()
    setup = Conductor(config)
    await setup.start()
    try:
        submitted = await setup.submit_job(
            spec={"name": "unrecorded", "sheets": [{"prompt": "true"}]}, start=False
        )
    finally:
        await setup.stop()
    job_id = submitted.job_id
    marker = attempt_marker(str(config.home), job_id, 1, 1)
    pid_file = tmp_path / "grandchild.pid"
    leader = subprocess.Popen(
        ["bash", "-c", f"sleep 60 & echo $! > {pid_file}; exit 0"],
        env={**os.environ, "PODIUM_ATTEMPT_OF": marker},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    leader.wait(timeout=5)  # the leader is gone; its grandchild lives on in the group
    poll(pid_file.exists, 5, "grandchild pid file")
    grandchild = int(pid_file.read_text())
    unrelated = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        store = await open_store(config)
        try:
            job = await store.get_job(job_id)
            assert job is not None
            (sheet,) = await store.get_sheets(job_id)
        finally:
            await store.close()
        now = utcnow()
        job.status, job.pause_reason, job.started_at = JobStatus.RUNNING, None, now
        sheet.status, sheet.attempts, sheet.started_at = SheetStatus.RUNNING, 1, now
        attempt = AttemptRow(job_id=job_id, sheet_num=1, attempt=1, started_at=now)
        await write_rows(config, jobs=[job], sheets=[sheet], new_attempts=[attempt])

        async with Conductor(make_config()) as conductor:
            assert live_group_members(leader.pid) == []
            assert not psutil.pid_exists(grandchild) or (
                psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
            )
            assert unrelated.poll() is None  # no mark, not ours: untouched
            history, _ = await conductor.get_execution_history(job_id)
            assert history[0].outcome is Outcome.INTERRUPTED
    finally:
        kill_group_quietly(leader.pid)
        unrelated.kill()
        unrelated.wait()


async def test_a_start_ends_what_attempts_taken_back_meanwhile_left_running(
    make_config: Callable[..., PodiumConfig], tmp_path: Path
) -> None:
    """An attempt another conductor took back while this one was dead is no longer in
    flight, so no record leads to its processes; they still carry this home's mark and are
    ended at the start. Marks of another home, and unmarked processes, are left alone."""
    from podium.core.runner.runner import attempt_marker

    config = make_config()
    other_home = tmp_path / "other-home"

    def marked(home: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["sleep", "60"],
            env={**os.environ, "PODIUM_ATTEMPT_OF": attempt_marker(str(home), "gone", 1, 1)},
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    orphan = marked(config.home)
    # Its home's name starts with this one's: the mark's separator tells them apart.
    neighbour = marked(Path(str(config.home) + "2"))
    stranger = marked(other_home)
    unmarked = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        async with Conductor(config):
            assert orphan.poll() is not None or psutil.Process(orphan.pid).status() == (
                psutil.STATUS_ZOMBIE
            )
            for untouched in (neighbour, stranger, unmarked):
                assert untouched.poll() is None
    finally:
        for proc in (orphan, neighbour, stranger, unmarked):
            kill_group_quietly(proc.pid)
            proc.wait(timeout=10)

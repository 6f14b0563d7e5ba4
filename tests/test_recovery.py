"""Crash and restart (SPEC §6, §9 traps 2, 3, 5, 6, 11), the jobs' record across them: real
conductor processes killed with SIGKILL, real SQLite in a temp home, real sheet process
groups; no mocks. What a start may touch on the host (the home's lock, leftover process
groups: trap 10) is in test_recovery_processes.py; the helpers here serve both."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from helpers import wait_for_job

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import ErrorCategory, JobStatus, Outcome, PauseReason, SheetStatus, utcnow
from podium.core.store.open import open_store

pytestmark = pytest.mark.anyio

CRASH_SCRIPT = Path(__file__).with_name("crash_conductor.py")
SHEETS = 5
JOB_ID = "crashy"


# ----- helpers ----------------------------------------------------------------------------------


def chain_spec(tmp_path: Path, sheets: int = SHEETS, name: str = "chain") -> dict[str, Any]:
    """`sheets` sequential sheets; sheet N appends `sheet N` to side.txt (outside the
    workspace), records its pid (= its process group) in pid-N, sleeps 30 s while hold-N
    exists, else 0.4 s, then writes done-N.txt, which its validation requires."""
    side = shlex.quote(str(tmp_path / "side.txt"))
    out = []
    for n in range(1, sheets + 1):
        pid_file = shlex.quote(str(tmp_path / f"pid-{n}"))
        hold = shlex.quote(str(tmp_path / f"hold-{n}"))
        prompt = "\n".join(
            [
                f"echo 'sheet {n}' >> {side}",
                f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}",
                f"if [ -e {hold} ]; then sleep 30; fi",
                "sleep 0.4",
                f"touch done-{n}.txt",
            ]
        )
        sheet: dict[str, Any] = {
            "name": f"s{n}",
            "prompt": prompt,
            "validations": [{"type": "file_exists", "path": f"done-{n}.txt"}],
        }
        if n > 1:
            sheet["depends_on"] = [n - 1]
        out.append(sheet)
    return {"name": name, "retry": {"max_retries": 0}, "sheets": out}


def side_counts(tmp_path: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    path = tmp_path / "side.txt"
    for line in path.read_text().splitlines() if path.exists() else []:
        num = int(line.split()[1])
        counts[num] = counts.get(num, 0) + 1
    return counts


def poll(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


async def apoll(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """`poll` for when a conductor runs in this event loop: sleeps without blocking it."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.02)


def live_group_members(pgid: int) -> list[int]:
    """Non-zombie processes in group `pgid` (PID 1 here does not reap orphans promptly, so a
    zombie counts as dead)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def kill_group_quietly(pgid: int) -> None:
    if pgid > 1 and pgid != os.getpgrp() and live_group_members(pgid):
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


@pytest.fixture(autouse=True)
def _kill_leftover_sheets(tmp_path: Path) -> Iterator[None]:
    """Whatever a test leaves behind, every sheet group that recorded itself in a pid-N file
    is killed at teardown."""
    yield
    for pid_file in tmp_path.glob("pid-*"):
        if pid_file.suffix != ".tmp":
            kill_group_quietly(int(pid_file.read_text()))


@contextmanager
def conductor_process(
    home: Path,
    tmp_path: Path,
    spec: dict[str, Any] | None,
    job_id: str = JOB_ID,
    modified: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A conductor in a child process; yields once it has started (and submitted `spec`, and
    with `modified`, modified the job with it once its first sheet ran), its config changed
    by `overrides`. Whatever happens,
    the child is killed and reaped (its sheets are left to the `_kill_leftover_sheets`
    fixture, since recovery is what the tests check)."""
    ready = tmp_path / f"ready-{time.monotonic_ns()}"
    stderr_path = tmp_path / "conductor-stderr.txt"
    spec_arg = "-" if spec is None else json.dumps(spec)
    extra = [] if modified is None else [json.dumps(modified)]
    env = {**os.environ, "CRASH_CONDUCTOR_OVERRIDES": json.dumps(overrides or {})}
    with open(stderr_path, "ab") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(CRASH_SCRIPT), str(home), spec_arg, job_id, str(ready), *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            env=env,
        )
    try:

        def started() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"conductor process exited {proc.returncode}: {stderr_path.read_text()}"
                )
            return ready.exists()

        poll(started, 20, "the conductor process to start")
        assert int(ready.read_text()) == proc.pid
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def crash_while_running(home: Path, tmp_path: Path, spec: dict[str, Any], held: int) -> int:
    """Run `spec` in a conductor process, SIGKILL it while sheet `held` runs; returns the
    held sheet's pid (= its pgid), whose group is checked to be still alive after the crash."""
    (tmp_path / f"hold-{held}").touch()
    pid_file = tmp_path / f"pid-{held}"
    with conductor_process(home, tmp_path, spec) as proc:
        poll(pid_file.exists, 30, f"sheet {held} to start")
        # The conductor records the group right after spawning it; give that write time to land.
        time.sleep(0.5)
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    sheet_pid = int(pid_file.read_text())
    # The kill -9 left the sheet behind, still running: recovery has something to clean up.
    assert live_group_members(sheet_pid), "the held sheet should outlive the killed conductor"
    (tmp_path / f"hold-{held}").unlink()  # re-runs of the held sheet finish quickly
    return sheet_pid


async def assert_recovered_paused(
    conductor: Conductor, job_id: str, completed_before: int, reason: PauseReason
) -> None:
    """The state right after a restart: paused, the in-flight sheet back to pending with one
    `interrupted` attempt, everything completed before the crash still completed."""
    interrupted = completed_before + 1
    detail = await conductor.get_job(job_id)
    assert detail.status is JobStatus.PAUSED
    assert detail.pause_reason is reason
    statuses = [s.status for s in detail.sheets]
    assert statuses == [SheetStatus.COMPLETED] * completed_before + [SheetStatus.PENDING] * (
        len(statuses) - completed_before
    )
    assert detail.completed_sheets == completed_before
    assert detail.sheets[interrupted - 1].attempts == 1
    history, total = await conductor.get_execution_history(job_id)
    assert total == interrupted
    assert [(h.sheet_num, h.attempt, h.outcome) for h in history] == [
        *((n, 1, Outcome.COMPLETED) for n in range(1, interrupted)),
        (interrupted, 1, Outcome.INTERRUPTED),
    ]
    last = history[-1]
    assert last.error_category is ErrorCategory.INTERRUPTED
    assert last.ended_at is not None and last.log_path


async def assert_finished_once(
    conductor: Conductor, job_id: str, tmp_path: Path, interrupted: int, sheets: int = SHEETS
) -> None:
    """Completed; each sheet ran to the end; only the interrupted sheet ran twice."""
    detail = await wait_for_job(conductor, job_id, timeout=30)
    assert detail.status is JobStatus.COMPLETED, detail
    assert [s.status for s in detail.sheets] == [SheetStatus.COMPLETED] * sheets
    workspace = Path(detail.workspace)
    assert all((workspace / f"done-{n}.txt").exists() for n in range(1, sheets + 1))
    expected = {n: 1 for n in range(1, sheets + 1)}
    expected[interrupted] = 2  # the killed attempt started it, the resumed one finished it
    assert side_counts(tmp_path) == expected
    history, total = await conductor.get_execution_history(job_id)
    assert total == sheets + 1
    assert [h.outcome for h in history].count(Outcome.INTERRUPTED) == 1
    assert [(h.attempt, h.outcome) for h in history if h.sheet_num == interrupted] == [
        (1, Outcome.INTERRUPTED),
        (2, Outcome.COMPLETED),
    ]


# ----- 1. kill -9 at several points, then resume ------------------------------------------------


@pytest.mark.parametrize("completed_before", [1, 2, 4])
async def test_kill9_then_resume_reruns_only_the_interrupted_sheet(
    completed_before: int,
    home: Path,
    tmp_path: Path,
    make_config: Callable[..., PodiumConfig],
) -> None:
    held = completed_before + 1
    sheet_pid = crash_while_running(home, tmp_path, chain_spec(tmp_path), held)
    # Before the restart: exactly the completed sheets and the in-flight one have run.
    assert side_counts(tmp_path) == {n: 1 for n in range(1, held + 1)}

    conductor = Conductor(make_config())
    await conductor.start()
    try:
        # Recovery killed the orphaned group of the in-flight attempt (leader + its `sleep`).
        assert live_group_members(sheet_pid) == []
        await assert_recovered_paused(conductor, JOB_ID, completed_before, PauseReason.INTERRUPTED)
        summary = await conductor.resume_job(JOB_ID)
        assert summary.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        await assert_finished_once(conductor, JOB_ID, tmp_path, held)
    finally:
        await conductor.stop()


# ----- 1b. the record a kill -9 leaves: the attempt ends when it was last known running ------


async def test_kill9_attempt_ends_at_its_last_lease_renewal_with_its_duration(
    home: Path, tmp_path: Path, make_config: Callable[..., PodiumConfig]
) -> None:
    """The interrupted attempt's end is its last lease renewal before the kill (not the
    restart that found it), its duration is filled from that, and the sheet says it was
    interrupted and how long it ran, in every view: sheet detail, history, the CLI."""
    from test_transports import podium_cli

    lease = 1.5  # renewed every 0.5 s
    (tmp_path / "hold-1").touch()
    with conductor_process(
        home, tmp_path, chain_spec(tmp_path, sheets=2), overrides={"lease_seconds": lease}
    ) as proc:
        store = await open_store(make_config())
        try:

            async def ran_a_while() -> bool:
                row = await store.get_attempt(JOB_ID, 1, 1)
                renewed = row.lease_renewed_at if row is not None else None
                # Renewed at least once more after the first renewal: it ran over a second.
                return renewed is not None and (renewed - row.started_at).total_seconds() >= 1

            deadline = time.monotonic() + 30
            while not await ran_a_while():
                assert time.monotonic() < deadline, "the attempt's lease was never renewed"
                await anyio.sleep(0.05)
            seen = await store.get_attempt(JOB_ID, 1, 1)
            assert seen is not None and seen.lease_renewed_at is not None
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            killed_at = utcnow()
            left = await store.get_attempt(JOB_ID, 1, 1)
        finally:
            await store.close()
    (tmp_path / "hold-1").unlink()
    assert left is not None and left.outcome is None and left.lease_renewed_at is not None
    last_renewal = left.lease_renewed_at
    # Between the renewal seen just before the kill and the kill: within one renewal period.
    assert seen.lease_renewed_at <= last_renewal <= killed_at

    conductor = Conductor(make_config())
    await conductor.start()
    try:
        await assert_recovered_paused(conductor, JOB_ID, 0, PauseReason.INTERRUPTED)
        history, _ = await conductor.get_execution_history(JOB_ID, sheet_num=1)
        [entry] = history
        assert entry.ended_at == last_renewal
        assert entry.duration_seconds is not None and entry.duration_seconds >= 1
        assert entry.duration_seconds == pytest.approx(
            (last_renewal - entry.started_at).total_seconds(), abs=1e-3
        )
        assert entry.error == "interrupted: the conductor stopped while it ran"
        sheet = (await conductor.get_job(JOB_ID)).sheets[0]
        assert (sheet.status, sheet.error_category) == (
            SheetStatus.PENDING,
            ErrorCategory.INTERRUPTED,
        )
        assert sheet.last_error == "interrupted: the conductor stopped while it ran"
        assert sheet.duration_seconds == entry.duration_seconds
    finally:
        await conductor.stop()
    # The CLI, reading the store with no conductor running, shows the same record.
    shown = podium_cli(home, "status", JOB_ID)
    assert shown.returncode == 0, shown.stderr
    [line] = [x for x in shown.stdout.splitlines() if "sheet 1 " in x]
    took = sheet.duration_seconds
    assert f"pending in {took:.1f}s" in line, line
    assert "interrupted: the conductor stopped while it ran" in line, line


# ----- 2. auto_resume -------------------------------------------------------------------------


async def test_kill9_with_auto_resume_continues_without_a_resume_call(
    home: Path, tmp_path: Path, make_config: Callable[..., PodiumConfig]
) -> None:
    sheet_pid = crash_while_running(home, tmp_path, chain_spec(tmp_path), held=3)

    conductor = Conductor(make_config(auto_resume=True))
    await conductor.start()
    try:
        assert live_group_members(sheet_pid) == []
        await assert_finished_once(conductor, JOB_ID, tmp_path, interrupted=3)
        detail = await conductor.get_job(JOB_ID)
        assert detail.pause_reason is None
    finally:
        await conductor.stop()


# ----- 3. graceful stop -----------------------------------------------------------------------


async def test_graceful_stop_pauses_with_shutdown_and_resume_completes(
    tmp_path: Path, make_config: Callable[..., PodiumConfig]
) -> None:
    spec = chain_spec(tmp_path, sheets=3)
    (tmp_path / "hold-2").touch()
    first = Conductor(make_config())
    await first.start()
    stopped = False
    try:
        submitted = await first.submit_job(spec=spec, job_id="graceful")
        await apoll((tmp_path / "pid-2").exists, 30, "sheet 2 to start")
        sheet_pid = int((tmp_path / "pid-2").read_text())
        assert live_group_members(sheet_pid)
        began = time.monotonic()
        await first.stop()
        stopped = True
        assert time.monotonic() - began < 1 + 2 + 2  # grace + settle, not the 30 s sleep
        assert live_group_members(sheet_pid) == []
    finally:
        if not stopped:
            await first.stop()
    (tmp_path / "hold-2").unlink()

    second = Conductor(make_config())
    await second.start()
    try:
        detail = await second.get_job(submitted.job_id)
        assert detail.pause_reason is PauseReason.SHUTDOWN
        await assert_recovered_paused(second, submitted.job_id, 1, PauseReason.SHUTDOWN)
        # Recorded as every interruption is: the sheet says why and how long its attempt ran
        # (the runner timed it, up to the end of its process).
        [entry] = (await second.get_execution_history(submitted.job_id, sheet_num=2))[0]
        assert entry.error == "interrupted: the conductor shut down"
        assert entry.ended_at is not None and entry.duration_seconds is not None
        assert entry.duration_seconds > 0
        sheet = detail.sheets[1]
        assert sheet.last_error == "interrupted: the conductor shut down"
        assert sheet.error_category is ErrorCategory.INTERRUPTED
        assert sheet.duration_seconds == entry.duration_seconds
        await second.resume_job(submitted.job_id)
        await assert_finished_once(second, submitted.job_id, tmp_path, interrupted=2, sheets=3)
    finally:
        await second.stop()


# ----- 4. failure propagation is persisted and stays terminal --------------------------------


async def test_failed_job_with_skipped_dependent_stays_failed_after_restart(
    tmp_path: Path, make_config: Callable[..., PodiumConfig]
) -> None:
    spec = {
        "name": "propagate",
        "on_failure": "continue",
        "retry": {"max_retries": 0},
        "sheets": [
            {"prompt": "exit 1"},
            {"prompt": "echo dependent > dependent.txt", "depends_on": [1]},
            {"prompt": "echo independent > independent.txt"},
        ],
    }
    expected = [SheetStatus.FAILED, SheetStatus.SKIPPED, SheetStatus.COMPLETED]
    first = Conductor(make_config())
    await first.start()
    try:
        submitted = await first.submit_job(spec=spec)
        detail = await wait_for_job(first, submitted.job_id)
        assert detail.status is JobStatus.FAILED
        assert [s.status for s in detail.sheets] == expected
        assert detail.sheets[1].error_category is ErrorCategory.DEPENDENCY_FAILED
        before = await first.store.get_job(submitted.job_id)
        sheets_before = await first.store.get_sheets(submitted.job_id)
    finally:
        await first.stop()
    assert before is not None

    second = Conductor(make_config(auto_resume=True))
    await second.start()
    try:
        for _ in range(3):  # reads, across a few dispatch passes, change nothing
            detail = await second.get_job(submitted.job_id)
            assert detail.status is JobStatus.FAILED
            assert detail.pause_reason is None
            assert [s.status for s in detail.sheets] == expected
            assert all(s.waiting_reason is None for s in detail.sheets)
            await second.checkpoint(submitted.job_id)
            await second.list_jobs()
            await second.status()
            second.manager.wake()
            await anyio.sleep(0.2)
        after = await second.store.get_job(submitted.job_id)
        assert after is not None
        assert after.updated_at == before.updated_at
        assert after.completed_at == before.completed_at
        assert await second.store.get_sheets(submitted.job_id) == sheets_before
        assert not (Path(submitted.workspace) / "dependent.txt").exists()
        _, total = await second.get_execution_history(submitted.job_id)
        assert total == 2  # sheet 1 and sheet 3; nothing re-ran after the restart
    finally:
        await second.stop()


# ----- 5. control calls on a job recovered after a crash (trap 11) ----------------------------


async def test_recovered_job_can_be_read_paused_and_cancelled(
    home: Path, tmp_path: Path, make_config: Callable[..., PodiumConfig]
) -> None:
    crash_while_running(home, tmp_path, chain_spec(tmp_path), held=2)

    conductor = Conductor(make_config())
    await conductor.start()
    try:
        row_before = await conductor.store.get_job(JOB_ID)
        sheets_before = await conductor.store.get_sheets(JOB_ID)
        detail = await conductor.get_job(JOB_ID)
        assert detail.status is JobStatus.PAUSED
        assert detail.pause_reason is PauseReason.INTERRUPTED
        jobs, _ = await conductor.list_jobs(statuses=[JobStatus.PAUSED])
        assert [j.job_id for j in jobs] == [JOB_ID]
        await conductor.checkpoint(JOB_ID)
        # pause on a paused job is a no-op that keeps the reason.
        paused = await conductor.pause_job(JOB_ID)
        assert paused.status is JobStatus.PAUSED
        assert paused.pause_reason is PauseReason.INTERRUPTED
        # None of those reads (nor the no-op) changed anything.
        assert await conductor.store.get_job(JOB_ID) == row_before
        assert await conductor.store.get_sheets(JOB_ID) == sheets_before

        cancelled = await conductor.cancel_job(JOB_ID)
        assert cancelled.status is JobStatus.CANCELLED
        detail = await conductor.get_job(JOB_ID)
        assert detail.status is JobStatus.CANCELLED
        assert [s.status for s in detail.sheets] == [SheetStatus.COMPLETED] + [
            SheetStatus.CANCELLED
        ] * (SHEETS - 1)
        again = await conductor.cancel_job(JOB_ID)  # idempotent
        assert again.status is JobStatus.CANCELLED
        # Nothing ran after the cancel.
        await anyio.sleep(0.3)
        assert side_counts(tmp_path) == {1: 1, 2: 1}
    finally:
        await conductor.stop()

"""What an interrupted attempt leaves in the record, by every route that cuts one off (a
graceful shutdown, a restart after a crash, a lease taken back): the sheet shows that
attempt's own output, never an earlier attempt's, and a shutdown records every attempt it
ends, even one that ignored SIGTERM until the kill grace ran out."""

from __future__ import annotations

import os
import shlex
import signal
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from helpers import seed_second_attempt_in_flight, wait_until
from structlog.testing import capture_logs
from test_recovery import apoll, live_group_members

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import ErrorCategory, JobStatus, Outcome, PauseReason, SheetStatus
from podium.core.runner.runner import AttemptPlan, AttemptResult, run_attempt
from podium.core.store.open import open_store
from podium.core.store.rows import JobRow

pytestmark = pytest.mark.anyio

EARLIER = "printed by the attempt before"


def second_attempt_spec(tmp_path: Path, prints: bool, ignores_term: bool = False) -> dict[str, Any]:
    """One sheet: its first attempt prints EARLIER and fails; its second prints
    `own output of attempt 2` (or nothing), records its pid and sleeps (ignoring SIGTERM
    with `ignores_term`)."""
    pid_file = shlex.quote(str(tmp_path / "pid-1"))
    trap = "trap '' TERM; " if ignores_term else ""
    said = 'echo "own output of attempt $PODIUM_ATTEMPT"; ' if prints else ""
    prompt = (
        f'if [ "$PODIUM_ATTEMPT" = 1 ]; then echo "{EARLIER}"; exit 1; fi; '
        f"{trap}{said}echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}; sleep 1000"
    )
    return {
        "name": "twice",
        "retry": {"max_retries": 1, "base_delay_seconds": 0, "jitter": False},
        "sheets": [{"name": "s1", "prompt": prompt}],
    }


@pytest.mark.parametrize("prints", [True, False], ids=["printed", "printed-nothing"])
async def test_a_graceful_shutdown_shows_the_interrupted_attempts_own_output(
    tmp_path: Path, make_config: Callable[..., PodiumConfig], prints: bool
) -> None:
    conductor = Conductor(make_config())
    await conductor.start()
    try:
        await conductor.submit_job(spec=second_attempt_spec(tmp_path, prints), job_id="twice")
        await apoll((tmp_path / "pid-1").exists, 30, "the second attempt to start")
    finally:
        await conductor.stop()
    async with Conductor(make_config()) as second:
        detail = await second.get_job("twice")
        [entry] = [h for h in (await second.get_execution_history("twice"))[0] if h.attempt == 2]
    [sheet] = detail.sheets
    assert entry.error == "interrupted: the conductor shut down"
    assert sheet.attempts == 2
    if prints:
        assert sheet.output_tail is not None and "own output of attempt 2" in sheet.output_tail
    else:
        assert sheet.output_tail is None
    assert EARLIER not in (sheet.output_tail or "")


def attempt_processes(job_id: str) -> list[int]:
    """Live processes of any attempt of `job_id` (they carry its id in their environment)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("PODIUM_JOB_ID") == job_id and proc.status() != "zombie":
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


@pytest.mark.parametrize(
    ("escapes", "runner_stuck"),
    [(False, False), (True, False), (True, True)],
    ids=["in-its-group", "and-a-setsid-child", "runner-past-its-bound"],
)
async def test_a_graceful_stop_records_every_attempt_it_ends_even_past_the_kill_grace(
    tmp_path: Path,
    make_config: Callable[..., PodiumConfig],
    monkeypatch: pytest.MonkeyPatch,
    escapes: bool,
    runner_stuck: bool,
) -> None:
    """A sheet that ignores SIGTERM is SIGKILLed after kill_grace_seconds, and so is a child
    of it that left its group, after its own grace; the shutdown records the attempt as it
    ended (`the conductor shut down`), leaves nothing running and nothing in flight for the
    next start to find (`the conductor stopped while it ran`). A runner that has still not
    ended it when its kill sequence should be over (stuck) is overtaken: the stop kills what
    is left and records the attempt itself."""
    if runner_stuck:
        monkeypatch.setattr("podium.core.engine.recovery.stop_seconds", lambda grace: 0.0)
    # Its own id: the processes are found by it, machine-wide, and its other cases (or other
    # runs of it) may be running beside it.
    job_id = f"stubborn-{os.getpid()}-{int(escapes)}{int(runner_stuck)}"
    # A log cap below what the sheet prints: the record says its log was cut, whoever
    # makes it (the runner's result, or the stop that overtook a stuck runner).
    config = make_config(kill_grace_seconds=1.5, log_max_bytes=1024)
    conductor = Conductor(config)
    await conductor.start()
    try:
        spec = second_attempt_spec(tmp_path, prints=True, ignores_term=True)
        spec["retry"] = {"max_retries": 0}
        spec["sheets"][0]["prompt"] = spec["sheets"][0]["prompt"].replace(
            'if [ "$PODIUM_ATTEMPT" = 1 ]', 'if [ "$PODIUM_ATTEMPT" = 0 ]'
        )
        spec["sheets"][0]["prompt"] = (
            "head -c 2048 /dev/zero | tr '\\0' x; echo; " + spec["sheets"][0]["prompt"]
        )
        if escapes:
            # A child that left the group and ignores SIGTERM too: ended after its own grace.
            spec["sheets"][0]["prompt"] = spec["sheets"][0]["prompt"].replace(
                "sleep 1000", "setsid bash -c \"trap '' TERM; sleep 1000\" & sleep 1000"
            )
        await conductor.submit_job(spec=spec, job_id=job_id)
        await apoll((tmp_path / "pid-1").exists, 30, "the sheet to start")
        sheet_pid = int((tmp_path / "pid-1").read_text())
    finally:
        with capture_logs() as logs:
            await conductor.stop()
    # Whether the runner's late result reached the writer before it closed or not, nothing
    # is said of it as a lost attempt: the stop recorded it.
    assert not [e for e in logs if e["log_level"] == "warning" and "result" in e["event"]], logs
    said = " ".join(f"{e['event']} {e.get('error', '')}" for e in logs)
    assert "another conductor" not in said and "reclaimed" not in said
    try:
        assert live_group_members(sheet_pid) == []
        assert attempt_processes(job_id) == []
    finally:
        for pid in attempt_processes(job_id):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    # Read before any conductor starts again: the stop itself left the record.
    store = await open_store(config)
    try:
        in_flight = await store.in_flight_attempts()
        entry = await store.get_attempt(job_id, 1, 1)
        sheet = await store.get_sheet(job_id, 1)
        job = await store.get_job(job_id)
    finally:
        await store.close()
    assert in_flight == []
    assert entry is not None and sheet is not None and job is not None
    assert entry.outcome is Outcome.INTERRUPTED
    assert entry.error == "interrupted: the conductor shut down"
    assert entry.log_truncated
    assert sheet.status is SheetStatus.PENDING
    assert sheet.last_error == "interrupted: the conductor shut down"
    assert (job.status, job.pause_reason) == (JobStatus.PAUSED, PauseReason.SHUTDOWN)


async def _in_flight_with_an_earlier_output(
    config: PodiumConfig, tmp_path: Path, owner: str, log_text: str | None
) -> None:
    """A job paused by a person whose sheet 1 has attempt 2 in flight, owned by `owner`
    (its lease already lapsed); the sheet still holds attempt 1's output, and attempt 2's
    log holds `log_text` (None: no log file at all)."""

    def job(started: datetime, now: datetime) -> JobRow:
        return JobRow(
            "cut", "cut", JobStatus.PAUSED, "/tmp", "fp", 1, started, now,
            pause_reason=PauseReason.USER, started_at=started,
        )  # fmt: skip

    await seed_second_attempt_in_flight(
        config, tmp_path, job, owner=owner, lease_left=-5.0, log_text=log_text,
        earlier_output=EARLIER,
    )  # fmt: skip


@pytest.mark.parametrize("route", ["restart", "lease-reclaim"])
@pytest.mark.parametrize(
    "log_text", ["noise\n" * 1000 + "own output of attempt 2\n", "", None],
    ids=["printed", "printed-nothing", "no-log"],
)  # fmt: skip
async def test_a_recovered_attempt_shows_its_own_log_tail_not_the_earlier_output(
    tmp_path: Path, make_config: Callable[..., PodiumConfig], route: str, log_text: str | None
) -> None:
    config = make_config()
    owner = config.conductor_id if route == "restart" else "gone-host"
    await _in_flight_with_an_earlier_output(config, tmp_path, owner, log_text)
    async with Conductor(config) as conductor:

        async def recorded() -> bool:
            rows, _ = await conductor.get_execution_history("cut", sheet_num=1)
            return rows[0].outcome is Outcome.INTERRUPTED

        await wait_until(recorded, timeout=15)
        detail = await conductor.get_job("cut")
    [sheet] = detail.sheets
    assert (sheet.status, sheet.error_category) == (SheetStatus.PENDING, ErrorCategory.INTERRUPTED)
    if log_text:
        assert sheet.output_tail is not None
        assert sheet.output_tail.endswith("own output of attempt 2\n")
        assert len(sheet.output_tail.encode()) <= 2048
    else:
        assert sheet.output_tail is None


@pytest.mark.parametrize("ended", [False, True], ids=["job-paused", "cancel-under-way"])
async def test_a_late_result_of_an_attempt_the_stop_recorded_is_dropped_saying_so(
    tmp_path: Path,
    make_config: Callable[..., PodiumConfig],
    monkeypatch: pytest.MonkeyPatch,
    ended: bool,
) -> None:
    """A stop whose runner overran the kill sequence records the attempt itself; the
    runner's late result is then dropped, logged at info as the stop's own record, never as
    an attempt another conductor took back. With a cancel under way the sheet ends
    cancelled, showing that attempt's own output. The runner is held past the stop (its
    result comes only once the stop has recorded the attempt), and the stop is the engine's
    (the conductor's stop but for closing the writer), so the late result reaches the
    writer every time."""
    monkeypatch.setattr("podium.core.engine.recovery.stop_seconds", lambda grace: 0.0)
    released = anyio.Event()

    async def overrunning(plan: AttemptPlan, *args: Any, **kwargs: Any) -> AttemptResult:
        result = await run_attempt(plan, *args, **kwargs)
        if plan.attempt == 2:
            await released.wait()
        return result

    monkeypatch.setattr("podium.core.engine.dispatch.run_attempt", overrunning)
    conductor = Conductor(make_config(kill_grace_seconds=1.5))
    await conductor.start()
    try:
        spec = second_attempt_spec(tmp_path, prints=True, ignores_term=True)
        await conductor.submit_job(spec=spec, job_id="late")
        await apoll((tmp_path / "pid-1").exists, 30, "the second attempt to start")
        [entry] = conductor.engine.state.running.values()
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                if ended:
                    # It waits for the sheet to end, which the stop records meanwhile.
                    tg.start_soon(conductor.cancel_job, "late")

                    async def cancelled() -> bool:
                        job = await conductor.get_job("late")
                        return job.status is JobStatus.CANCELLED

                    await wait_until(cancelled)
                await conductor.engine.shutdown()
                released.set()
                with anyio.fail_after(15):
                    await entry.done.wait()
        detail = await conductor.get_job("late")
        history, _ = await conductor.get_execution_history("late", sheet_num=1)
    finally:
        await conductor.stop()
    [dropped] = [e for e in logs if str(e["event"]).startswith("late attempt result dropped")]
    assert dropped["log_level"] == "info"
    assert (dropped["job_id"], dropped["sheet"], dropped["attempt"]) == ("late", 1, 2)
    assert "recorded interrupted by this conductor's stop" in dropped["error"]
    said = " ".join(f"{e['event']} {e.get('error', '')}" for e in logs)
    assert "another conductor" not in said and "reclaimed" not in said
    assert not [e for e in logs if e["log_level"] == "warning" and "result" in e["event"]]
    [sheet] = detail.sheets
    assert history[1].outcome is Outcome.INTERRUPTED
    assert history[1].error == "interrupted: the conductor shut down"
    if ended:
        assert (sheet.status, sheet.last_error) == (SheetStatus.CANCELLED, "the job had ended")
    else:
        assert sheet.status is SheetStatus.PENDING
    assert sheet.attempts == 2
    assert sheet.output_tail is not None and "own output of attempt 2" in sheet.output_tail
    assert EARLIER not in sheet.output_tail
    assert sheet.duration_seconds == history[1].duration_seconds
    assert entry.recorded_by_stop

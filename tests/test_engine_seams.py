"""The seams later work builds on: only the store layer names SQLite; recovery takes back
only attempts that are its own or whose lease ran out; an idle conductor never wakes up."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from helpers import wait_until, write_rows

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import (
    ErrorCategory,
    JobStatus,
    Outcome,
    PauseReason,
    SheetStatus,
    utcnow,
)
from podium.core.store.base import NewJob
from podium.core.store.rows import AttemptRow, JobRow, SheetRow
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]


def test_nothing_above_the_store_layer_names_sqlite() -> None:
    found = subprocess.run(
        ["grep", "-rEn", "SQLiteStore|aiosqlite|sqlite3", "core", "server", "--include=*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    above = [line for line in found if not line.startswith("core/store/")]
    assert above == []


def test_the_engine_reads_the_typed_spec_only() -> None:
    """No `job.spec.get(...)` with private defaults: the engine has the typed spec."""
    found = subprocess.run(
        [
            "grep",
            "-rEn",
            r"spec\.get\(|\.spec\[",
            "core/engine",
            "core/conductor.py",
            "core/intake.py",
            "core/conductor_status.py",
            "core/change_wait.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    assert found == ""


async def in_flight_job(config: PodiumConfig, owners: dict[int, tuple[str, float]]) -> None:
    """A running job whose sheets each have an attempt in flight, owned by `owners[n]` =
    (conductor_id, seconds until its lease runs out; negative: already expired)."""
    async with Conductor(config):
        pass  # creates the store
    # The leases count from here, not from before the store was created: under load that
    # start and stop took seconds of a 4 s lease, which then ran out before the test's own
    # conductor had started.
    now = utcnow()
    job = JobRow("shared", "shared", JobStatus.RUNNING, "/tmp", "fp", 0, now, now, started_at=now)
    sheets, attempts = [], []
    for num, (owner, lease) in owners.items():
        sheets.append(
            SheetRow("shared", num, f"s{num}", SheetStatus.RUNNING, "shell", now, attempts=1)
        )
        attempts.append(
            AttemptRow(
                "shared",
                num,
                1,
                now,
                conductor_id=owner,
                lease_expires_at=now + timedelta(seconds=lease),
            )
        )
    spec = {"name": "shared", "sheets": [{"name": f"s{n}", "prompt": "true"} for n in owners]}
    await write_rows(config, new_jobs=[NewJob(job, spec, sheets)], new_attempts=attempts)


async def test_recovery_takes_back_only_attempts_that_are_ours_or_whose_lease_ran_out(
    make_config: Callable[..., PodiumConfig],
) -> None:
    config = make_config()
    mine = config.conductor_id
    await in_flight_job(
        config, {1: (mine, 60), 2: ("elsewhere", -5), 3: ("elsewhere", 60), 4: ("late", 4)}
    )
    async with Conductor(config) as conductor:

        async def first_attempt(sheet_num: int) -> Outcome | None:
            rows, _ = await conductor.get_execution_history("shared", sheet_num=sheet_num)
            return rows[0].outcome

        # Ours (a previous run of this conductor) and the expired one are interrupted (and
        # their sheets, back to pending in a running job, are run again here)...
        assert await first_attempt(1) is Outcome.INTERRUPTED
        assert await first_attempt(2) is Outcome.INTERRUPTED
        # ...the ones another conductor still holds a lease on are left to it.
        assert await first_attempt(3) is None and await first_attempt(4) is None
        detail = await conductor.get_job("shared")
        assert [s.status for s in detail.sheets[2:]] == [SheetStatus.RUNNING] * 2
        # A job another live conductor runs keeps its status.
        assert detail.status is JobStatus.RUNNING

        # The lease of sheet 4's owner runs out while this conductor runs: taken back then.
        async def reclaimed() -> bool:
            return await first_attempt(4) is Outcome.INTERRUPTED

        await wait_until(reclaimed, timeout=10)
        rows, _ = await conductor.get_execution_history("shared", sheet_num=4)
        assert rows[0].error_category is ErrorCategory.INTERRUPTED
        assert await first_attempt(3) is None


@pytest.mark.parametrize(
    ("expires_in", "renewed_ago"),
    [(-5.0, 5.0), (3.0, 5.0), (-5.0, None)],
    ids=["lapsed-before-start", "lapses-while-running", "never-renewed"],
)
async def test_a_reclaimed_attempt_ends_at_its_last_renewal_and_its_sheet_says_why(
    make_config: Callable[..., PodiumConfig], expires_in: float, renewed_ago: float | None
) -> None:
    """Taken back at start-up or while running, a dead owner's attempt ends when its owner
    last renewed its lease (its start when it never did), with that duration; its sheet is
    back to `pending` saying why and how long it ran. The job is paused by a person, so
    nothing runs the sheet again and the record stays to be read."""
    config = make_config()
    async with Conductor(config):
        pass  # creates the store
    now = utcnow()
    started = now - timedelta(seconds=20)
    renewed = None if renewed_ago is None else now - timedelta(seconds=renewed_ago)
    job = JobRow(
        "held", "held", JobStatus.PAUSED, "/tmp", "fp", 1, started, now,
        pause_reason=PauseReason.USER, started_at=started,
    )  # fmt: skip
    sheet = SheetRow("held", 1, "s1", SheetStatus.RUNNING, "shell", now, attempts=1)
    sheet.started_at = started
    attempt = AttemptRow(
        "held", 1, 1, started, conductor_id="gone",
        lease_expires_at=now + timedelta(seconds=expires_in), lease_renewed_at=renewed,
    )  # fmt: skip
    spec = {"name": "held", "sheets": [{"name": "s1", "prompt": "true"}]}
    await write_rows(config, new_jobs=[NewJob(job, spec, [sheet])], new_attempts=[attempt])
    async with Conductor(config) as conductor:

        async def reclaimed() -> bool:
            rows, _ = await conductor.get_execution_history("held", sheet_num=1)
            return rows[0].outcome is Outcome.INTERRUPTED

        await wait_until(reclaimed, timeout=15)
        [entry], _ = await conductor.get_execution_history("held", sheet_num=1)
        detail = await conductor.get_job("held")
    expected_end = renewed or started
    expected_duration = (expected_end - started).total_seconds()
    assert entry.ended_at == expected_end
    assert entry.duration_seconds == pytest.approx(expected_duration, abs=1e-3)
    assert entry.error == "interrupted: its conductor's lease ran out"
    assert entry.error_category is ErrorCategory.INTERRUPTED
    [shown] = detail.sheets
    assert (shown.status, shown.error_category) == (SheetStatus.PENDING, ErrorCategory.INTERRUPTED)
    assert shown.last_error == "interrupted: its conductor's lease ran out"
    assert shown.duration_seconds == entry.duration_seconds
    assert (detail.status, detail.pause_reason) == (JobStatus.PAUSED, PauseReason.USER)


async def test_an_idle_conductor_never_wakes_up(make_config: Callable[..., PodiumConfig]) -> None:
    """Nothing on the event loop runs on a timer while nothing happens: no dispatch re-check,
    no notifier tick, no process-group poll, no resource sampling, no lease renewal."""
    # Work just done may leave one-off timers (the resource sample after sheets ran, the
    # notifier's end of a quiet period): a short sample interval lets them pass first.
    async with Conductor(make_config(monitor_interval_seconds=0.1)) as conductor:
        server = PodiumServer(conductor)
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.notifier.run)
            job = await conductor.submit_job(spec={"name": "once", "sheets": [{"prompt": "true"}]})
            await wait_until(lambda: _finished(conductor, job.job_id), timeout=10)
            await conductor.engine.hooks_settled()
            await anyio.sleep(1.5)  # let those pass
            loop = asyncio.get_running_loop()
            selector = loop._selector  # type: ignore[attr-defined]
            real_select = selector.select
            wakeups = 0

            def counting_select(timeout: float | None = None) -> list[object]:
                nonlocal wakeups
                wakeups += 1
                return list(real_select(timeout))

            selector.select = counting_select
            try:
                await anyio.sleep(2.0)
            finally:
                selector.select = real_select
            upcoming = [
                h.when() - loop.time()
                for h in loop._scheduled  # type: ignore[attr-defined]
                if not h.cancelled()
            ]
            tg.cancel_scope.cancel()
    # The test's own sleep is the only reason to wake (a loop turn or two around it).
    assert wakeups <= 3, wakeups
    soon = [t for t in upcoming if t < 60]
    if conductor.store.shared:
        # On a shared store the heartbeat is the one timer: the other conductors must hear
        # from this one every third of a lease (none of it came due in the 2 s above).
        period = conductor.config.lease_seconds / 3
        assert len(soon) == 1 and 0 < soon[0] <= period, soon
    else:
        assert soon == [], upcoming


async def _finished(conductor: Conductor, job_id: str) -> bool:
    return (await conductor.get_job(job_id)).status.is_terminal

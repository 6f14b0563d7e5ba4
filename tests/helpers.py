"""Test helpers shared by the engine tests."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.errors import SpecError
from podium.core.models import JobDetail, SheetStatus, utcnow
from podium.core.pressure import PressureLevel, ResourceSample
from podium.core.store.base import NewJob, Store, WriteBatch
from podium.core.store.open import open_store
from podium.core.store.rows import AttemptRow, JobRow, SheetRow


async def wait_for_job(
    conductor: Conductor, job_id: str, timeout: float = 30, statuses: tuple[str, ...] = ()
) -> JobDetail:
    """Wait until the job is terminal (or in one of `statuses`), driven by change events."""
    wanted = set(statuses)
    with anyio.fail_after(timeout):
        async with conductor.events.subscribe() as events:
            while True:
                detail = await conductor.get_job(job_id, sheet_limit=1000)
                if detail.status.value in wanted or (not wanted and detail.status.is_terminal):
                    return detail
                with anyio.move_on_after(0.5):
                    async for event in events:
                        if event.job_id == job_id:
                            break


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 10, interval: float = 0.05
) -> None:
    with anyio.fail_after(timeout):
        while not await predicate():
            await anyio.sleep(interval)


async def commit_rows(store: Store, **rows: Any) -> None:
    """Write rows straight to the store, as a conductor that died left them (tests only:
    the engine's writer is the one writer in a running conductor)."""
    assert await store.commit([WriteBatch(**rows)]) == [None]


async def write_rows(config: PodiumConfig, **rows: Any) -> None:
    """`commit_rows` on the home's store while no conductor runs."""
    store = await open_store(config)
    try:
        await commit_rows(store, **rows)
    finally:
        await store.close()


async def seed_second_attempt_in_flight(
    config: PodiumConfig,
    tmp_path: Path,
    job: Callable[[datetime, datetime], JobRow],
    *,
    owner: str,
    lease_left: float,
    log_text: str | None,
    earlier_output: str,
    earlier_duration: float | None = None,
) -> None:
    """The rows a conductor that died mid-attempt leaves: `job(started, now)`'s one-sheet
    job whose sheet 1 has attempt 2 in flight, owned by `owner` (its lease runs out
    `lease_left` seconds from now), while the sheet row still holds attempt 1's output
    (and duration); attempt 2's log holds `log_text` (None: no log file at all)."""
    async with Conductor(config):
        pass  # creates the store
    now = utcnow()
    started = now - timedelta(seconds=10)
    log = tmp_path / "attempt-2.log"
    if log_text is not None:
        log.write_text(log_text)
    row = job(started, now)
    sheet = SheetRow(row.job_id, 1, "s1", SheetStatus.RUNNING, "shell", now, attempts=2)
    sheet.started_at = started
    sheet.output_tail = earlier_output
    sheet.duration_seconds = earlier_duration
    sheet.log_path = str(log)
    attempt = AttemptRow(
        row.job_id, 1, 2, started, conductor_id=owner, log_path=str(log),
        lease_expires_at=now + timedelta(seconds=lease_left), lease_renewed_at=started,
    )  # fmt: skip
    spec = {"name": row.name, "sheets": [{"name": "s1", "prompt": "true"}]}
    await write_rows(config, new_jobs=[NewJob(row, spec, [sheet])], new_attempts=[attempt])


async def ended(proc: Process, within: float = 15) -> None:
    """Let a process exit by itself (its stdin already closed), killing it only after
    `within` seconds; always reaped."""
    with anyio.move_on_after(within):
        await proc.wait()
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


def press(conductor: Conductor, level: PressureLevel) -> None:
    """Make the conductor's resource monitor see `level` (memory, simulated) from now on."""

    def prober(max_memory_mb: float, max_processes: int) -> ResourceSample:
        return ResourceSample(
            100.0, 1, 0, level, f"memory: simulated ({level.value})", time.monotonic()
        )

    assert conductor.monitor is not None
    conductor.monitor._prober = prober
    conductor._on_sample(conductor.monitor.sample())


async def assert_submit_refused(
    conductor: Conductor, spec: dict[str, Any], path: str, says: str
) -> None:
    """Submitting `spec` is refused with one error, at `path`, saying `says`; nothing is
    stored."""
    with pytest.raises(SpecError) as caught:
        await conductor.submit_job(spec=spec)
    assert [e.path for e in caught.value.errors] == [path], caught.value
    assert says in caught.value.errors[0].message
    assert (await conductor.list_jobs())[0] == []

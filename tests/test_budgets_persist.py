"""Issue 10, item 9: retry and rate-limit budgets survive restarts, graceful or not, so a crash
loop cannot reset `max_retries` or `max_rate_limit_retries`, and a retry's backoff is not
cut short by a restart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for_job, wait_until

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import ErrorCategory, JobStatus, SheetStatus, WaitingReason
from podium.core.store.open import open_store

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

# The backoff (1 s, then 2 s) outlives the restart too: short enough for the retry after it
# to come within the test, long enough for the stop to land before it.
FLAKY = {
    "name": "flaky",
    "retry": {"max_retries": 3, "base_delay_seconds": 1, "jitter": False},
    "sheets": [{"prompt": "exit 1"}],
}


async def _used(conductor: Conductor, job_id: str) -> int:
    row = await conductor.store.get_sheet(job_id, 1)
    assert row is not None
    return row.retries_used


@pytest.mark.parametrize("how", ["graceful stop then resume", "auto_resume"])
async def test_retries_used_survive_a_restart(
    make_config: Callable[..., PodiumConfig], how: str
) -> None:
    config = make_config(auto_resume=how == "auto_resume")
    first = Conductor(config)
    await first.start()
    try:
        job = await first.submit_job(spec=FLAKY)

        async def one_retry_used() -> bool:
            return await _used(first, job.job_id) == 1

        await wait_until(one_retry_used)
    finally:
        await first.stop()
    second = Conductor(config)
    await second.start()
    try:
        assert await _used(second, job.job_id) == 1, "the restart gave a fresh retry budget"
        if how != "auto_resume":
            await second.resume_job(job.job_id)
        # No equality check here: the resumed sheet may already have failed again.

        async def counted_on() -> bool:
            used = await _used(second, job.job_id)
            assert used >= 1, "the restart gave the sheet a fresh retry budget"
            return used == 2

        # The next failure counts on from the budget used before the restart.
        await wait_until(counted_on)
        detail: Any = await second.get_job(job.job_id)
        assert detail.sheets[0].attempts == 2
    finally:
        await second.stop()


# ----- the rate-limit half: hits counted on across restarts --------------------------------

LIMITED_PROFILE = """
name: limited
description: a CLI that is always rate limited (bash, for the test)
written_for: "GNU bash 5"
executable: bash
args: ["-c", "{prompt}"]
prompt_via: argv
check: {version_args: ["--version"]}
patterns:
  streams: [stderr]
  rate_limit:
    - regex: "rate limit, retry after (?P<secs>[0-9]+) seconds"
      retry_after_group: secs
"""
ALWAYS_LIMITED = {
    "name": "limited",
    "instrument": "limited",
    "retry": {"max_retries": 5},
    "sheets": [{"prompt": "echo 'rate limit, retry after 30 seconds' >&2; exit 1"}],
}


async def _rate_limited_attempts(conductor: Conductor, job_id: str) -> int:
    history, _ = await conductor.get_execution_history(job_id)
    return sum(1 for h in history if h.outcome is not None and h.outcome.value == "rate_limited")


@pytest.mark.parametrize("how", ["graceful stop then resume", "auto_resume"])
async def test_rate_limit_hits_survive_a_restart(
    make_config: Callable[..., PodiumConfig], home: Path, how: str
) -> None:
    """`max_rate_limit_retries: 2` allows three rate-limited attempts in all, however many
    restarts come between them (a wait cap of 0.3 s keeps the test quick)."""
    (home / "instruments").mkdir(exist_ok=True)
    (home / "instruments" / "limited.yaml").write_text(LIMITED_PROFILE)
    config = make_config(
        auto_resume=how == "auto_resume",
        max_rate_limit_retries=2,
        max_rate_limit_wait_seconds=0.3,
    )
    first = Conductor(config)
    await first.start()
    try:
        job = await first.submit_job(spec=ALWAYS_LIMITED)

        async def hit_once() -> bool:
            row = await first.store.get_sheet(job.job_id, 1)
            return row is not None and row.rate_limit_hits >= 1

        await wait_until(hit_once)
    finally:
        await first.stop()
    before = await _rate_limited_attempts_in(config, job.job_id)
    assert before >= 1
    second = Conductor(config)
    await second.start()
    try:
        row = await second.store.get_sheet(job.job_id, 1)
        assert row is not None and row.rate_limit_hits == before, "recovery reset the hits"
        if how != "auto_resume":
            await second.resume_job(job.job_id)
        done = await wait_for_job(second, job.job_id)
        assert done.status is JobStatus.FAILED
        assert done.sheets[0].error_category is ErrorCategory.RATE_LIMITED
        assert await _rate_limited_attempts(second, job.job_id) == 3
    finally:
        await second.stop()


async def _rate_limited_attempts_in(config: PodiumConfig, job_id: str) -> int:
    store = await open_store(config)
    try:
        row = await store.get_sheet(job_id, 1)
        assert row is not None
        return row.rate_limit_hits
    finally:
        await store.close()


# ----- a retry's backoff is a moment in the store --------------------------------------------

BACKING_OFF = {
    "name": "backoff",
    "retry": {"max_retries": 1, "base_delay_seconds": 1.5, "jitter": False},
    "sheets": [{"prompt": "test -e again || { touch again; exit 1; }"}],
}


@pytest.mark.parametrize("auto_resume", [True, False])
async def test_a_backoff_wait_outlives_a_graceful_restart(
    make_config: Callable[..., PodiumConfig], auto_resume: bool
) -> None:
    config = make_config(auto_resume=auto_resume)
    first = Conductor(config)
    await first.start()
    try:
        job = await first.submit_job(spec=BACKING_OFF)

        async def backing_off() -> bool:
            return (await first.get_job(job.job_id)).sheets[0].status is SheetStatus.WAITING

        await wait_until(backing_off)
        until = (await first.get_job(job.job_id)).sheets[0].waiting_until
        assert until is not None
    finally:
        await first.stop()
    second = Conductor(config)
    await second.start()
    try:
        sheet = (await second.get_job(job.job_id)).sheets[0]
        assert sheet.status is SheetStatus.WAITING, "the restart dropped the backoff"
        assert sheet.waiting_until == until and sheet.waiting_reason is WaitingReason.RETRY_BACKOFF
        if not auto_resume:
            await second.resume_job(job.job_id)
        done = await wait_for_job(second, job.job_id)
        assert done.status is JobStatus.COMPLETED
        history, _ = await second.get_execution_history(job.job_id)
        assert [h.attempt for h in history] == [1, 2]
        assert history[1].started_at >= until, (history[1].started_at, until)
    finally:
        await second.stop()

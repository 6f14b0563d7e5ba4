"""Rate-limit coordination and error classification, with a fake agent CLI driven through a
user instrument profile (Issue 5)."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
from helpers import wait_for_job, wait_until

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import ErrorCategory, JobStatus, Outcome, SheetStatus, WaitingReason

pytestmark = pytest.mark.anyio

FAKE_AGENT = Path(__file__).with_name("fake_agent.py")


@pytest.fixture
async def agent_conductor(
    make_config: Callable[..., PodiumConfig], home: Path
) -> AsyncIterator[Conductor]:
    (home / "instruments").mkdir(exist_ok=True)
    (home / "instruments" / "fake-agent.yaml").write_text(
        f"""
name: fake-agent
description: test double for an AI coding CLI
written_for: "fake-agent 1.0"
executable: {sys.executable}
args: ["{FAKE_AGENT}", "{{prompt}}"]
prompt_via: argv
patterns:
  streams: [stdout, stderr]
  rate_limit:
    - regex: "rate limit.*retry after (?P<secs>[0-9]+) seconds"
      retry_after_group: secs
  auth: ["invalid api key"]
  transient: ["overloaded"]
"""
    )
    async with Conductor(make_config(max_concurrent_sheets=4)) as conductor:
        yield conductor


def agent_job(name: str, prompt: str, retries: int = 0) -> dict[str, object]:
    return {
        "name": name,
        "instrument": "fake-agent",
        "retry": {"max_retries": retries, "base_delay_seconds": 0.1},
        "sheets": [{"prompt": prompt}],
    }


async def test_rate_limit_waits_without_spending_retries_and_holds_the_instrument(
    agent_conductor: Conductor,
) -> None:
    c = agent_conductor
    limited = await c.submit_job(spec=agent_job("limited", "ratelimit-once:a"))

    async def waiting() -> bool:
        return (await c.get_job(limited.job_id)).sheets[0].status is SheetStatus.WAITING

    await wait_until(waiting)
    limited_at = time.monotonic()
    sheet = (await c.get_job(limited.job_id)).sheets[0]
    assert sheet.waiting_reason is WaitingReason.RATE_LIMIT and sheet.waiting_until is not None
    status = await c.status()
    assert [r.instrument for r in status.rate_limits] == ["fake-agent"]

    # Submissions are never refused for a rate limit; other instruments keep running.
    other_agent = await c.submit_job(spec=agent_job("other-agent", "hello"))
    shell = await c.submit_job(spec={"name": "shell", "sheets": [{"prompt": "echo shell"}]})
    shell_done = await wait_for_job(c, shell.job_id)
    assert shell_done.status is JobStatus.COMPLETED
    assert time.monotonic() - limited_at < 1.5  # did not wait for the fake-agent limit
    assert (await c.get_job(other_agent.job_id)).sheets[0].attempts == 0  # held back

    done = await wait_for_job(c, limited.job_id, timeout=15)
    other = await wait_for_job(c, other_agent.job_id, timeout=15)
    assert done.status is JobStatus.COMPLETED and other.status is JobStatus.COMPLETED
    assert time.monotonic() - limited_at >= 1.0  # it really waited for the ~2 s limit
    history, _ = await c.get_execution_history(limited.job_id)
    assert [h.outcome for h in history] == [Outcome.RATE_LIMITED, Outcome.COMPLETED]
    assert history[0].error_category is ErrorCategory.RATE_LIMITED
    assert done.sheets[0].attempts == 2  # with max_retries 0: the wait spent no retry
    assert (await c.status()).rate_limits == []


async def test_auth_error_fails_at_once_without_retry(agent_conductor: Conductor) -> None:
    job = await agent_conductor.submit_job(spec=agent_job("auth", "auth", retries=3))
    detail = await wait_for_job(agent_conductor, job.job_id)
    assert detail.status is JobStatus.FAILED
    assert detail.sheets[0].error_category is ErrorCategory.AUTH
    assert detail.sheets[0].attempts == 1


async def test_rate_limit_text_in_successful_run_is_ignored(agent_conductor: Conductor) -> None:
    job = await agent_conductor.submit_job(spec=agent_job("chatty", "chatty-success"))
    detail = await wait_for_job(agent_conductor, job.job_id)
    assert detail.status is JobStatus.COMPLETED
    assert (await agent_conductor.status()).rate_limits == []


async def test_clear_rate_limits_releases_waiting_sheets(agent_conductor: Conductor) -> None:
    c = agent_conductor
    spec = agent_job("slow-limit", "ratelimit-once:b")
    job = await c.submit_job(spec=spec)

    async def waiting() -> bool:
        return (await c.get_job(job.job_id)).sheets[0].status is SheetStatus.WAITING

    await wait_until(waiting)
    assert await c.clear_rate_limits("fake-agent") == ["fake-agent"]
    started = time.monotonic()
    detail = await wait_for_job(c, job.job_id)
    assert detail.status is JobStatus.COMPLETED
    assert time.monotonic() - started < 1.8
    assert await c.clear_rate_limits() == []


async def test_rate_limit_survives_restart(
    make_config: Callable[..., PodiumConfig], agent_conductor: Conductor
) -> None:
    from datetime import timedelta

    from podium.core.models import utcnow
    from podium.core.store.base import WriteBatch
    from podium.core.store.rows import HoldRow

    now = utcnow()
    # Written straight to the store, as a conductor that died mid-wait left it.
    hold = HoldRow("fake-agent", now + timedelta(seconds=60), "limited", now)
    assert await agent_conductor.store.commit([WriteBatch(holds=[hold])]) == [None]
    await agent_conductor.stop()
    async with Conductor(make_config()) as again:
        assert [r.instrument for r in (await again.status()).rate_limits] == ["fake-agent"]
        job = await again.submit_job(spec=agent_job("after-restart", "hello"))
        await anyio.sleep(0.5)
        assert (await again.get_job(job.job_id)).sheets[0].attempts == 0
        await again.clear_rate_limits()
        assert (await wait_for_job(again, job.job_id)).status is JobStatus.COMPLETED
    await agent_conductor.start()


async def test_after_the_wait_one_sheet_goes_first_then_the_rest(
    agent_conductor: Conductor, tmp_path: Path
) -> None:
    c = agent_conductor
    timeline = tmp_path / "timeline.log"
    limited = await c.submit_job(spec=agent_job("first", "ratelimit-once:c"))

    async def waiting() -> bool:
        return (await c.get_job(limited.job_id)).sheets[0].status is SheetStatus.WAITING

    await wait_until(waiting)
    held = [
        (await c.submit_job(spec=agent_job(f"held-{i}", f"timed:{timeline}"))).job_id
        for i in range(3)
    ]
    for job_id in [limited.job_id, *held]:
        assert (await wait_for_job(c, job_id, timeout=20)).status is JobStatus.COMPLETED
    # The limited sheet's own retry goes alone first; the held sheets start only after it
    # succeeded.
    first = (await c.get_job(limited.job_id)).sheets[0]
    assert first.completed_at is not None
    starts = [
        float(line.split()[1])
        for line in timeline.read_text().splitlines()
        if line.startswith("start")
    ]
    assert len(starts) == 3
    assert min(starts) >= first.completed_at.timestamp() - 0.05


@pytest.fixture
async def json_agent_conductor(
    make_config: Callable[..., PodiumConfig], home: Path
) -> AsyncIterator[Conductor]:
    (home / "instruments").mkdir(exist_ok=True)
    (home / "instruments" / "json-agent.yaml").write_text(
        f"""
name: json-agent
executable: {sys.executable}
args: ["{FAKE_AGENT}", "{{prompt}}"]
output: {{format: json, result_path: result, error_path: is_error}}
patterns:
  rate_limit:
    - regex: "rate limit reached, retry after (?P<secs>[0-9]+) seconds"
      retry_after_group: secs
"""
    )
    async with Conductor(make_config()) as conductor:
        yield conductor


async def test_json_result_becomes_the_sheet_output(json_agent_conductor: Conductor) -> None:
    spec = {
        "name": "answer",
        "sheets": [
            {"instrument": "json-agent", "prompt": "json:forty-two"},
            {"depends_on": [1], "prompt": "echo 'got {{ outputs[1] }}' > got.txt"},
        ],
    }
    job = await json_agent_conductor.submit_job(spec=spec)
    detail = await wait_for_job(json_agent_conductor, job.job_id)
    assert detail.status is JobStatus.COMPLETED
    assert detail.sheets[0].output_tail == "forty-two"
    assert (Path(detail.workspace) / "got.txt").read_text() == "got forty-two\n"


async def test_error_reported_with_exit_zero_is_a_failed_run(
    json_agent_conductor: Conductor,
) -> None:
    spec = {
        "name": "flagged",
        "instrument": "json-agent",
        "retry": {"max_retries": 0},
        "sheets": [{"prompt": "json-error-once:flag"}],
    }
    job = await json_agent_conductor.submit_job(spec=spec)
    detail = await wait_for_job(json_agent_conductor, job.job_id, timeout=15)
    assert detail.status is JobStatus.COMPLETED
    assert detail.sheets[0].output_tail == "recovered"
    history, _ = await json_agent_conductor.get_execution_history(job.job_id)
    assert [h.outcome for h in history] == [Outcome.RATE_LIMITED, Outcome.COMPLETED]
    assert "reported an error" in (history[0].error or "")

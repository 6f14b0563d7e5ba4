"""Sheets held back by a rate-limit hold or by backpressure are `waiting` with the reason and
the hold's end (SPEC §6), seen through a real MCP client's `status`; at most a job's free
slots of them; back to running (or pending) when the hold lifts or pressure drops."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fake_agent_profile import fake_agent_profile
from helpers import press, wait_for_job, wait_until
from mcp import Client

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import JobStatus, SheetStatus, WaitingReason
from podium.core.pressure import PressureLevel
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def agents(make_config: Callable[..., PodiumConfig], home: Path) -> AsyncIterator[Conductor]:
    (home / "instruments").mkdir(exist_ok=True)
    for name in ("agent-a", "agent-b"):
        (home / "instruments" / f"{name}.yaml").write_text(fake_agent_profile(name))
    async with Conductor(make_config(max_concurrent_sheets=8)) as conductor:
        yield conductor


def job(name: str, instrument: str, prompts: list[str], parallel: int) -> dict[str, Any]:
    return {
        "name": name,
        "instrument": instrument,
        "concurrency": {"max_parallel_sheets": parallel},
        "retry": {"max_retries": 0},
        "sheets": [{"prompt": p} for p in prompts],
    }


async def status(client: Client, job_id: str) -> dict[str, Any]:
    result = await client.call_tool("status", {"job_id": job_id})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def shown(detail: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    return [(s["status"], s["waiting_reason"], s["waiting_until"]) for s in detail["sheets"]]


async def test_sheets_behind_a_hold_show_waiting_until_its_end_then_run(
    agents: Conductor, tmp_path: Path
) -> None:
    c = agents
    timeline = tmp_path / "timeline.log"
    server = PodiumServer(c)
    async with server.running(), Client(server.mcp) as client:
        limited = await c.submit_job(spec=job("limited", "agent-a", ["ratelimit-wait:4:first"], 1))

        async def held() -> bool:
            return bool((await c.status()).rate_limits)

        await wait_until(held, timeout=10)
        hold_end = (await c.status()).rate_limits[0].until
        # Submitted while agent-a is held: one job of 5 sheets (2 at a time), one of 4 (3 at
        # a time), and one on agent-b, which no hold concerns.
        five = await c.submit_job(spec=job("five", "agent-a", [f"timed:{timeline}"] * 5, 2))
        four = await c.submit_job(spec=job("four", "agent-a", [f"timed:{timeline}"] * 4, 3))
        other = await c.submit_job(spec=job("other", "agent-b", ["hello"] * 3, 3))

        async def marked() -> bool:
            a = shown(await status(client, five.job_id))
            b = shown(await status(client, four.job_id))
            return sum(s[0] == "waiting" for s in a) == 2 and sum(s[0] == "waiting" for s in b) == 3

        await wait_until(marked, timeout=5)
        assert (await c.status()).rate_limits, "the hold ended before the check"
        until = hold_end.isoformat().replace("+00:00", "Z")
        five_seen = shown(await status(client, five.job_id))
        four_seen = shown(await status(client, four.job_id))
        # The first sheets the dispatcher takes, at most the job's slots; the rest pending.
        assert [s[0] for s in five_seen] == ["waiting", "waiting", "pending", "pending", "pending"]
        assert [s[0] for s in four_seen] == ["waiting", "waiting", "waiting", "pending"]
        for reason_until in [s[1:] for s in five_seen + four_seen if s[0] == "waiting"]:
            assert reason_until[0] == "rate_limit"
            assert _same_moment(reason_until[1], until), (reason_until, until)
        # diagnose tells the shown-waiting ones and the pending ones behind the hold apart.
        found = await c.diagnose(five.job_id)
        assert [(w.sheet_num, w.reason) for w in found.waiting] == [
            (n, "rate_limit") for n in range(1, 6)
        ]
        assert [w.detail for w in found.waiting] == [
            "ready: 'agent-a' is held by a rate limit"
        ] * 2 + ["pending: 'agent-a' is held by a rate limit"] * 3
        other_done = await wait_for_job(c, other.job_id, timeout=10)
        assert other_done.status is JobStatus.COMPLETED
        assert (await c.status()).rate_limits, "agent-b ran while agent-a was still held"
        assert all(s.waiting_reason is None for s in other_done.sheets)

        for job_id in (limited.job_id, five.job_id, four.job_id):
            assert (await wait_for_job(c, job_id, timeout=30)).status is JobStatus.COMPLETED
        done = await status(client, five.job_id)
        assert all(s["waiting_reason"] is None for s in done["sheets"])
    # One sheet went first (the limited one); the shown-waiting ones started after it.
    first = (await c.get_job(limited.job_id)).sheets[0]
    assert first.completed_at is not None
    starts = [
        float(line.split()[1]) for line in timeline.read_text().splitlines() if "start" in line
    ]
    assert len(starts) == 9
    assert min(starts) >= first.completed_at.timestamp() - 0.05


def _same_moment(shown_until: str | None, expected: str) -> bool:
    assert shown_until is not None
    a = datetime.fromisoformat(shown_until.replace("Z", "+00:00"))
    b = datetime.fromisoformat(expected.replace("Z", "+00:00"))
    return abs((a - b).total_seconds()) < 0.001


async def test_clear_rate_limits_starts_the_shown_waiting_sheets_at_once(
    agents: Conductor,
) -> None:
    c = agents
    limited = await c.submit_job(spec=job("limited", "agent-a", ["ratelimit-wait:60:x"], 1))

    async def held() -> bool:
        return bool((await c.status()).rate_limits)

    await wait_until(held, timeout=10)
    behind = await c.submit_job(spec=job("behind", "agent-a", ["hello"] * 3, 2))

    async def marked() -> bool:
        sheets = (await c.get_job(behind.job_id)).sheets
        return [s.waiting_reason for s in sheets] == [WaitingReason.RATE_LIMIT] * 2 + [None]

    await wait_until(marked, timeout=5)
    started = time.monotonic()
    await c.clear_rate_limits()
    assert (await wait_for_job(c, behind.job_id, timeout=10)).status is JobStatus.COMPLETED
    assert (await wait_for_job(c, limited.job_id, timeout=10)).status is JobStatus.COMPLETED
    assert time.monotonic() - started < 5  # not the 60 s the hold said


async def test_pause_resume_and_restart_with_shown_waiting_sheets(
    make_config: Callable[..., PodiumConfig], agents: Conductor
) -> None:
    c = agents
    await c.submit_job(spec=job("limited", "agent-a", ["ratelimit-wait:60:y"], 1))

    async def held() -> bool:
        return bool((await c.status()).rate_limits)

    await wait_until(held, timeout=10)
    behind = await c.submit_job(spec=job("behind", "agent-a", ["hello"] * 4, 2))

    async def marked(conductor: Conductor = c) -> bool:
        sheets = (await conductor.get_job(behind.job_id)).sheets
        return sum(s.status is SheetStatus.WAITING for s in sheets) == 2

    await wait_until(marked, timeout=5)
    await c.pause_job(behind.job_id)
    await c.resume_job(behind.job_id)
    await wait_until(marked, timeout=5)
    # Still 2: a resume does not mark more than the job's slots.
    sheets = (await c.get_job(behind.job_id)).sheets
    assert [s.status for s in sheets].count(SheetStatus.WAITING) == 2
    await c.stop()
    # Restart: the waits come back pending (SPEC §6), the hold survives in the store, and
    # the next pass shows the held sheets waiting again.
    async with Conductor(make_config(auto_resume=True)) as again:
        assert (await again.status()).rate_limits
        await wait_until(lambda: marked(again), timeout=10)
        assert all(
            s.waiting_reason in (WaitingReason.RATE_LIMIT, None)
            for s in (await again.get_job(behind.job_id)).sheets
        )
        await again.cancel_job(behind.job_id)
        cancelled = await again.get_job(behind.job_id)
        assert {s.status for s in cancelled.sheets} == {SheetStatus.CANCELLED}
    await c.start()


async def test_backpressure_shows_waiting_and_lifts(
    make_config: Callable[..., PodiumConfig],
) -> None:
    async with Conductor(make_config(max_concurrent_sheets=1)) as c:
        spec = {
            "name": "pressed",
            "concurrency": {"max_parallel_sheets": 3},
            "sheets": [{"prompt": "sleep 0.5"} for _ in range(5)],
        }
        pressed = await c.submit_job(spec=spec, start=False)
        press(c, PressureLevel.CRITICAL)
        await c.resume_job(pressed.job_id)
        server = PodiumServer(c)
        async with server.running(), Client(server.mcp) as client:

            async def marked() -> bool:
                seen = shown(await status(client, pressed.job_id))
                return seen[:3] == [("waiting", "backpressure", None)] * 3

            await wait_until(marked, timeout=5)
            seen = shown(await status(client, pressed.job_id))
            assert seen[3:] == [("pending", None, None)] * 2
            press(c, PressureLevel.NONE)

            async def one_runs() -> bool:
                return "running" in [s[0] for s in shown(await status(client, pressed.job_id))]

            await wait_until(one_runs, timeout=5)
            # Pressure is gone: the sheets that could not start (one slot) are pending again.
            seen = shown(await status(client, pressed.job_id))
            assert [s for s in seen if s[0] == "waiting"] == []
        done = await wait_for_job(c, pressed.job_id, timeout=20)
        assert done.status is JobStatus.COMPLETED

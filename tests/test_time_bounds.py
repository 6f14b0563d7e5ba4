"""Durations from a spec or from a CLI's output are bounded before they become moments.

A spec with `retry: {base_delay_seconds: 1e300}` passed validation, and the first failed
attempt raised OverflowError in the one writer (`now + timedelta(seconds=1e300)`): the
conductor died, and died again at each resume of the job. The same held for
`deadline_seconds`, an approval's `timeout_seconds`, and a reset "in 99999999999999 seconds"
printed by a CLI."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for_job, wait_until

from podium.core.conductor import Conductor
from podium.core.config import ConfigError, PodiumConfig, load_config
from podium.core.errors import SpecError
from podium.core.instruments.resets import reset_moment
from podium.core.models import JobStatus, SheetStatus, WaitingReason, utcnow
from podium.core.spec import load_spec
from podium.core.spec.models import MAX_DURATION_SECONDS

pytestmark = pytest.mark.anyio

HUGE = 1e300
DURATIONS = {
    "retry.base_delay_seconds": {"retry": {"base_delay_seconds": HUGE}},
    "retry.max_delay_seconds": {"retry": {"max_delay_seconds": HUGE}},
    "deadline_seconds": {"deadline_seconds": HUGE},
    "fallback_wait_seconds": {"fallback_wait_seconds": HUGE},
    "instrument_config.timeout_seconds": {"instrument_config": {"timeout_seconds": HUGE}},
    "instrument_config.idle_timeout_seconds": {"instrument_config": {"idle_timeout_seconds": HUGE}},
    "sheets.0.validations.0.timeout_seconds": {
        "sheets": [
            {
                "prompt": "true",
                "validations": [
                    {"type": "command_succeeds", "command": "true", "timeout_seconds": HUGE}
                ],
            }
        ]
    },
}


def spec_with(**fields: Any) -> dict[str, Any]:
    return {"name": "bounds", "sheets": [{"prompt": "true"}], **fields}


@pytest.mark.parametrize("path", sorted(DURATIONS))
def test_a_duration_past_the_bound_is_a_spec_error_naming_it(path: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(data=spec_with(**DURATIONS[path]))
    [error] = caught.value.errors
    assert error.path == path, caught.value.errors
    assert str(MAX_DURATION_SECONDS) in error.message, error.message


def test_infinity_from_yaml_is_refused_too() -> None:
    text = "name: inf\nretry: {max_delay_seconds: .inf}\nsheets: [{prompt: 'true'}]\n"
    with pytest.raises(SpecError) as caught:
        load_spec(text=text)
    assert [e.path for e in caught.value.errors] == ["retry.max_delay_seconds"]


async def test_the_longest_allowed_durations_run(
    make_config: Callable[..., PodiumConfig],
) -> None:
    """At the bound, a failed sheet waits out its backoff (a year ahead), an approval
    waits, and the deadline is set: the conductor goes on answering."""
    year = MAX_DURATION_SECONDS
    spec = spec_with(
        deadline_seconds=year,
        retry={
            "max_retries": 1,
            "base_delay_seconds": year,
            "max_delay_seconds": year,
            "jitter": False,
        },
        instrument_config={"timeout_seconds": year, "idle_timeout_seconds": year},
        sheets=[
            {"name": "fails", "prompt": "exit 1"},
            {"name": "gate", "instrument": "approval", "prompt": "ok?"},
        ],
    )
    async with Conductor(make_config()) as conductor:
        job = await conductor.submit_job(spec=spec)
        await wait_for_job(conductor, job.job_id, statuses=("running",))

        async def settled() -> bool:
            sheets = (await conductor.get_job(job.job_id)).sheets
            return all(s.status is SheetStatus.WAITING for s in sheets)

        await wait_until(settled, timeout=10)
        detail = await conductor.get_job(job.job_id)
        fails, gate = detail.sheets
        assert fails.waiting_reason is WaitingReason.RETRY_BACKOFF
        assert gate.waiting_reason is WaitingReason.APPROVAL
        for sheet in (fails, gate):
            assert sheet.waiting_until is not None
            assert sheet.waiting_until - utcnow() > timedelta(seconds=year - 60)
        assert (await conductor.status()).ready
        await conductor.cancel_job(job.job_id)
        assert (await conductor.get_job(job.job_id)).status is JobStatus.CANCELLED


@pytest.mark.parametrize("kind", ["seconds", "duration"])
def test_a_reset_absurdly_far_ahead_is_a_moment_not_an_overflow(kind: str) -> None:
    now = datetime(2026, 3, 10, 10, 30, tzinfo=UTC)
    value = "99999999999999" if kind != "duration" else "99999999999 days"
    moment = reset_moment(value, kind, now=now, zone=UTC)  # type: ignore[arg-type]
    assert moment is not None and moment > now + timedelta(days=300)


CONFIG_DURATIONS = [
    "snapshot_ttl_hours",
    "task_ttl_hours",
    "monitor_interval_seconds",
    "kill_grace_seconds",
    "max_rate_limit_wait_seconds",
    "idle_exit_minutes",
    "lease_seconds",
]


def test_config_durations_past_their_bound_are_refused_naming_each(tmp_path: Path) -> None:
    """snapshot_ttl_hours: 1e300 made the conductor fail at start (its first cleanup)."""
    (tmp_path / "config.yaml").write_text("".join(f"{k}: 1e300\n" for k in CONFIG_DURATIONS))
    with pytest.raises(ConfigError) as caught:
        load_config(home=tmp_path, env={})
    for key in CONFIG_DURATIONS:
        assert f"\n{key}: " in str(caught.value), str(caught.value)

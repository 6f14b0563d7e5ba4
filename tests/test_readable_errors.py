"""What a sheet's `last_error` says when a CLI's output was classified: a rate limit names the
instrument and when it lifts, then a short piece of what matched (a stream-json event is one
line of the log, not the whole event dumped into the error)."""

from __future__ import annotations

import pytest
from cli_streams import SESSION, claude_run, jl
from test_cli_wordings import FakeCli, builtins, cli

from podium.core.log_excerpt import excerpt_around
from podium.core.models import ErrorCategory, Outcome

pytestmark = pytest.mark.anyio
__all__ = ["builtins", "cli"]  # fixtures used by name below

REJECTED = jl(
    type="rate_limit_event",
    rate_limit_info={
        "status": "rejected",
        "resetsAt": 1773162000,  # 2026-03-10T17:00:00Z
        "rateLimitType": "five_hour",
        "overageStatus": "rejected",
        "overageDisabledReason": "org_level_disabled_until_the_end_of_the_billing_period",
        "isUsingOverage": False,
        "unifiedRateLimitFallbackAvailable": False,
    },
    uuid="0b7e3c0e-4f0d-4c1e-9a57-2f5d3f0e8a11",
    session_id=SESSION,
)


async def test_rate_limit_event_reads_as_who_and_until_when(cli: FakeCli) -> None:
    cli.script_attempts({"stdout": claude_run("Request refused", extra=[REJECTED]), "exit": 1})
    result = await cli.run("claude-code")
    assert result.outcome is Outcome.RATE_LIMITED
    error = result.error or ""
    assert error.startswith(
        "exited with code 1; rate limited by claude-code until 2026-03-10T17:00:00Z: "
    ), error
    # The matched line, cut short: its start, not the rest of the event.
    assert '{"type":"rate_limit_event","rate_limit_info":{"status":"rejected"' in error
    assert SESSION not in error and "unifiedRateLimitFallbackAvailable" not in error
    assert len(error) <= 250 and error.endswith("…")


async def test_rate_limit_text_keeps_its_words_and_says_until_when(cli: FakeCli) -> None:
    text = "You've hit your limit · resets 1pm (Europe/Lisbon)"
    cli.script_attempts({"stdout": claude_run(text), "exit": 1})
    result = await cli.run("claude-code")
    assert result.error == (
        f"exited with code 1; rate limited by claude-code until 2026-03-10T13:00:00Z: {text}"
    )


async def test_rate_limit_without_a_reset_names_no_moment(cli: FakeCli) -> None:
    cli.script_attempts({"stdout": claude_run("API Error: Rate limit reached"), "exit": 1})
    result = await cli.run("claude-code")
    assert result.error == (
        "exited with code 1; rate limited by claude-code: API Error: Rate limit reached"
    )


async def test_other_classes_read_as_before(cli: FakeCli) -> None:
    cli.script_attempts({"stdout": claude_run("Credit balance is too low"), "exit": 1})
    result = await cli.run("claude-code")
    assert result.error_category is ErrorCategory.BILLING
    assert result.error == "exited with code 1; billing: Credit balance is too low"


async def test_diagnose_finds_the_matched_event_line_in_the_log(cli: FakeCli) -> None:
    cli.script_attempts({"stdout": claude_run("Request refused", extra=[REJECTED]), "exit": 1})
    result = await cli.run("claude-code")
    log = (cli.tmp / "logs" / "attempt-1.log").read_text()
    # As the engine stores it once the sheet gave up waiting.
    stored = f"{result.error}; still rate limited after 20 waits"
    lines, matched = excerpt_around(log, stored)
    assert matched is not None and matched.startswith('{"type":"rate_limit_event"')
    assert any(line.startswith(REJECTED[:120]) for line in lines)  # lines are clipped

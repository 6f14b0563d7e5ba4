"""The built-in profiles against fake CLIs that print what the real ones print when an account
runs out, byte for byte, in the stream and format each real CLI uses (stderr text, stream-json
events, codex JSONL): `run_attempt` must yield the right reset moment against a frozen clock,
billing stops their own category, and every run its session id and cost.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cli_streams import (
    PLUS_LIMIT,
    SESSION,
    claude_init,
    claude_rejected,
    claude_run,
    codex_failure,
    gemini_failure,
    gemini_json,
    gemini_json_error,
    jl,
    write_fake_cli,
)
from pydantic import TypeAdapter

from podium.core.instruments.catalog import builtin_profiles
from podium.core.instruments.profile import InstrumentProfile
from podium.core.models import ErrorCategory, Outcome
from podium.core.runner.prompts import CONTINUE_NOTE, validation_feedback
from podium.core.runner.runner import AttemptPlan, AttemptResult, run_attempt
from podium.core.spec.models import InstrumentConfig, Validation

pytestmark = pytest.mark.anyio

LOS_ANGELES = ZoneInfo("America/Los_Angeles")
NEW_YORK = ZoneInfo("America/New_York")
# Tuesday 10 March 2026, 10:30 UTC (03:30 in Los Angeles, on PDT since 8 March).
NOW = datetime(2026, 3, 10, 10, 30, tzinfo=UTC)
TASK = "Count the directories in listing.txt and write the number to count.txt"


@pytest.fixture(scope="module")
def builtins() -> dict[str, InstrumentProfile]:
    return builtin_profiles()


class FakeCli:
    """One fake executable per test, replaying a scripted attempt per call."""

    def __init__(self, tmp_path: Path, builtins: dict[str, InstrumentProfile]) -> None:
        self.tmp = tmp_path
        self.builtins = builtins
        self.script = write_fake_cli(tmp_path / "fake-cli")
        self.record = tmp_path / "record.jsonl"
        self.record.write_text("")
        self.scenario = tmp_path / "scenario.json"
        self.workspace = tmp_path / "work"
        self.workspace.mkdir()
        self.attempt = 0

    def script_attempts(self, *attempts: dict[str, Any]) -> None:
        self.scenario.write_text(json.dumps(list(attempts)))

    def plan(self, name: str, **overrides: Any) -> AttemptPlan:
        self.attempt += 1
        profile = self.builtins[name].model_copy(update={"executable": str(self.script)})
        fields: dict[str, Any] = {
            "job_id": "job-1",
            "sheet_num": 1,
            "attempt": self.attempt,
            "prompt": TASK,
            "workspace": self.workspace,
            "profile": profile,
            "instrument_config": InstrumentConfig(),
            "validations": [],
            "log_path": self.tmp / "logs" / f"attempt-{self.attempt}.log",
            "log_max_bytes": 1 << 20,
            "kill_grace_seconds": 1,
            "base_env": {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "FAKE_RECORD": str(self.record),
                "FAKE_SCENARIO": str(self.scenario),
            },
            "home": str(self.tmp),
        }
        fields.update(overrides)
        return AttemptPlan(**fields)

    async def run(
        self, name: str, *, now: datetime = NOW, zone: Any = UTC, **overrides: Any
    ) -> AttemptResult:
        return await run_attempt(self.plan(name, **overrides), clock=lambda: now, zone=zone)

    def calls(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.record.read_text().splitlines()]


@pytest.fixture
def cli(tmp_path: Path, builtins: dict[str, InstrumentProfile]) -> FakeCli:
    return FakeCli(tmp_path, builtins)


def assert_waits(result: AttemptResult, until: datetime, now: datetime = NOW) -> None:
    assert result.outcome is Outcome.RATE_LIMITED
    assert result.error_category is ErrorCategory.RATE_LIMITED
    assert result.reset_at == until
    assert result.retry_after_seconds == (until - now).total_seconds()


# --------------------------------------------------------------------------- claude-code


async def test_claude_hit_your_limit_resets_at_a_clock_time_in_its_zone(cli: FakeCli) -> None:
    cli.script_attempts({"stdout": claude_run("You've hit your limit · resets 1pm (Europe/Lisbon)"),
                         "exit": 1})  # fmt: skip
    result = await cli.run("claude-code", zone=NEW_YORK)
    assert_waits(result, datetime(2026, 3, 10, 13, 0, tzinfo=UTC))
    assert "You've hit your limit · resets 1pm (Europe/Lisbon)" in (result.error or "")


async def test_claude_reset_time_already_past_today_means_tomorrow(cli: FakeCli) -> None:
    cli.script_attempts({"stdout": claude_run("You've hit your limit · resets 1pm (Europe/Lisbon)"),
                         "exit": 1})  # fmt: skip
    later = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)
    result = await cli.run("claude-code", now=later)
    assert_waits(result, datetime(2026, 3, 11, 13, 0, tzinfo=UTC), now=later)


async def test_claude_reset_moment_just_past_names_no_moment(cli: FakeCli) -> None:
    # "resets 10:28am" printed at 10:30: within the grace it means now, which lifts nothing
    # (the engine backs off), so the error must not say it is limited "until 10:28".
    cli.script_attempts({"stdout": claude_run("You've hit your limit · resets 10:28am (UTC)"),
                         "exit": 1})  # fmt: skip
    result = await cli.run("claude-code")
    assert result.outcome is Outcome.RATE_LIMITED
    assert result.reset_at is None and result.retry_after_seconds is None
    assert "until" not in (result.error or ""), result.error


async def test_a_stale_rejected_event_gives_way_to_the_prose_reset(cli: FakeCli) -> None:
    # The event's resetsAt is an hour past; the prose names a moment to come, which is the wait.
    stale = int((NOW - timedelta(hours=1)).timestamp())
    text = "You've hit your limit · resets 1pm (Europe/Lisbon)"
    cli.script_attempts({"stdout": claude_run(text, extra=[claude_rejected(stale)]), "exit": 1})
    result = await cli.run("claude-code")
    assert_waits(result, datetime(2026, 3, 10, 13, 0, tzinfo=UTC))


@pytest.mark.parametrize(
    "text",
    [
        # anthropics/claude-code #12789, verbatim: a hint follows the zone after another "·".
        "Weekly limit reached · resets 10am (Asia/Seoul) · /upgrade to Max or turn on /extra-usage",
        "You've hit your limit · resets 10am (Asia/Seoul) · /upgrade to Max or turn on "
        "/extra-usage",
    ],
)
async def test_claude_reset_followed_by_a_hint(cli: FakeCli, text: str) -> None:
    cli.script_attempts({"stdout": claude_run(text), "exit": 1})
    result = await cli.run("claude-code")
    assert_waits(result, datetime(2026, 3, 11, 1, 0, tzinfo=UTC))  # 10am in Seoul


async def test_claude_weekly_limit_reached_without_a_reset_is_still_a_limit(
    cli: FakeCli,
) -> None:
    cli.script_attempts({"stdout": claude_run("Weekly limit reached · /upgrade to Max"),
                         "exit": 1})  # fmt: skip
    result = await cli.run("claude-code")
    assert result.outcome is Outcome.RATE_LIMITED and result.reset_at is None


async def test_claude_dated_reset(cli: FakeCli) -> None:
    text = "You've hit your limit · resets Apr 23 at 4pm (America/New_York)"
    cli.script_attempts({"stdout": claude_run(text), "exit": 1})
    result = await cli.run("claude-code")
    assert_waits(result, datetime(2026, 4, 23, 16, 0, tzinfo=NEW_YORK).astimezone(UTC))


async def test_claude_clock_time_without_zone_is_the_machine_zone(cli: FakeCli) -> None:
    cli.script_attempts({"stdout": claude_run("You've hit your limit · resets 10pm"), "exit": 1})
    result = await cli.run("claude-code", zone=NEW_YORK)
    assert_waits(result, datetime(2026, 3, 10, 22, 0, tzinfo=NEW_YORK).astimezone(UTC))


async def test_claude_legacy_epoch_form(cli: FakeCli) -> None:
    cli.script_attempts({"stdout": claude_run("Claude AI usage limit reached|1750708800"),
                         "exit": 1})  # fmt: skip
    now = datetime(2025, 6, 23, 16, 0, tzinfo=UTC)
    result = await cli.run("claude-code", now=now)
    assert_waits(result, datetime.fromtimestamp(1750708800, UTC), now=now)


async def test_claude_legacy_your_limit_will_reset_at(cli: FakeCli) -> None:
    text = "Claude usage limit reached. Your limit will reset at 3pm (America/Santiago)."
    cli.script_attempts({"stdout": claude_run(text), "exit": 1})
    result = await cli.run("claude-code")
    santiago = ZoneInfo("America/Santiago")
    assert_waits(result, datetime(2026, 3, 10, 15, 0, tzinfo=santiago).astimezone(UTC))


async def test_claude_api_rate_limit_on_stdout_with_exit_0_backs_off(cli: FakeCli) -> None:
    # anthropics/claude-code #79500: is_error true, subtype "success", exit code 0.
    cli.script_attempts({"stdout": claude_run("API Error: Rate limit reached"), "exit": 0})
    result = await cli.run("claude-code")
    assert result.outcome is Outcome.RATE_LIMITED
    assert result.exit_code == 0
    assert result.reset_at is None and result.retry_after_seconds is None


async def test_claude_rejected_rate_limit_event_gives_the_exact_epoch(cli: FakeCli) -> None:
    event = jl(
        type="rate_limit_event",
        rate_limit_info={
            "status": "rejected",
            "resetsAt": 1773162000,
            "rateLimitType": "five_hour",
            "overageStatus": "rejected",
            "isUsingOverage": False,
        },
        session_id=SESSION,
    )
    # The prose rounds to the hour; the event is exact and wins.
    text = "You've hit your limit · resets 2pm (Asia/Shanghai)"
    cli.script_attempts({"stdout": claude_run(text, extra=[event]), "exit": 1})
    result = await cli.run("claude-code")
    assert_waits(result, datetime.fromtimestamp(1773162000, UTC))


async def test_a_rejection_without_its_reset_takes_the_reset_the_prose_names(
    cli: FakeCli,
) -> None:
    """The event matches first but says nothing of when; the result's text does. Likewise a
    bare "API Error: Rate limit reached" before the line that names the reset."""
    event = jl(type="rate_limit_event", rate_limit_info={"status": "rejected"}, session_id=SESSION)
    text = "You've hit your limit · resets 1pm (Europe/Lisbon)"
    cli.script_attempts({"stdout": claude_run(text, extra=[event]), "exit": 1})
    assert_waits(await cli.run("claude-code", zone=NEW_YORK), datetime(2026, 3, 10, 13, tzinfo=UTC))
    cli.script_attempts(
        {"stdout": [claude_init()], "stderr": "API Error: Rate limit reached\n"
         "Claude AI usage limit reached|1773162000\n", "exit": 1}
    )  # fmt: skip
    assert_waits(await cli.run("claude-code"), datetime.fromtimestamp(1773162000, UTC))
    # Without a reset anywhere it is still a limit, with a backoff.
    cli.script_attempts({"stdout": claude_run("API Error: Rate limit reached", extra=[event]),
                         "exit": 1})  # fmt: skip
    result = await cli.run("claude-code")
    assert result.outcome is Outcome.RATE_LIMITED and result.reset_at is None


async def test_claude_allowed_rate_limit_events_are_not_limits(cli: FakeCli) -> None:
    allowed = jl(
        type="rate_limit_event",
        rate_limit_info={"status": "allowed_warning", "resetsAt": 1773162000},
        session_id=SESSION,
    )
    cli.script_attempts(
        {"stdout": claude_run("done", is_error=False, extra=[allowed]), "exit": 0},
        {"stdout": claude_run("Error: tool crashed", extra=[allowed]), "exit": 1},
    )
    ok = await cli.run("claude-code")
    assert ok.outcome is Outcome.COMPLETED and ok.stdout_tail == "done"
    failed = await cli.run("claude-code")
    assert failed.outcome is Outcome.FAILED
    assert failed.error_category is ErrorCategory.FAILED


async def test_claude_credit_balance_is_a_billing_stop(cli: FakeCli) -> None:
    text = "Credit balance is too low"
    cli.script_attempts({"stdout": claude_run(text), "exit": 1})
    result = await cli.run("claude-code")
    assert result.outcome is Outcome.FAILED
    assert result.error_category is ErrorCategory.BILLING
    assert result.reset_at is None


# --------------------------------------------------------------------------- codex-cli


async def test_codex_try_again_at_a_clock_time_today(cli: FakeCli) -> None:
    cli.script_attempts({"stdout": codex_failure(PLUS_LIMIT.format("12:16 PM")), "exit": 1})
    result = await cli.run("codex-cli", zone=LOS_ANGELES)
    assert_waits(result, datetime(2026, 3, 10, 12, 16, tzinfo=LOS_ANGELES).astimezone(UTC))


async def test_codex_try_again_at_a_time_already_past_is_tomorrow(cli: FakeCli) -> None:
    cli.script_attempts({"stdout": codex_failure(PLUS_LIMIT.format("12:16 PM")), "exit": 1})
    later = datetime(2026, 3, 10, 21, 0, tzinfo=UTC)  # 14:00 in Los Angeles
    result = await cli.run("codex-cli", now=later, zone=LOS_ANGELES)
    until = datetime(2026, 3, 11, 12, 16, tzinfo=LOS_ANGELES).astimezone(UTC)
    assert_waits(result, until, now=later)


async def test_codex_try_again_at_a_date(cli: FakeCli) -> None:
    cli.script_attempts({"stdout": codex_failure(PLUS_LIMIT.format("Jul 9th, 2026 1:47 AM")),
                         "exit": 1})  # fmt: skip
    result = await cli.run("codex-cli", zone=LOS_ANGELES)
    assert_waits(result, datetime(2026, 7, 9, 1, 47, tzinfo=LOS_ANGELES).astimezone(UTC))


async def test_codex_try_again_in_days_hours_minutes(cli: FakeCli) -> None:
    text = (
        "You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing) or "
        "try again in 2 days 17 hours 14 minutes."
    )
    cli.script_attempts({"stdout": codex_failure(text), "exit": 1})
    result = await cli.run("codex-cli")
    assert_waits(result, NOW + timedelta(days=2, hours=17, minutes=14))


async def test_codex_quota_exceeded_is_a_billing_stop(cli: FakeCli) -> None:
    text = "Quota exceeded. Check your plan and billing details."
    cli.script_attempts({"stdout": codex_failure(text), "exit": 1})
    result = await cli.run("codex-cli")
    assert result.outcome is Outcome.FAILED
    assert result.error_category is ErrorCategory.BILLING


# --------------------------------------------------------------------------- gemini-cli


async def test_gemini_quota_will_reset_after_seconds(cli: FakeCli) -> None:
    message = "Your quota will reset after 5s."
    cli.script_attempts({"stdout": gemini_failure("RetryableQuotaError", message), "exit": 1})
    result = await cli.run("gemini-cli")
    assert_waits(result, NOW + timedelta(seconds=5))


async def test_gemini_daily_quota_waits_for_midnight_pacific(cli: FakeCli) -> None:
    message = "You have exhausted your daily quota on this model."
    cli.script_attempts({"stdout": gemini_failure("TerminalQuotaError", message), "exit": 1})
    result = await cli.run("gemini-cli", zone=NEW_YORK)
    assert_waits(result, datetime(2026, 3, 11, 0, 0, tzinfo=LOS_ANGELES).astimezone(UTC))


async def test_gemini_resource_exhausted_please_retry_in(cli: FakeCli) -> None:
    # Non-fatal API errors go to stderr as the CLI reports them.
    stderr = (
        '[API Error: got status: 429 Too Many Requests. {"error":{"code":429,"message":"Resource '
        'has been exhausted (e.g. check quota). Please retry in 15.0s.","status":'
        '"RESOURCE_EXHAUSTED"}}]\n'
    )
    cli.script_attempts({"stdout": gemini_failure("Error", "API Error"), "stderr": stderr,
                         "exit": 1})  # fmt: skip
    result = await cli.run("gemini-cli")
    assert_waits(result, NOW + timedelta(seconds=15))


@pytest.mark.parametrize(
    "step",
    [
        # google-gemini/gemini-cli #27761 and #17081, verbatim, as each was reported.
        {"stderr": "Error: Cloud Code Assist API error (429): Individual quota reached.\n"
                   " Contact your administrator to enable overages\n", "exit": 1},
        {"stdout": gemini_failure("Error", "Usage limit reached for gemini-3-flash-preview."),
         "exit": 1},
    ],
    ids=["individual-quota-429", "usage-limit-for-model"],
)  # fmt: skip
async def test_gemini_plan_quota_without_a_reset_is_a_limit(
    cli: FakeCli, step: dict[str, Any]
) -> None:
    cli.script_attempts(step)
    result = await cli.run("gemini-cli")
    assert result.outcome is Outcome.RATE_LIMITED and result.reset_at is None


@pytest.mark.parametrize(("code", "message"), [(42, "Invalid input"), (53, "Reached max turns")])
async def test_gemini_input_and_turn_limit_exits_are_plain_failures(
    cli: FakeCli, code: int, message: str
) -> None:
    cli.script_attempts({"stdout": gemini_failure("FatalInputError", message), "exit": code})
    result = await cli.run("gemini-cli")
    assert result.outcome is Outcome.FAILED
    assert result.error_category is ErrorCategory.FAILED
    assert result.exit_code == code
    assert result.session_id == SESSION


# A user profile for `--output-format json` (the form issue 13 names): the built-in gemini-cli
# profile with only its arguments changed must read the single JSON object as well.
GEMINI_JSON_ARGS = ["--output-format", "json"]


async def test_gemini_json_output_answer_session_and_tokens(cli: FakeCli) -> None:
    cli.script_attempts({"stdout": gemini_json("There are 7 directories.",
                                               tokens=(500, 30, 200))})  # fmt: skip
    profile = cli.builtins["gemini-cli"].model_copy(
        update={"executable": str(cli.script), "args": GEMINI_JSON_ARGS}
    )
    result = await cli.run("gemini-cli", profile=profile)
    assert result.outcome is Outcome.COMPLETED
    assert result.stdout_tail == "There are 7 directories."
    assert result.session_id == SESSION
    assert (result.input_tokens, result.output_tokens, result.cache_read_tokens) == (500, 30, 200)
    assert cli.calls()[0]["argv"] == GEMINI_JSON_ARGS


@pytest.mark.parametrize(
    ("error_type", "message", "until"),
    [
        ("RetryableQuotaError", "Your quota will reset after 5s.", NOW + timedelta(seconds=5)),
        ("TerminalQuotaError", "You have exhausted your daily quota on this model.",
         datetime(2026, 3, 11, 0, 0, tzinfo=LOS_ANGELES).astimezone(UTC)),
        ("Error", '[API Error: got status: 429 Too Many Requests. {"error":{"code":429,'
                  '"message":"Resource has been exhausted (e.g. check quota). Please retry in '
                  '15.0s.","status":"RESOURCE_EXHAUSTED"}}]', NOW + timedelta(seconds=15)),
    ],
    ids=["reset-after", "daily-quota", "resource-exhausted"],
)  # fmt: skip
async def test_gemini_json_output_limit_forms(
    cli: FakeCli, error_type: str, message: str, until: datetime
) -> None:
    cli.script_attempts({"stderr": gemini_json_error(error_type, message), "exit": 1})
    profile = cli.builtins["gemini-cli"].model_copy(
        update={"executable": str(cli.script), "args": GEMINI_JSON_ARGS}
    )
    result = await cli.run("gemini-cli", profile=profile, zone=NEW_YORK)
    assert_waits(result, until)


async def test_gemini_json_output_plain_failure_is_no_limit(cli: FakeCli) -> None:
    message = "Reached max session turns for this session."
    cli.script_attempts({"stderr": gemini_json_error("FatalTurnLimitedError", message, 53),
                         "exit": 53})  # fmt: skip
    profile = cli.builtins["gemini-cli"].model_copy(
        update={"executable": str(cli.script), "args": GEMINI_JSON_ARGS}
    )
    result = await cli.run("gemini-cli", profile=profile)
    assert result.outcome is Outcome.FAILED
    assert result.error_category is ErrorCategory.FAILED and result.exit_code == 53


# --------------------------------------------------------------------------- the others


async def test_qwen_free_quota_exceeded_waits_with_backoff(cli: FakeCli) -> None:
    message = "429 Free allocated quota exceeded."
    cli.script_attempts({"stdout": [
        jl(type="system", subtype="session_start", uuid="u1", session_id=SESSION),
        jl(type="result", subtype="error_during_execution", uuid="u2", session_id=SESSION,
           is_error=True, duration_ms=300, duration_api_ms=300, num_turns=0,
           usage={"input_tokens": 0, "output_tokens": 0}, permission_denials=[],
           error={"type": "APIError", "message": message}),
    ], "exit": 1})  # fmt: skip
    result = await cli.run("qwen-code")
    assert result.outcome is Outcome.RATE_LIMITED
    assert result.reset_at is None
    assert result.session_id == SESSION


async def test_goose_rate_limit_exceeded_on_stderr(cli: FakeCli) -> None:
    stderr = "Error: Rate limit exceeded: 429 Too Many Requests\n"
    cli.script_attempts({"stderr": stderr, "exit": 1})
    result = await cli.run("goose")
    assert result.outcome is Outcome.RATE_LIMITED
    assert result.reset_at is None


async def test_amp_out_of_credits_is_a_billing_stop(cli: FakeCli) -> None:
    thread = "T-2775dc92-90ed-4f85-8b73-8f9766029e83"
    cli.script_attempts({"stdout": [
        jl(type="system", subtype="init", cwd="/w", session_id=thread, tools=[], mcp_servers=[]),
        jl(type="result", subtype="error_during_execution", duration_ms=120, is_error=True,
           num_turns=0, error="Out of Credits", session_id=thread),
    ], "exit": 1})  # fmt: skip
    result = await cli.run("amp")
    assert result.outcome is Outcome.FAILED
    assert result.error_category is ErrorCategory.BILLING
    assert result.session_id == thread


async def test_cursor_agent_reason_on_stderr_only(cli: FakeCli) -> None:
    stderr = (
        "Error: You've hit your usage limit\n"
        "  Get Cursor Pro for more Agent usage, unlimited Tab, and more.\n"
        "  fallbackModel: \n"
        "  spendLimitHit: false\n"
        "  chatMessage: *You've hit your free requests limit. Your usage limits will reset "
        "when your monthly cycle ends on 11/17/2025.*\n"
    )
    cli.script_attempts({"stderr": stderr, "exit": 1})
    result = await cli.run("cursor-agent")
    assert result.outcome is Outcome.FAILED
    assert result.error_category is ErrorCategory.BILLING


async def test_limit_text_in_a_successful_run_is_no_limit(cli: FakeCli) -> None:
    text = "I checked: the docs say 'You've hit your limit · resets 1pm (Europe/Lisbon)'."
    cli.script_attempts({"stdout": claude_run(text, is_error=False), "exit": 0})
    result = await cli.run("claude-code")
    assert result.outcome is Outcome.COMPLETED
    assert result.reset_at is None and result.error_category is None


# --------------------------------------------------------------------------- sessions


def codex_started() -> list[str]:
    return [jl(type="thread.started", thread_id=SESSION), jl(type="turn.started")]


@pytest.mark.parametrize(
    ("name", "started", "resume_argv"),
    [
        ("claude-code", [claude_run("")[0]], ["-p", "--output-format", "stream-json",
                                              "--verbose", "--resume", SESSION]),
        ("codex-cli", codex_started(), ["exec", "--json", "--skip-git-repo-check",
                                        "resume", SESSION, "-"]),
        ("gemini-cli", [gemini_failure("x", "y")[0]], ["--output-format", "stream-json",
                                                       "--resume", SESSION]),
        ("amp", [jl(type="system", subtype="init", session_id=SESSION)],
         ["threads", "continue", SESSION, "--execute", "--stream-json"]),
    ],
)  # fmt: skip
async def test_a_timed_out_session_is_resumed_by_the_retry(
    cli: FakeCli, name: str, started: list[str], resume_argv: list[str]
) -> None:
    # The CLI reports its session at once, then works past the sheet's timeout.
    cli.script_attempts({"stdout": started, "sleep": 30}, {"stdout": started, "exit": 0})
    config = InstrumentConfig(timeout_seconds=1)
    first = await cli.run(name, instrument_config=config)
    assert first.outcome is Outcome.TIMEOUT
    assert first.session_id == SESSION
    assert first.resumed_session_id is None

    second = await cli.run(name, resume_session_id=first.session_id)
    assert second.resumed_session_id == SESSION
    fresh, resumed = cli.calls()
    assert SESSION not in fresh["argv"]
    assert resumed["argv"] == resume_argv
    assert resumed["stdin"].startswith(CONTINUE_NOTE)
    assert resumed["stdin"].endswith(TASK)


async def test_a_validation_failure_retry_resumes_with_feedback(cli: FakeCli) -> None:
    validations = [
        TypeAdapter(Validation).validate_python(
            {"type": "content_regex", "path": "count.txt", "pattern": "^[0-9]+$"}
        )
    ]
    cli.script_attempts(
        {"stdout": claude_run("I wrote it.", is_error=False), "files": {"count.txt": "many"}},
        {"stdout": claude_run("Fixed.", is_error=False), "files": {"count.txt": "7"}},
    )
    first = await cli.run("claude-code", validations=validations)
    assert first.outcome is Outcome.FAILED
    assert first.error_category is ErrorCategory.VALIDATION_FAILED
    feedback = validation_feedback(first.validations)
    assert feedback is not None and "content_regex" in feedback

    second = await cli.run(
        "claude-code",
        validations=validations,
        resume_session_id=first.session_id,
        feedback=feedback,
    )
    assert second.outcome is Outcome.COMPLETED
    resumed = cli.calls()[1]
    assert resumed["argv"][-2:] == ["--resume", SESSION]
    assert resumed["stdin"].startswith(feedback)
    assert TASK in resumed["stdin"]


async def test_without_session_support_the_feedback_follows_the_task(cli: FakeCli) -> None:
    cli.script_attempts({"stdout": ["done"], "exit": 0})
    result = await cli.run("goose", resume_session_id=SESSION, feedback="Fix count.txt.")
    assert result.outcome is Outcome.COMPLETED and result.resumed_session_id is None
    call = cli.calls()[0]
    assert SESSION not in call["argv"]
    assert call["stdin"] == f"{TASK}\n\nFix count.txt."


async def test_an_unsafe_session_id_is_not_reported(cli: FakeCli) -> None:
    line = jl(type="system", subtype="init", session_id="--dangerously-skip-permissions")
    cli.script_attempts({"stdout": [line], "exit": 1})
    result = await cli.run("claude-code")
    assert result.session_id is None


async def test_permission_mode_environment_reaches_the_cli(cli: FakeCli) -> None:
    cli.script_attempts({"stdout": ["done"], "exit": 0})
    config = InstrumentConfig(permission_mode="plan", env={"GOOSE_MODE": "auto"})
    result = await cli.run("goose", instrument_config=config)
    assert result.outcome is Outcome.COMPLETED
    # The mode is the declared intent about permissions; a broader env must not override it.
    assert cli.calls()[0]["env"]["GOOSE_MODE"] == "chat"


# --------------------------------------------------------------------------- cost and usage


async def test_claude_cost_and_tokens(cli: FakeCli) -> None:
    result_line = jl(
        type="result", subtype="success", is_error=False, result="7", session_id=SESSION,
        total_cost_usd=0.0421,
        usage={"input_tokens": 12, "output_tokens": 340, "cache_read_input_tokens": 15210,
               "cache_creation_input_tokens": 2048},
    )  # fmt: skip
    cli.script_attempts({"stdout": [claude_run("")[0], result_line], "exit": 0})
    result = await cli.run("claude-code")
    assert result.outcome is Outcome.COMPLETED and result.stdout_tail == "7"
    assert (result.cost_usd, result.input_tokens, result.output_tokens) == (0.0421, 12, 340)
    assert (result.cache_read_tokens, result.cache_write_tokens) == (15210, 2048)
    assert result.session_id == SESSION


async def test_opencode_sums_the_cost_of_every_step(cli: FakeCli) -> None:
    def step(cost: float, tokens_in: int, tokens_out: int) -> str:
        part = {"type": "step-finish", "reason": "stop", "cost": cost,
                "tokens": {"input": tokens_in, "output": tokens_out, "reasoning": 0,
                           "cache": {"read": 100, "write": 0}}}  # fmt: skip
        return jl(type="step_finish", timestamp=1, sessionID="ses_1ea551140ffedVQFo35xGxPtJ8",
                  part=part)  # fmt: skip

    text = jl(type="text", timestamp=1, sessionID="ses_1ea551140ffedVQFo35xGxPtJ8",
              part={"type": "text", "text": "7"})  # fmt: skip
    cli.script_attempts({"stdout": [step(0.01, 1000, 50), text, step(0.0025, 300, 20)]})
    result = await cli.run("opencode")
    assert result.stdout_tail == "7"
    assert result.cost_usd == pytest.approx(0.0125)
    assert (result.input_tokens, result.output_tokens, result.cache_read_tokens) == (1300, 70, 200)
    assert result.session_id == "ses_1ea551140ffedVQFo35xGxPtJ8"


async def test_codex_tokens_and_answer(cli: FakeCli) -> None:
    cli.script_attempts({"stdout": [
        *codex_started(),
        jl(type="item.completed", item={"id": "item_0", "type": "reasoning", "text": "thinking"}),
        jl(type="item.completed", item={"id": "item_1", "type": "agent_message", "text": "7"}),
        jl(type="turn.completed",
           usage={"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122}),
    ]})  # fmt: skip
    result = await cli.run("codex-cli")
    assert result.stdout_tail == "7"
    assert (result.input_tokens, result.output_tokens, result.cache_read_tokens) == (
        24763, 122, 24448,
    )  # fmt: skip
    assert result.cost_usd is None  # codex reports no cost


async def test_gemini_answer_is_the_streamed_assistant_text(cli: FakeCli) -> None:
    cli.script_attempts({"stdout": [
        gemini_failure("x", "y")[0],
        jl(type="message", role="assistant", content="There are ", delta=True),
        jl(type="message", role="assistant", content="7 directories.", delta=True),
        jl(type="result", status="success",
           stats={"total_tokens": 530, "input_tokens": 500, "output_tokens": 30, "cached": 200,
                  "input": 300, "duration_ms": 1200, "tool_calls": 0}),
    ]})  # fmt: skip
    result = await cli.run("gemini-cli")
    assert result.outcome is Outcome.COMPLETED
    assert result.stdout_tail == "There are 7 directories."
    assert (result.input_tokens, result.output_tokens, result.cache_read_tokens) == (500, 30, 200)


async def test_a_failed_run_still_reports_what_it_cost(cli: FakeCli) -> None:
    line = jl(type="result", subtype="error_max_turns", is_error=True, session_id=SESSION,
              total_cost_usd=0.73, usage={"input_tokens": 9000, "output_tokens": 800})  # fmt: skip
    cli.script_attempts({"stdout": [line], "exit": 1})
    result = await cli.run("claude-code")
    assert result.outcome is Outcome.FAILED
    assert (result.cost_usd, result.input_tokens, result.output_tokens) == (0.73, 9000, 800)

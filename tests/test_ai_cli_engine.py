"""The built-in AI CLI profiles through a real conductor (issue 13): fake CLIs print what the
real ones print when an account runs out, in the real stream and format; the engine turns it
into the right wait (against a frozen clock), a billing stop, a pool-wide hold, a resumed
session, and cost totals with a limit. Tools are called through an MCP client where the
answer is what an agent reads."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ai_cli_fakes import (
    IN_2H,
    LISBON,
    LOS_ANGELES,
    NEW_YORK,
    SANTIAGO,
    SIX_HOURS,
    SUCCESS,
    TASK,
    TOKYO,
    Fakes,
    T,
    Wording,
    claude_says,
    codex_says,
    fakes,
    frozen,
    sheet_waiting,
)
from cli_streams import (
    PLUS_LIMIT,
    SESSION,
    claude_rejected,
    claude_run,
    gemini_failure,
    gemini_json,
    gemini_json_error,
    jl,
)
from helpers import wait_for_job

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import (
    ErrorCategory,
    JobStatus,
    Outcome,
    SheetStatus,
    WaitingReason,
    utcnow,
)

pytestmark = pytest.mark.anyio
__all__ = ["fakes"]  # fixture used by name below


WORDINGS = [
    Wording("claude-clock-in-its-zone", "claude-code",
            claude_says("You've hit your limit · resets 1pm (Europe/Lisbon)"),
            T, NEW_YORK, datetime(2030, 3, 12, 13, 0, tzinfo=LISBON)),
    Wording("claude-tomorrow-in-its-zone", "claude-code",
            claude_says("You've hit your limit · resets 1am (Europe/Lisbon)"),
            datetime(2030, 3, 12, 23, 30, tzinfo=UTC), NEW_YORK,
            datetime(2030, 3, 13, 1, 0, tzinfo=LISBON)),
    # 23:30 in Tokyo while it is still the 12th in UTC: "2am" is tomorrow there.
    Wording("claude-tomorrow-in-the-machine-zone", "claude-code",
            claude_says("You've hit your session limit · resets 2am"),
            datetime(2030, 3, 12, 14, 30, tzinfo=UTC), TOKYO,
            datetime(2030, 3, 13, 2, 0, tzinfo=TOKYO)),
    Wording("claude-dated", "claude-code",
            claude_says("You've hit your limit · resets Apr 23 at 3pm (America/New_York)"),
            datetime(2030, 4, 23, 14, 0, tzinfo=UTC), UTC,
            datetime(2030, 4, 23, 15, 0, tzinfo=NEW_YORK)),
    Wording("claude-epoch", "claude-code",
            claude_says(f"Claude AI usage limit reached|{IN_2H}"),
            T, UTC, T + timedelta(hours=2)),
    Wording("claude-limit-will-reset-at", "claude-code",
            claude_says("Claude usage limit reached. Your limit will reset at 3pm "
                        "(America/Santiago)."),
            datetime(2030, 3, 12, 14, 0, tzinfo=UTC), UTC,
            datetime(2030, 3, 12, 15, 0, tzinfo=SANTIAGO)),
    # The stream-json event is exact; the prose beside it is rounded to the hour.
    Wording("claude-rejected-event", "claude-code",
            claude_says("You've hit your limit · resets 2pm (Asia/Shanghai)",
                        extra=[claude_rejected(int((T + timedelta(minutes=95)).timestamp()))]),
            T, UTC, T + timedelta(minutes=95)),
    # A zone abbreviation names its offset (13:00 at -8), not the machine's zone.
    Wording("claude-clock-in-an-abbreviated-zone", "claude-code",
            claude_says("You've hit your limit · resets 1pm (PST)"),
            datetime(2030, 3, 12, 18, 0, tzinfo=UTC), NEW_YORK,  # 14:00 in New York
            datetime(2030, 3, 12, 21, 0, tzinfo=UTC)),
    # A reset 22.5 h away is capped by max_rate_limit_wait_seconds.
    Wording("claude-capped", "claude-code",
            claude_says("You've hit your limit · resets 1pm (Europe/Lisbon)"),
            datetime(2030, 3, 12, 14, 30, tzinfo=UTC), UTC,
            datetime(2030, 3, 12, 14, 30, tzinfo=UTC) + SIX_HOURS),
    Wording("codex-try-again-at-local-time", "codex-cli",
            codex_says(PLUS_LIMIT.format("12:16 PM")),
            datetime(2030, 3, 12, 15, 0, tzinfo=UTC), LOS_ANGELES,
            datetime(2030, 3, 12, 12, 16, tzinfo=LOS_ANGELES)),
    Wording("codex-try-again-at-p.m.", "codex-cli",
            codex_says(PLUS_LIMIT.format("3:05 p.m")),  # the sentence's full stop follows
            datetime(2030, 3, 12, 20, 0, tzinfo=UTC), LOS_ANGELES,
            datetime(2030, 3, 12, 15, 5, tzinfo=LOS_ANGELES)),
    Wording("codex-try-again-at-a-time-past-is-tomorrow", "codex-cli",
            codex_says(PLUS_LIMIT.format("1:05 AM")),
            datetime(2030, 3, 13, 6, 0, tzinfo=UTC), LOS_ANGELES,  # 23:00 on the 12th there
            datetime(2030, 3, 13, 1, 5, tzinfo=LOS_ANGELES)),
    Wording("codex-try-again-at-a-date", "codex-cli",
            codex_says(PLUS_LIMIT.format("Jul 9th, 2030 1:47 AM")),
            datetime(2030, 7, 9, 6, 0, tzinfo=UTC), LOS_ANGELES,  # 23:00 the day before there
            datetime(2030, 7, 9, 1, 47, tzinfo=LOS_ANGELES)),
    Wording("codex-try-again-in-days-capped", "codex-cli",
            codex_says("You've hit your usage limit. Upgrade to Pro "
                       "(https://openai.com/chatgpt/pricing) or try again in 2 days 17 hours "
                       "14 minutes."),
            T, UTC, T + SIX_HOURS),
    Wording("gemini-quota-will-reset-after", "gemini-cli",
            {"stdout": gemini_failure("RetryableQuotaError", "Your quota will reset after 5s.",
                                      TASK), "exit": 1},
            T, UTC, T + timedelta(seconds=5)),
    Wording("gemini-resource-exhausted-retry-in", "gemini-cli",
            {"stdout": gemini_failure("Error", "API Error", TASK), "exit": 1,
             "stderr": '[API Error: got status: 429 Too Many Requests. {"error":{"code":429,'
                       '"message":"Resource has been exhausted (e.g. check quota). Please retry '
                       'in 15.0s.","status":"RESOURCE_EXHAUSTED"}}]\n'},
            T, UTC, T + timedelta(seconds=15)),
    Wording("gemini-daily-quota-midnight-pacific", "gemini-cli",
            {"stdout": gemini_failure("TerminalQuotaError",
                                      "You have exhausted your daily quota on this model.",
                                      TASK), "exit": 1},
            datetime(2030, 3, 12, 3, 0, tzinfo=UTC), NEW_YORK,
            datetime(2030, 3, 12, 0, 0, tzinfo=LOS_ANGELES)),
]  # fmt: skip


def other_ai(held: str) -> str:
    return "codex-cli" if held == "claude-code" else "claude-code"


async def others_run_meanwhile(c: Conductor, fakes: Fakes, held: str, job_id: str) -> None:
    """Neither another AI CLI's profile nor a shell job is held by `held`'s limit: both run
    to the end while its sheet waits."""
    other = other_ai(held)
    ai = await c.submit_job(spec=fakes.spec("other-ai", other, SUCCESS[other]))
    shell = await c.submit_job(spec={"name": "other", "sheets": [{"prompt": "true"}]})
    for job in (ai, shell):
        done = await wait_for_job(c, job.job_id)
        assert done.status is JobStatus.COMPLETED and done.sheets[0].attempts == 1
    assert len(fakes.calls("other-ai")) == 1
    assert (await c.get_job(job_id)).sheets[0].status is SheetStatus.WAITING
    assert [h.instrument for h in (await c.status()).rate_limits] == [held]


@pytest.mark.parametrize("case", WORDINGS, ids=lambda c: c.id)
async def test_a_reported_reset_is_the_wait(
    fakes: Fakes, make_config: Callable[..., PodiumConfig], case: Wording
) -> None:
    fakes.install(case.base)
    fakes.install(other_ai(case.base))
    config = make_config()
    assert config.max_rate_limit_wait_seconds == 21600
    async with Conductor(config, clock=frozen(case.now), zone=case.zone) as c:
        limited = await c.submit_job(
            spec=fakes.spec("limited", case.base, case.attempt, SUCCESS[case.base])
        )
        await sheet_waiting(c, limited.job_id)
        sheet = (await c.get_job(limited.job_id)).sheets[0]
        assert sheet.waiting_reason is WaitingReason.RATE_LIMIT
        assert sheet.waiting_until == case.until.astimezone(UTC)
        assert sheet.attempts == 1 and sheet.error_category is ErrorCategory.RATE_LIMITED
        holds = (await c.status()).rate_limits
        assert [(h.instrument, h.until, h.pool) for h in holds] == [
            (case.base, case.until.astimezone(UTC), None)
        ]

        await others_run_meanwhile(c, fakes, case.base, limited.job_id)

        # The wait spent no retry: with max_retries 0 the sheet still runs again.
        assert await c.clear_rate_limits(case.base) == [case.base]
        done = await wait_for_job(c, limited.job_id)
        assert done.status is JobStatus.COMPLETED and done.sheets[0].attempts == 2
        history, _ = await c.get_execution_history(limited.job_id)
        assert [h.outcome for h in history] == [Outcome.RATE_LIMITED, Outcome.COMPLETED]


async def test_gemini_json_output_waits_resumes_and_reads_the_answer(
    fakes: Fakes, make_config: Callable[..., PodiumConfig]
) -> None:
    """`gemini -p --output-format json` (issue 13's form), as a user profile of the built-in
    with only its arguments changed: the limit is the wait, the single JSON result is the
    answer, session and tokens."""
    fakes.install("gemini-json", "gemini-cli", args=["--output-format", "json"])
    fakes.install("claude-code")
    limited = {
        "stderr": gemini_json_error("RetryableQuotaError", "Your quota will reset after 5s."),
        "exit": 1,
    }
    ok = {"stdout": gemini_json("7", tokens=(500, 30, 200))}  # fmt: skip
    async with Conductor(make_config(), clock=frozen(T)) as c:
        job = await c.submit_job(spec=fakes.spec("limited", "gemini-json", limited, ok))
        await sheet_waiting(c, job.job_id)
        sheet = (await c.get_job(job.job_id)).sheets[0]
        assert sheet.waiting_reason is WaitingReason.RATE_LIMIT
        assert sheet.waiting_until == T + timedelta(seconds=5) and sheet.attempts == 1
        await others_run_meanwhile(c, fakes, "gemini-json", job.job_id)
        assert await c.clear_rate_limits("gemini-json") == ["gemini-json"]
        done = await wait_for_job(c, job.job_id)
        assert done.status is JobStatus.COMPLETED and done.sheets[0].attempts == 2
        assert done.sheets[0].output_tail == "7"
        history, _ = await c.get_execution_history(job.job_id)
        assert [h.outcome for h in history] == [Outcome.RATE_LIMITED, Outcome.COMPLETED]
        last = history[-1]
        assert last.session_id == SESSION
        assert (last.input_tokens, last.output_tokens) == (500, 30)
    assert [call["argv"] for call in fakes.calls("limited")] == [["--output-format", "json"]] * 2


QWEN_QUOTA = "429 Free allocated quota exceeded."
OPENCODE_SESSION = "ses_1ea551140ffedVQFo35xGxPtJ8"
BACKOFFS = [
    # anthropics/claude-code #79500: the error on stdout, is_error true, exit code 0.
    ("claude-api-error-exit-0", "claude-code",
     {"stdout": claude_run("API Error: Rate limit reached"), "exit": 0}),
    # QwenLM/qwen-code #1742: the free tier's daily quota, in the stream-json result.
    ("qwen-free-quota-exceeded", "qwen-code", {"stdout": [
        jl(type="system", subtype="session_start", uuid="u1", session_id=SESSION),
        jl(type="result", subtype="error_during_execution", uuid="u2", session_id=SESSION,
           is_error=True, duration_ms=300, duration_api_ms=300, num_turns=0,
           usage={"input_tokens": 0, "output_tokens": 0}, permission_denials=[],
           error={"type": "APIError", "message": QWEN_QUOTA}),
    ], "exit": 1}),
    # opencode run --format json: a session.error is one `error` event, then exit code 1
    # (packages/opencode/src/cli/cmd/run.ts); the text from anomalyco/opencode #47129.
    ("opencode-rate-limit-exceeded", "opencode", {"stdout": [
        jl(type="error", timestamp=1773138600000, sessionID=OPENCODE_SESSION,
           error={"name": "APIError", "data": {"message": "Rate limit exceeded",
                                                "statusCode": 429, "isRetryable": True}}),
    ], "exit": 1}),
    # goose's ProviderError::RateLimitExceeded, printed on stderr by `goose run`.
    ("goose-rate-limit-exceeded", "goose",
     {"stderr": "Error: Rate limit exceeded: 429 Too Many Requests\n", "exit": 1}),
]  # fmt: skip
BACKOFF_SUCCESS = {
    **SUCCESS,
    "qwen-code": {"stdout": [jl(type="result", subtype="success", is_error=False, result="7",
                                session_id=SESSION, duration_ms=10)]},
    "goose": {"stdout": ["7"]},
    "opencode": {"stdout": [jl(type="text", timestamp=1773138600000, sessionID=OPENCODE_SESSION,
                               part={"type": "text", "text": "7"})]},
}  # fmt: skip


@pytest.mark.parametrize(("base", "attempt"), [b[1:] for b in BACKOFFS],
                         ids=[b[0] for b in BACKOFFS])  # fmt: skip
async def test_a_limit_without_a_reset_backs_off_from_the_real_time(
    fakes: Fakes, make_config: Callable[..., PodiumConfig], base: str, attempt: dict[str, Any]
) -> None:
    fakes.install(base)
    fakes.install(other_ai(base))
    spec = fakes.spec("backoff", base, attempt, BACKOFF_SUCCESS[base])
    spec["retry"] = {"max_retries": 0, "base_delay_seconds": 30, "jitter": False}
    async with Conductor(make_config(), clock=frozen(T)) as c:
        before = utcnow()
        job = await c.submit_job(spec=spec)
        await sheet_waiting(c, job.job_id)
        after = utcnow()
        sheet = (await c.get_job(job.job_id)).sheets[0]
        assert sheet.waiting_reason is WaitingReason.RATE_LIMIT
        assert sheet.error_category is ErrorCategory.RATE_LIMITED and sheet.attempts == 1
        assert sheet.waiting_until is not None
        # The first backoff step (no jitter), from the real time: no moment was named.
        assert before + timedelta(seconds=30) <= sheet.waiting_until
        assert sheet.waiting_until <= after + timedelta(seconds=30)
        (hold,) = (await c.status()).rate_limits
        assert (hold.instrument, hold.until) == (base, sheet.waiting_until)

        await others_run_meanwhile(c, fakes, base, job.job_id)

        # No retry spent: with max_retries 0 the sheet still runs again.
        assert await c.clear_rate_limits(base) == [base]
        done = await wait_for_job(c, job.job_id)
        assert done.status is JobStatus.COMPLETED and done.sheets[0].attempts == 2
        history, _ = await c.get_execution_history(job.job_id)
        assert [h.outcome for h in history] == [Outcome.RATE_LIMITED, Outcome.COMPLETED]
    assert len(fakes.calls("backoff")) == 2


BILLING = [
    ("amp", {"stdout": [
        jl(type="system", subtype="init", cwd="/w", session_id="T-2775dc92", tools=[],
           mcp_servers=[]),
        jl(type="result", subtype="error_during_execution", duration_ms=120, is_error=True,
           num_turns=0, error="Out of Credits", session_id="T-2775dc92"),
    ], "exit": 1}),
    ("codex-cli", codex_says("Quota exceeded. Check your plan and billing details.")),
    ("claude-code", claude_says("Credit balance is too low")),
    # cursor/cursor #3703: the plan's monthly allowance, on stderr only, non-zero exit.
    ("cursor-agent", {"stderr": (
        "Error: You've hit your usage limit\n"
        "  Get Cursor Pro for more Agent usage, unlimited Tab, and more.\n"
        "  fallbackModel: \n"
        "  spendLimitHit: false\n"
        "  chatMessage: *You've hit your free requests limit. Your usage limits will reset "
        "when your monthly cycle ends on 11/17/2025.*\n"), "exit": 1}),
]  # fmt: skip


@pytest.mark.parametrize(("base", "attempt"), BILLING, ids=[b for b, _ in BILLING])
async def test_out_of_credits_fails_at_once_with_its_category(
    fakes: Fakes, make_config: Callable[..., PodiumConfig], base: str, attempt: dict[str, Any]
) -> None:
    fakes.install(base)
    spec = fakes.spec("broke", base, attempt)
    spec["retry"] = {"max_retries": 3, "base_delay_seconds": 0.05}
    async with Conductor(make_config(), clock=frozen(T)) as c:
        job = await c.submit_job(spec=spec)
        done = await wait_for_job(c, job.job_id)
        assert done.status is JobStatus.FAILED
        sheet = done.sheets[0]
        assert sheet.error_category is ErrorCategory.BILLING
        assert sheet.attempts == 1  # no retry: waiting cannot buy credits
        assert (await c.status()).rate_limits == []
        (entry,), _ = await c.get_execution_history(job.job_id)
        assert entry.outcome is Outcome.FAILED
        assert entry.error_category is ErrorCategory.BILLING
        (failing,) = (await c.diagnose(job.job_id)).failing
        assert "out of credits" in failing.cause
    assert len(fakes.calls("broke")) == 1

"""The built-in AI CLI profiles through a real conductor (issue 13): fake CLIs print what the
real ones print when an account runs out, in the real stream and format; the engine turns it
into the right wait (against a frozen clock), a billing stop, a pool-wide hold, a resumed
session, and cost totals with a limit. Tools are called through an MCP client where the
answer is what an agent reads."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from cli_streams import (
    PLUS_LIMIT,
    SESSION,
    claude_init,
    claude_rejected,
    claude_result,
    claude_run,
    codex_failure,
    codex_success,
    gemini_failure,
    gemini_json,
    gemini_json_error,
    jl,
    write_fake_cli,
)
from helpers import wait_for_job, wait_until
from mcp import Client
from mcp_types import TextContent
from test_transports import PODIUM, server_env

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.instruments.catalog import builtin_profiles
from podium.core.models import (
    ErrorCategory,
    JobStatus,
    Outcome,
    PauseReason,
    SheetStatus,
    WaitingReason,
    utcnow,
)
from podium.core.runner.assembly import CHECKS_HEADER
from podium.core.runner.prompts import CONTINUE_NOTE
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio

TASK = "Count the directories in listing.txt and write the number to count.txt"
LISBON = ZoneInfo("Europe/Lisbon")
NEW_YORK = ZoneInfo("America/New_York")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
TOKYO = ZoneInfo("Asia/Tokyo")
SANTIAGO = ZoneInfo("America/Santiago")
SIX_HOURS = timedelta(seconds=21600)  # max_rate_limit_wait_seconds by default


class Fakes:
    """User profiles that are the built-ins with a fake executable, and per-job scripts."""

    def __init__(self, home: Path, tmp_path: Path) -> None:
        self.home = home
        self.tmp = tmp_path
        self.script = write_fake_cli(tmp_path / "fake-cli")
        (home / "instruments").mkdir(exist_ok=True)
        self._builtins = builtin_profiles()

    def install(self, name: str, base: str | None = None, **update: Any) -> None:
        profile = self._builtins[base or name].model_copy(
            update={"name": name, "executable": str(self.script), **update}
        )
        data = profile.model_dump(mode="json", exclude_none=True)
        (self.home / "instruments" / f"{name}.yaml").write_text(yaml.safe_dump(data))

    def env(self, tag: str, *attempts: dict[str, Any]) -> dict[str, str]:
        """The environment a sheet needs to replay `attempts` (one per call)."""
        scenario = self.tmp / f"{tag}.scenario.json"
        scenario.write_text(json.dumps(list(attempts)))
        record = self.tmp / f"{tag}.record.jsonl"
        record.write_text("")
        return {"FAKE_SCENARIO": str(scenario), "FAKE_RECORD": str(record)}

    def calls(self, tag: str) -> list[dict[str, Any]]:
        lines = (self.tmp / f"{tag}.record.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def spec(
        self, tag: str, instrument: str, *attempts: dict[str, Any], **fields: Any
    ) -> dict[str, Any]:
        sheet = {"prompt": TASK, **fields.pop("sheet", {})}
        config = {"env": self.env(tag, *attempts), **fields.pop("config", {})}
        return {
            "name": tag,
            "instrument": instrument,
            "instrument_config": config,
            "retry": {"max_retries": 0, "base_delay_seconds": 0.05, "jitter": False},
            "sheets": [sheet],
            **fields,
        }


@pytest.fixture
def fakes(home: Path, tmp_path: Path) -> Fakes:
    return Fakes(home, tmp_path)


def frozen(now: datetime) -> Callable[[], datetime]:
    return lambda: now


async def sheet_waiting(conductor: Conductor, job_id: str) -> None:
    async def waiting() -> bool:
        sheet = (await conductor.get_job(job_id)).sheets[0]
        return sheet.status is SheetStatus.WAITING

    await wait_until(waiting)


@dataclass(frozen=True)
class Wording:
    """One reported wording, as the CLI prints it, and the wait it must give."""

    id: str
    base: str
    attempt: dict[str, Any]
    now: datetime
    zone: tzinfo
    until: datetime


def claude_says(text: str, *, extra: list[str] | None = None) -> dict[str, Any]:
    return {"stdout": claude_run(text, extra=extra), "exit": 1}


def codex_says(text: str) -> dict[str, Any]:
    return {"stdout": codex_failure(text), "exit": 1}


T = datetime(2030, 3, 12, 10, 30, tzinfo=UTC)  # a Tuesday, after US DST began, before EU's
IN_2H = int((T + timedelta(hours=2)).timestamp())
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
SUCCESS = {
    "claude-code": {"stdout": [claude_init(), claude_result("7")]},
    "codex-cli": {"stdout": codex_success("7")},
    "gemini-cli": {"stdout": [gemini_failure("x", "y")[0],
                              jl(type="message", role="assistant", content="7", delta=True),
                              jl(type="result", status="success", stats={})]},
}  # fmt: skip


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


# ----------------------------------------------------------------------------- MCP harness


@asynccontextmanager
async def mcp_client(conductor: Conductor) -> AsyncIterator[Client]:
    server = PodiumServer(conductor)
    async with server.running(), Client(server.mcp) as client:
        yield client


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def refused(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    return "\n".join(b.text for b in result.content if isinstance(b, TextContent))


async def history_of(client: Client, job_id: str) -> list[dict[str, Any]]:
    result = await client.read_resource(f"podium://jobs/{job_id}/history")
    text = getattr(result.contents[0], "text", None)
    assert isinstance(text, str)
    entries: list[dict[str, Any]] = json.loads(text)["entries"]
    return entries


# ----------------------------------------------------------------------------- quota pools


async def test_a_limit_on_one_profile_of_a_pool_holds_the_others(
    fakes: Fakes, make_config: Callable[..., PodiumConfig]
) -> None:
    # Two claude-code profiles on one account (different models), and one outside the pool.
    fakes.install("claude-opus", "claude-code", quota_pool="anthropic-max")
    fakes.install("claude-sonnet", "claude-code", quota_pool="anthropic-max")
    fakes.install("claude-team", "claude-code")
    until = T + timedelta(hours=2)
    limit = claude_says(f"Claude AI usage limit reached|{int(until.timestamp())}")
    ok = SUCCESS["claude-code"]
    async with Conductor(make_config(), clock=frozen(T)) as c, mcp_client(c) as client:
        first = await c.submit_job(spec=fakes.spec("opus", "claude-opus", limit, ok))
        await sheet_waiting(c, first.job_id)
        held = await c.submit_job(spec=fakes.spec("sonnet", "claude-sonnet", ok))
        apart = await c.submit_job(spec=fakes.spec("team", "claude-team", ok))
        assert (await wait_for_job(c, apart.job_id)).status is JobStatus.COMPLETED

        status = await call(client, "status", {})
        assert [(r["instrument"], r["pool"]) for r in status["rate_limits"]] == [
            ("claude-opus", "anthropic-max"),
            ("claude-sonnet", "anthropic-max"),
        ]
        assert {r["until"] for r in status["rate_limits"]} == {"2030-03-12T12:30:00.000000Z"}
        detail = await call(client, "status", {"job_id": held.job_id})
        assert detail["sheets"][0]["attempts"] == 0  # held back by the pool
        assert fakes.calls("sonnet") == []

        cleared = await call(client, "clear_rate_limits", {"instrument": "claude-sonnet"})
        assert cleared["cleared"] == ["claude-opus", "claude-sonnet"]
        for job in (first, held):
            assert (await wait_for_job(c, job.job_id)).status is JobStatus.COMPLETED
    assert len(fakes.calls("sonnet")) == 1


async def test_a_profile_leaving_its_pool_on_reload_is_no_longer_held(
    fakes: Fakes, make_config: Callable[..., PodiumConfig]
) -> None:
    fakes.install("claude-opus", "claude-code", quota_pool="anthropic-max")
    fakes.install("claude-sonnet", "claude-code", quota_pool="anthropic-max")
    limit = claude_says(f"Claude AI usage limit reached|{IN_2H}")
    ok = SUCCESS["claude-code"]
    async with Conductor(make_config(), clock=frozen(T)) as c:
        first = await c.submit_job(spec=fakes.spec("opus", "claude-opus", limit, ok))
        await sheet_waiting(c, first.job_id)
        held = await c.submit_job(spec=fakes.spec("sonnet", "claude-sonnet", ok))
        assert (await c.get_job(held.job_id)).sheets[0].attempts == 0
        # Its own account now: the sheet it held back runs at once.
        fakes.install("claude-sonnet", "claude-code")
        await c.reload()
        assert (await wait_for_job(c, held.job_id)).status is JobStatus.COMPLETED
        assert (await c.get_job(first.job_id)).sheets[0].status is SheetStatus.WAITING
        assert [r.instrument for r in (await c.status()).rate_limits] == ["claude-opus"]
        await c.cancel_job(first.job_id)


# ----------------------------------------------------------------------------- sessions


async def test_a_timed_out_session_is_resumed_by_the_retry_after_a_restart(
    fakes: Fakes, make_config: Callable[..., PodiumConfig]
) -> None:
    fakes.install("claude-code")
    # The CLI reports its session at once, then works past the sheet's timeout.
    started = {"stdout": [claude_init()], "sleep": 30}
    spec = fakes.spec(
        "slow", "claude-code", started, SUCCESS["claude-code"], config={"timeout_seconds": 1}
    )
    # The backoff outlives the restart (a stored wait, issue 10 item 9): long enough for the
    # first conductor to stop before the retry, short enough for the second to run it.
    spec["retry"] = {"max_retries": 1, "base_delay_seconds": 3, "jitter": False}
    async with Conductor(make_config()) as c:
        job = await c.submit_job(spec=spec)
        await sheet_waiting(c, job.job_id)  # backing off before its retry
        (entry,), _ = await c.get_execution_history(job.job_id)
        assert entry.outcome is Outcome.TIMEOUT and entry.session_id == SESSION
    # A new conductor on the same home knows the session from the store alone.
    async with Conductor(make_config()) as again:
        assert (await again.get_job(job.job_id)).status is JobStatus.PAUSED
        await again.resume_job(job.job_id)
        done = await wait_for_job(again, job.job_id)
        assert done.status is JobStatus.COMPLETED
        history, _ = await again.get_execution_history(job.job_id)
        assert history[-1].resumed_session_id == SESSION
    fresh, resumed = fakes.calls("slow")
    assert SESSION not in fresh["argv"]
    assert resumed["argv"] == ["-p", "--output-format", "stream-json", "--verbose",
                               "--resume", SESSION]  # fmt: skip
    assert resumed["stdin"].startswith(CONTINUE_NOTE) and resumed["stdin"].endswith(TASK)


async def test_a_validation_failure_retry_carries_the_feedback(
    fakes: Fakes, make_config: Callable[..., PodiumConfig]
) -> None:
    fakes.install("claude-code")
    fakes.install("goose")
    check = {"type": "content_regex", "path": "count.txt", "pattern": "^[0-9]+$"}
    wrong = {
        "stdout": [claude_init(), claude_result("I wrote it.")],
        "files": {"count.txt": "many"},
    }
    right = {"stdout": [claude_init(), claude_result("Fixed.")], "files": {"count.txt": "7"}}
    retry = {"max_retries": 1, "base_delay_seconds": 0.05, "jitter": False}
    claude = fakes.spec("claude", "claude-code", wrong, right, sheet={"validations": [check]})
    goose = fakes.spec(
        "goose",
        "goose",
        {"stdout": ["wrote it"], "files": {"count.txt": "many"}},
        {"stdout": ["fixed"], "files": {"count.txt": "7"}},
        sheet={"validations": [check]},
    )
    async with Conductor(make_config()) as c:
        jobs = [await c.submit_job(spec={**spec, "retry": retry}) for spec in (claude, goose)]
        for job in jobs:
            assert (await wait_for_job(c, job.job_id)).status is JobStatus.COMPLETED
    first, again = fakes.calls("claude")
    assert again["argv"][-2:] == ["--resume", SESSION]
    feedback, task = again["stdin"].split("\n\nThe original task, for reference:\n\n")
    # Prompt assembly (on by default) adds the checks the result must pass to the task.
    assembled = (
        f"{TASK}\n\n{CHECKS_HEADER}\n"
        "- the file count.txt has a match for the regular expression '^[0-9]+$'"
    )
    assert task == assembled and first["stdin"] == assembled
    assert feedback.startswith("Your previous run finished, but these checks")
    assert "content_regex" in feedback and "count.txt" in feedback
    checks, tail = feedback.split("\n\nThe end of what your previous run printed:\n")
    assert tail == "I wrote it."
    # goose cannot resume a session: the task goes again, the same feedback after it.
    _, goose_again = fakes.calls("goose")
    assert goose_again["stdin"] == (
        f"{assembled}\n\n{checks}\n\nThe end of what your previous run printed:\nwrote it"
    )
    assert goose_again["argv"] == ["run", "--no-session", "-i", "-"]


# ----------------------------------------------------------------------------- cost


def costly(cost: float, tokens: tuple[int, int]) -> dict[str, Any]:
    return {"stdout": [claude_init(), claude_result("done", cost=cost, tokens=tokens)]}


async def test_cost_totals_and_the_cost_limit(
    fakes: Fakes, make_config: Callable[..., PodiumConfig], home: Path
) -> None:
    fakes.install("claude-code")
    env = fakes.env("priced", costly(0.3, (1200, 80)))
    spec = {
        "name": "priced",
        "instrument": "claude-code",
        "instrument_config": {"env": env},
        "cost_limit_usd": 0.5,
        "sheets": [
            {"name": "one", "prompt": TASK},
            {"name": "two", "prompt": TASK, "depends_on": ["one"]},
            {"name": "three", "prompt": TASK, "depends_on": ["two"]},
        ],
    }
    async with Conductor(make_config()) as c, mcp_client(c) as client:
        job = await call(client, "submit_job", {"spec": spec})
        paused = await wait_for_job(c, job["job_id"], statuses=("paused",))
        assert paused.pause_reason is PauseReason.COST_LIMIT
        detail = await call(client, "status", {"job_id": job["job_id"]})
        # The second sheet's $0.30 took the total past $0.50: the third never started.
        assert detail["pause_reason"] == "cost_limit"
        assert [s["status"] for s in detail["sheets"]] == ["completed", "completed", "pending"]
        assert detail["cost_usd"] == pytest.approx(0.6)
        assert (detail["input_tokens"], detail["output_tokens"]) == (2400, 160)
        assert detail["cost_limit_usd"] == 0.5
        assert "cost_limit_usd" in detail["error"] and "$0.60" in detail["error"]
        entries = await history_of(client, job["job_id"])
        assert [(e["cost_usd"], e["input_tokens"], e["output_tokens"]) for e in entries] == [
            (0.3, 1200, 80),
            (0.3, 1200, 80),
        ]
        assert all(e["session_id"] == SESSION for e in entries)

        # Resuming under the same limit would only spend more; a higher one continues it.
        diagnosis = await call(client, "diagnose", {"job_id": job["job_id"]})
        assert diagnosis["pause_reason"] == "cost_limit"
        assert any("cost_limit_usd" in step["action"] for step in diagnosis["next_steps"])
        message = await refused(client, "resume", {"job_id": job["job_id"]})
        assert "cost_limit_usd" in message and "higher" in message
        assert (await c.get_job(job["job_id"])).status is JobStatus.PAUSED
        await call(
            client, "resume", {"job_id": job["job_id"], "spec": {**spec, "cost_limit_usd": 2}}
        )
        done = await wait_for_job(c, job["job_id"])
        assert done.status is JobStatus.COMPLETED
        final = await call(client, "status", {"job_id": job["job_id"]})
        assert final["cost_usd"] == pytest.approx(0.9) and final["input_tokens"] == 3600
        assert final["pause_reason"] is None and final["error"] is None
    # The CLI reads the same totals from the store.
    shown = subprocess.run(
        [PODIUM, "status", job["job_id"]],
        env=server_env(home),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    assert "cost $0.9000 of a $2 limit; tokens 3,600 in, 240 out" in shown.stdout


# ----------------------------------------------------------------------------- new profiles

THREAD = "T-2775dc92-90ed-4f85-8b73-8f9766029e83"
NEW_PROFILES = [
    # (profile, sheet settings, its first event, expected argv, expected argv of the resume)
    ("cursor-agent",
     {"model": "sonnet-4.5", "permission_mode": "plan", "extra_args": ["--sandbox", "enabled"]},
     jl(type="system", subtype="init", apiKeySource="login", cwd="/w", session_id=SESSION,
        model="Claude 4.5 Sonnet", permissionMode="default"),
     ["--print", "--output-format", "stream-json", "--trust", "--model", "sonnet-4.5",
      "--mode", "plan", "--sandbox", "enabled"],
     ["--print", "--output-format", "stream-json", "--trust", "--model", "sonnet-4.5",
      "--mode", "plan", "--sandbox", "enabled", "--resume", SESSION]),
    ("qwen-code",
     {"model": "qwen3-coder-plus", "permission_mode": "accept-edits",
      "extra_args": ["--max-session-turns", "30"]},
     jl(type="system", subtype="session_start", uuid="u1", session_id=SESSION),
     ["--output-format", "stream-json", "--model", "qwen3-coder-plus",
      "--approval-mode", "auto-edit", "--max-session-turns", "30"],
     ["--output-format", "stream-json", "--model", "qwen3-coder-plus",
      "--approval-mode", "auto-edit", "--max-session-turns", "30", "--resume", SESSION]),
    ("amp",
     {"model": "claude-sonnet-4-5", "permission_mode": "bypass", "extra_args": ["--mode", "rush"]},
     jl(type="system", subtype="init", cwd="/w", session_id=THREAD, tools=[], mcp_servers=[]),
     ["--execute", "--stream-json", "--model", "claude-sonnet-4-5", "--dangerously-allow-all",
      "--mode", "rush"],
     ["threads", "continue", THREAD, "--execute", "--stream-json", "--model",
      "claude-sonnet-4-5", "--dangerously-allow-all", "--mode", "rush"]),
]  # fmt: skip


async def test_new_profiles_command_lines_through_the_engine(
    fakes: Fakes, make_config: Callable[..., PodiumConfig]
) -> None:
    """cursor-agent, qwen-code and amp: the exact command line a sheet runs with its model,
    permission mode and extra arguments, and the one its retry runs after a timeout."""
    jobs = {}
    for name, *_ in NEW_PROFILES:
        fakes.install(name)
    async with Conductor(make_config()) as c:
        for name, settings, first_event, _, _ in NEW_PROFILES:
            answer = jl(type="result", subtype="success", is_error=False, result="7",
                        session_id=SESSION, duration_ms=10)  # fmt: skip
            spec = fakes.spec(
                name,
                name,
                {"stdout": [first_event], "sleep": 30},
                {"stdout": [first_event, answer]},
                config={**settings, "timeout_seconds": 1},
            )
            spec["retry"] = {"max_retries": 1, "base_delay_seconds": 0.05, "jitter": False}
            jobs[name] = (await c.submit_job(spec=spec)).job_id
        for name, job_id in jobs.items():
            done = await wait_for_job(c, job_id)
            assert done.status is JobStatus.COMPLETED, name
            assert done.sheets[0].output_tail == "7", name
    for name, _, _, argv, resume_argv in NEW_PROFILES:
        fresh, resumed = fakes.calls(name)
        assert fresh["argv"] == argv, name
        assert fresh["stdin"] == TASK, name
        assert resumed["argv"] == resume_argv, name
        assert resumed["stdin"].startswith(CONTINUE_NOTE), name

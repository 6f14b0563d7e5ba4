"""Failure wordings the real CLIs print that the first profiles missed, each quoted from the
CLI's own issue tracker, through the built-in profiles and a fake CLI printing them in the
CLI's stream: each must land in the class that decides what Podium does next (auth and
billing stop and move to a fallback, transient retries, rate limits wait)."""

from __future__ import annotations

import pytest
from cli_streams import claude_run, codex_failure, gemini_failure
from test_cli_wordings import FakeCli, builtins, cli

from podium.core.models import ErrorCategory, Outcome

pytestmark = pytest.mark.anyio
__all__ = ["builtins", "cli"]  # fixtures used by name below


@pytest.mark.parametrize(
    ("text", "category"),
    [
        # openai/codex #26497, #12764: the Responses API refused the login.
        ('unexpected status 401 Unauthorized: {"detail":"Unauthorized"}, url: '
         "https://chatgpt.com/backend-api/codex/responses", ErrorCategory.AUTH),
        # openai/codex #35316: the backend was down for everyone for a while.
        ("unexpected status 503 Service Unavailable: Service Unavailable, url: "
         "https://chatgpt.com/backend-api/codex/responses", ErrorCategory.TRANSIENT),
    ],
)  # fmt: skip
async def test_codex_unexpected_status(cli: FakeCli, text: str, category: ErrorCategory) -> None:
    cli.script_attempts({"stdout": codex_failure(text), "exit": 1})
    result = await cli.run("codex-cli")
    assert result.outcome is Outcome.FAILED
    assert result.error_category is category


@pytest.mark.parametrize(
    ("text", "category"),
    [
        # anthropics/claude-code #46277, #31537: Claude Code's own words for an empty
        # API-key balance (the API's are "Your credit balance is too low ...").
        ("Credit balance too low · Add funds: https://platform.claude.com/settings/billing",
         ErrorCategory.BILLING),
        # anthropics/claude-code #47130, #29905.
        ("Your organization does not have access to Claude. Please login again or contact "
         "your administrator.", ErrorCategory.AUTH),
    ],
)  # fmt: skip
async def test_claude_account_wordings(cli: FakeCli, text: str, category: ErrorCategory) -> None:
    cli.script_attempts({"stdout": claude_run(text), "exit": 1})
    result = await cli.run("claude-code")
    assert result.outcome is Outcome.FAILED
    assert result.error_category is category


async def test_gemini_retry_warning_with_status_429_is_a_rate_limit(cli: FakeCli) -> None:
    # google-gemini/gemini-cli retry.ts warns on each try; the API's own message for the
    # status is "Resource has been exhausted (e.g. check quota)." (no RESOURCE_EXHAUSTED).
    stderr = (
        "Attempt 1 failed with status 429. Retrying with backoff... GaxiosError: "
        "Resource has been exhausted (e.g. check quota).\n"
    )
    cli.script_attempts({"stdout": gemini_failure("Error", "request failed"), "stderr": stderr,
                         "exit": 1})  # fmt: skip
    result = await cli.run("gemini-cli")
    assert result.outcome is Outcome.RATE_LIMITED
    assert result.error_category is ErrorCategory.RATE_LIMITED

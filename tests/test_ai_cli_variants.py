"""Issue 13's Must-show items with inputs unlike its own tests: resets shortly past midnight
UTC, a codex quota pool, a transient failure then a failed check resumed on codex, and the
prompt left alone with assembly off even when the CLI's session is resumed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ai_cli_fakes import TASK, Fakes, claude_says, codex_says, frozen, sheet_waiting
from ai_cli_fakes import fakes as fakes
from cli_streams import SESSION, claude_init, claude_result, codex_success, jl
from helpers import wait_for_job

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import ErrorCategory, JobStatus, SheetStatus

pytestmark = pytest.mark.anyio

THREAD = "0199a213-81c0-7800-8aa1-bbab2a035a53"  # codex_failure's thread.started
CLAUDE_OK = {"stdout": [claude_init(), claude_result("7")]}
CODEX_OK = {"stdout": codex_success("7")}
NEW_YEAR = datetime(2031, 1, 1, tzinfo=UTC)
MIDNIGHT = [
    # Two minutes before midnight UTC: "12:10am" is ten past, tomorrow.
    ("claude-code", claude_says("You've hit your limit · resets 12:10am (UTC)"),
     NEW_YEAR - timedelta(minutes=2), NEW_YEAR + timedelta(minutes=10)),
    # Three minutes past: the same words mean seven minutes from now, not tomorrow.
    ("claude-code", claude_says("You've hit your limit · resets 12:10am (UTC)"),
     NEW_YEAR + timedelta(minutes=3), NEW_YEAR + timedelta(minutes=10)),
    ("codex-cli", codex_says("You've hit your usage limit. Upgrade to Pro or try again at "
                             "12:03 AM."),
     NEW_YEAR - timedelta(seconds=30), NEW_YEAR + timedelta(minutes=3)),
    ("codex-cli", codex_says("You've hit your usage limit. Upgrade to Pro or try again at "
                             "Jan 1st, 2031 12:03 AM."),
     NEW_YEAR - timedelta(seconds=30), NEW_YEAR + timedelta(minutes=3)),
    ("codex-cli", codex_says("You've hit your usage limit. Try again in 3h 20m."),
     NEW_YEAR - timedelta(seconds=30), NEW_YEAR + timedelta(hours=3, minutes=19, seconds=30)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("base", "attempt", "now", "until"),
    MIDNIGHT,
    ids=[f"{m[0]}-{i}" for i, m in enumerate(MIDNIGHT)],
)
async def test_a_reset_shortly_past_midnight_utc(
    fakes: Fakes,
    make_config: Callable[..., PodiumConfig],
    base: str,
    attempt: dict[str, Any],
    now: datetime,
    until: datetime,
) -> None:
    fakes.install(base)
    ok = CLAUDE_OK if base == "claude-code" else CODEX_OK
    async with Conductor(make_config(), clock=frozen(now), zone=UTC) as c:
        job = await c.submit_job(spec=fakes.spec("midnight", base, attempt, ok))
        await sheet_waiting(c, job.job_id)
        sheet = (await c.get_job(job.job_id)).sheets[0]
        assert (sheet.waiting_until, sheet.attempts) == (until, 1)
        await c.cancel_job(job.job_id)


async def test_a_codex_pool_holds_its_other_profile_and_the_retry_resumes_the_thread(
    fakes: Fakes,
    make_config: Callable[..., PodiumConfig],
) -> None:
    fakes.install("codex-mini", "codex-cli", quota_pool="openai-plus")
    fakes.install("codex-max", "codex-cli", quota_pool="openai-plus")
    now = datetime(2030, 5, 1, 8, 0, tzinfo=UTC)
    until = now + timedelta(minutes=65)
    limit = codex_says("You've hit your usage limit. Try again in 1 hour 5 minutes.")
    async with Conductor(make_config(), clock=frozen(now), zone=UTC) as c:
        first = await c.submit_job(spec=fakes.spec("max", "codex-max", limit, CODEX_OK))
        await sheet_waiting(c, first.job_id)
        held = await c.submit_job(spec=fakes.spec("mini", "codex-mini", CODEX_OK))
        holds = (await c.status()).rate_limits
        assert [(h.instrument, h.until, h.pool) for h in holds] == [
            ("codex-max", until, "openai-plus"),
            ("codex-mini", until, "openai-plus"),
        ]
        sheet = (await c.get_job(held.job_id)).sheets[0]
        assert (sheet.status, sheet.waiting_until, sheet.attempts) == (
            SheetStatus.WAITING,
            until,
            0,
        )
        assert await c.clear_rate_limits("codex-mini") == ["codex-max", "codex-mini"]
        for job in (first, held):
            assert (await wait_for_job(c, job.job_id)).status is JobStatus.COMPLETED
    assert [call["argv"][3:] for call in fakes.calls("max")] == [[], ["resume", THREAD, "-"]]


async def test_codex_resumes_after_a_transient_error_and_after_a_failed_check(
    fakes: Fakes,
    make_config: Callable[..., PodiumConfig],
) -> None:
    fakes.install("codex-cli")
    dropped = "stream disconnected before completion: error sending request"
    transient = {
        "stdout": [
            jl(type="thread.started", thread_id=THREAD),
            jl(type="turn.started"),
            jl(type="error", message=dropped),
            jl(type="turn.failed", error={"message": dropped}),
        ],
        "exit": 1,
    }
    unchecked = {"stdout": codex_success("I think it is done")}  # its thread is SESSION
    done = {"stdout": codex_success("written"), "files": {"answer.md": "7"}}
    spec = fakes.spec(
        "codex",
        "codex-cli",
        transient,
        unchecked,
        done,
        sheet={"validations": [{"type": "file_exists", "path": "answer.md"}]},
        config={"model": "gpt-5", "permission_mode": "accept-edits"},
    )
    spec["retry"] = {"max_retries": 2, "base_delay_seconds": 0.05, "jitter": False}
    async with Conductor(make_config()) as c:
        job = await c.submit_job(spec=spec)
        assert (await wait_for_job(c, job.job_id)).status is JobStatus.COMPLETED
        history, _ = await c.get_execution_history(job.job_id)
    assert [(h.error_category, h.resumed_session_id) for h in history] == [
        (ErrorCategory.TRANSIENT, None),
        (ErrorCategory.VALIDATION_FAILED, THREAD),
        (None, SESSION),
    ]
    _, second, third = fakes.calls("codex")
    options = ["exec", "--json", "--skip-git-repo-check", "--model", "gpt-5", "--sandbox"]
    assert second["argv"] == [*options, "workspace-write", "resume", THREAD, "-"]
    assert third["argv"] == [*options, "workspace-write", "resume", SESSION, "-"]
    assert third["stdin"].startswith("Your previous run finished, but these checks")
    assert "file_exists: file 'answer.md' does not exist" in third["stdin"]
    assert "I think it is done" in third["stdin"]


async def test_with_assembly_off_a_resumed_session_gets_the_template_unchanged(
    fakes: Fakes,
    make_config: Callable[..., PodiumConfig],
) -> None:
    """`prompt_assembly: false` means every attempt's prompt is the rendered template: a
    retry still resumes the CLI's session, but adds no words of its own (after a failed check
    it must not claim the run "stopped before it finished")."""
    fakes.install("claude-code")
    check = {"type": "content_regex", "path": "count.txt", "pattern": "^[0-9]+$"}
    wrong = {
        "stdout": [claude_init(), claude_result("I wrote it.")],
        "files": {"count.txt": "many"},
    }
    slow = {"stdout": [claude_init()], "sleep": 30}
    right = {"stdout": [claude_init(), claude_result("Fixed.")], "files": {"count.txt": "7"}}
    spec = fakes.spec(
        "plain",
        "claude-code",
        wrong,
        slow,
        right,
        sheet={"validations": [check]},
        config={"timeout_seconds": 2},
        prompt_assembly=False,
    )
    spec["retry"] = {"max_retries": 2, "base_delay_seconds": 0.05, "jitter": False}
    async with Conductor(make_config()) as c:
        job = await c.submit_job(spec=spec)
        assert (await wait_for_job(c, job.job_id)).status is JobStatus.COMPLETED
    calls = fakes.calls("plain")
    assert [call["stdin"] for call in calls] == [TASK] * 3
    resumed = ["--resume", SESSION]
    assert [call["argv"][4:] for call in calls] == [[], resumed, resumed]

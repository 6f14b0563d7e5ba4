"""The built-in AI CLI profiles through a real conductor (issue 13), past the rate limits: quota
pools held together, sessions resumed by the retry (after a restart too), cost totals with a
limit, and the newer profiles' command lines. Fake CLIs print what the real ones print; tools
are called through an MCP client where the answer is what an agent reads."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from ai_cli_fakes import (
    IN_2H,
    SUCCESS,
    TASK,
    Fakes,
    T,
    call,
    claude_says,
    fakes,
    frozen,
    history_of,
    mcp_client,
    refused,
    sheet_waiting,
)
from cli_streams import (
    SESSION,
    claude_init,
    claude_result,
    jl,
)
from helpers import wait_for_job, wait_until
from test_transports import PODIUM, server_env

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import (
    JobStatus,
    Outcome,
    PauseReason,
    SheetStatus,
)
from podium.core.runner.assembly import CHECKS_HEADER
from podium.core.runner.prompts import CONTINUE_NOTE

pytestmark = pytest.mark.anyio
__all__ = ["fakes"]  # fixture used by name below


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


@pytest.mark.parametrize("garbage", [1e300, 2**70, 10**400], ids=["1e300", "2**70", "10**400"])
async def test_a_cli_reporting_absurd_numbers_is_recorded_without_them(
    fakes: Fakes, make_config: Callable[..., PodiumConfig], garbage: float
) -> None:
    # Counts no 64-bit column holds (nor a float, for 10**400) once stopped the store's writer,
    # and with it the conductor; a count past any real run is no count.
    fakes.install("claude-code")
    result = jl(type="result", subtype="success", is_error=False, result="done",
                session_id=SESSION, total_cost_usd=garbage,
                usage={"input_tokens": garbage, "output_tokens": 80})  # fmt: skip
    env = fakes.env("absurd", {"stdout": [claude_init(), result]})
    spec = {"name": "absurd", "instrument": "claude-code", "instrument_config": {"env": env},
            "sheets": [{"prompt": TASK}]}  # fmt: skip
    async with Conductor(make_config()) as c, mcp_client(c) as client:
        job = await call(client, "submit_job", {"spec": spec})
        assert (await wait_for_job(c, job["job_id"])).status is JobStatus.COMPLETED
        [entry] = await history_of(client, job["job_id"])
        assert entry["input_tokens"] is None and entry["output_tokens"] == 80
        detail = await call(client, "status", {"job_id": job["job_id"]})
        assert detail["output_tokens"] == 80
        assert (await call(client, "status", {}))["ready"] is True


async def test_the_cost_limit_error_says_what_sheets_still_running_then_spent(
    fakes: Fakes, make_config: Callable[..., PodiumConfig]
) -> None:
    """Sheets running when the job pauses at its limit finish and are recorded: what they
    report is added, and the job's error states the total, not the one it paused at."""
    fakes.install("claude-code")
    quick = fakes.env("quick", costly(0.3, (10, 1)))
    slow = fakes.env("slow", {**costly(0.45, (20, 2)), "sleep": 1.5})
    spec = {
        "name": "overrun",
        "instrument": "claude-code",
        "cost_limit_usd": 0.2,
        "sheets": [
            {"name": "quick", "prompt": TASK, "instrument_config": {"env": quick}},
            {"name": "slow", "prompt": TASK, "instrument_config": {"env": slow}},
            {"name": "after", "prompt": TASK, "depends_on": ["quick", "slow"]},
        ],
    }
    async with Conductor(make_config()) as c, mcp_client(c) as client:
        job = await call(client, "submit_job", {"spec": spec})
        await wait_for_job(c, job["job_id"], statuses=("paused",))

        async def both_recorded() -> bool:
            entries = await history_of(client, job["job_id"])
            return len(entries) == 2 and all(e["outcome"] for e in entries)

        await wait_until(both_recorded, timeout=30)
        detail = await call(client, "status", {"job_id": job["job_id"]})
        assert detail["pause_reason"] == "cost_limit"
        assert [s["status"] for s in detail["sheets"]] == ["completed", "completed", "pending"]
        assert detail["cost_usd"] == pytest.approx(0.75)
        assert "$0.75" in detail["error"] and "$0.30" not in detail["error"]


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

"""`diagnose`: why a job failed or is stuck, in one bounded answer (issue 18)."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from helpers import wait_for_job, wait_until

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.diagnosis_answer import (
    MAX_DIAGNOSIS_BYTES,
    Diagnosis,
    LogExcerpt,
    SheetDiagnosis,
    fit,
    size_of,
)
from podium.core.log_excerpt import MAX_LINE_CHARS, excerpt_around
from podium.core.models import ErrorCategory, JobStatus, SheetStatus

pytestmark = pytest.mark.anyio

FAKE_CLI = """#!{python}
import sys
print("connecting to the model service")
print("Error: Invalid API key · Please run /login", file=sys.stderr)
print("bye", file=sys.stderr)
sys.exit(1)
"""


@pytest.fixture
async def diag_conductor(
    make_config: Callable[..., PodiumConfig], home: Path, tmp_path: Path
) -> AsyncIterator[Conductor]:
    cli = tmp_path / "fake-cli"
    cli.write_text(FAKE_CLI.format(python=sys.executable))
    cli.chmod(cli.stat().st_mode | stat.S_IXUSR)
    (home / "instruments").mkdir(exist_ok=True)
    (home / "instruments" / "fake-ai.yaml").write_text(
        f"""
name: fake-ai
executable: {cli}
args: ["{{prompt}}"]
patterns:
  auth: ["Invalid API key"]
"""
    )
    async with Conductor(make_config(max_concurrent_sheets=4)) as conductor:
        yield conductor


THREE_WAYS = {
    "name": "three-ways",
    "on_failure": "continue",
    "retry": {"max_retries": 1, "base_delay_seconds": 0.05, "jitter": False},
    "sheets": [
        {
            "name": "count",
            "prompt": "echo 'counting files'; echo 7 > count.txt; echo done",
            "validations": [{"type": "content_regex", "path": "count.txt", "pattern": "^[a-z]+$"}],
        },
        {
            "name": "slow",
            "prompt": "echo 'starting the long step'; sleep 30",
            "instrument_config": {"timeout_seconds": 0.5},
        },
        {"name": "ask", "instrument": "fake-ai", "prompt": "summarise"},
        {"name": "report", "depends_on": ["count"], "prompt": "cat count.txt"},
        {"name": "fine", "prompt": "echo ok"},
    ],
}


async def test_diagnose_names_three_different_causes_in_one_call(
    diag_conductor: Conductor,
) -> None:
    job = await diag_conductor.submit_job(spec=THREE_WAYS)
    done = await wait_for_job(diag_conductor, job.job_id, timeout=60)
    assert done.status is JobStatus.FAILED

    result = await diag_conductor.diagnose(job.job_id)

    assert size_of(result) <= MAX_DIAGNOSIS_BYTES
    by_name = {s.name: s for s in result.failing}
    assert set(by_name) == {"count", "slow", "ask"}
    count, slow, ask = by_name["count"], by_name["slow"], by_name["ask"]

    assert count.error_category is ErrorCategory.VALIDATION_FAILED
    [failed] = count.failed_validations
    assert failed.type == "content_regex"
    assert failed.path == "count.txt"
    assert failed.expected is not None and "^[a-z]+$" in failed.expected
    assert failed.found == "7\n"
    assert "count.txt" in count.cause and "content_regex" in count.cause
    assert count.attempts == 2 and count.outcomes == ["failed", "failed"]

    assert slow.error_category is ErrorCategory.TIMEOUT
    assert "timed out" in slow.cause
    assert slow.log_excerpt is not None
    assert any("starting the long step" in line for line in slow.log_excerpt.lines)

    assert ask.error_category is ErrorCategory.AUTH
    assert "authentication" in ask.cause and "fake-ai" in ask.cause
    assert ask.attempts == 1  # auth errors are not retried
    assert ask.log_excerpt is not None
    assert ask.log_excerpt.matched is not None and "Invalid API key" in ask.log_excerpt.matched
    assert any("Invalid API key" in line for line in ask.log_excerpt.lines)

    assert [s.name for s in result.skipped] == ["report"]
    assert result.skipped_total == 1
    assert "failing sheets by cause" in result.verdict
    actions = " ".join(step.action for step in result.next_steps)
    assert "timeout_seconds" in actions
    assert "log the 'fake-ai' CLI in" in actions
    tools = {step.tool for step in result.next_steps}
    assert {"resume"} <= tools
    resume = next(s for s in result.next_steps if s.tool == "resume")
    assert resume.arguments is not None and resume.arguments["job_id"] == job.job_id


async def test_diagnose_of_a_stuck_paused_and_completed_job(diag_conductor: Conductor) -> None:
    paused = await diag_conductor.submit_job(
        spec={"name": "later", "sheets": [{"prompt": "true"}]}, start=False
    )
    result = await diag_conductor.diagnose(paused.job_id)
    assert result.status is JobStatus.PAUSED
    assert result.verdict.startswith("paused (not_started)")
    assert [s.tool for s in result.next_steps] == ["resume"]
    assert result.failing == []

    ok = await diag_conductor.submit_job(spec={"name": "ok", "sheets": [{"prompt": "true"}]})
    await wait_for_job(diag_conductor, ok.job_id)
    result = await diag_conductor.diagnose(ok.job_id)
    assert result.verdict.startswith("completed")
    assert result.next_steps == [] and result.failing == []


async def test_diagnose_shows_a_sheet_waiting_to_retry(diag_conductor: Conductor) -> None:
    job = await diag_conductor.submit_job(
        spec={
            "name": "retrying",
            "retry": {"max_retries": 3, "base_delay_seconds": 60, "jitter": False},
            "sheets": [{"prompt": "echo 'disk full: cannot write' >&2; exit 3"}],
        }
    )

    async def waiting() -> bool:
        detail = await diag_conductor.get_job(job.job_id)
        return detail.sheets[0].status is SheetStatus.WAITING

    await wait_until(waiting, timeout=20)
    result = await diag_conductor.diagnose(job.job_id)
    [sheet] = result.failing
    assert sheet.status is SheetStatus.WAITING
    assert sheet.error_category is ErrorCategory.FAILED
    assert sheet.log_excerpt is not None
    assert any("disk full" in line for line in sheet.log_excerpt.lines)
    assert [w.reason.value for w in result.waiting if w.reason] == ["retry_backoff"]
    await diag_conductor.cancel_job(job.job_id)


async def test_diagnose_unknown_job_is_not_found(diag_conductor: Conductor) -> None:
    from podium.core.errors import NotFoundError

    with pytest.raises(NotFoundError, match="nope"):
        await diag_conductor.diagnose("nope")


def test_excerpt_centres_on_the_matched_error_text() -> None:
    lines = [f"line {i}" for i in range(100)]
    lines[40] = "fatal: Invalid API key for org"
    text = "\n".join(lines)
    excerpt, matched = excerpt_around(text, "exited with code 1; auth: Invalid API key")
    assert matched == "Invalid API key"
    assert "fatal: Invalid API key for org" in excerpt
    assert excerpt[-1] == "line 99"  # how the run ended
    assert len(excerpt) <= 12
    # Without a matched text: the last error-looking line.
    excerpt, matched = excerpt_around("a\nb\nERROR: boom\nc\n", "exited with code 2")
    assert matched == "ERROR: boom" and "ERROR: boom" in excerpt
    # Nothing error-like: the tail.
    excerpt, _ = excerpt_around("\n".join(str(i) for i in range(50)), None)
    assert excerpt == [str(i) for i in range(38, 50)]


def test_a_long_line_is_cut_around_its_error_not_from_its_start() -> None:
    """AI CLIs print a JSON object a line; the error sits far past the first 240
    characters, and a clip from the start showed everything but it."""
    record = json.dumps(
        {"type": "result", "cwd": "/work" * 100, "result": "Invalid API key - run /login"}
    )
    text = "\n".join(["starting", record, '{"type": "exit"}'])
    excerpt, matched = excerpt_around(text, "exited with code 1; auth: Invalid API key")
    assert matched == "Invalid API key"
    [shown] = [line for line in excerpt if "cwd" in line or "Invalid" in line]
    assert "Invalid API key" in shown and len(shown) <= MAX_LINE_CHARS, shown
    assert shown.startswith("...")
    assert excerpt[0] == "starting" and excerpt[-1] == '{"type": "exit"}'

    # No pattern matched: the error-looking line is cut around what looks like an error,
    # at the end of a 2 MB line as in the middle of one.
    for line in ("x" * 2_000_000 + " error: disk full", "y" * 5000 + " fatal: no " + "z" * 5000):
        excerpt, matched = excerpt_around(f"a\n{line}\n", "exited with code 3")
        word = "error: disk full" if "disk" in line else "fatal: no"
        assert matched is not None and word in matched and len(matched) <= MAX_LINE_CHARS
        assert any(word in shown for shown in excerpt), excerpt
        assert all(len(shown) <= MAX_LINE_CHARS for shown in excerpt)
    # A line whose error is within the first 240 characters is cut as before.
    excerpt, matched = excerpt_around("error: short " + "w" * 1000, None)
    assert matched == ("error: short " + "w" * 1000)[: MAX_LINE_CHARS - 3] + "..."


def test_fit_cuts_a_huge_answer_below_the_cap() -> None:
    def sheet(n: int) -> SheetDiagnosis:
        return SheetDiagnosis(
            sheet_num=n,
            name=None,
            status=SheetStatus.FAILED,
            instrument="shell",
            error_category=ErrorCategory.FAILED,
            cause="x" * 600,
            error="y" * 600,
            attempts=3,
            outcomes=["failed"] * 3,
            rate_limit_waits=0,
            running_seconds=1.0,
            failed_validations=[],
            log_excerpt=LogExcerpt(attempt=3, lines=["z" * 240] * 12, matched=None, log_uri=None),
        )

    big = Diagnosis(
        job_id="j",
        name="j",
        status=JobStatus.FAILED,
        pause_reason=None,
        error=None,
        verdict="failed",
        total_sheets=10,
        completed_sheets=0,
        failing=[sheet(n) for n in range(1, 11)],
        failing_total=10,
        skipped=[],
        skipped_total=0,
        waiting=[],
        rate_limits=[],
        pressure_level=None,
        pressure_reason=None,
        next_steps=[],
        truncated=False,
    )
    assert size_of(big) > MAX_DIAGNOSIS_BYTES
    cut = fit(big)
    assert size_of(cut) <= MAX_DIAGNOSIS_BYTES
    assert cut.truncated
    assert cut.failing[0].log_excerpt is not None  # the first failure keeps its evidence
    json.dumps(cut.model_dump(mode="json"))


async def test_diagnose_of_a_sheet_that_stayed_rate_limited_says_wait_not_fix(
    make_config: Callable[..., PodiumConfig], home: Path, tmp_path: Path
) -> None:
    cli = tmp_path / "limited-cli"
    cli.write_text(f"#!{sys.executable}\nimport sys\nprint('429 Too Many Requests')\nsys.exit(2)\n")
    cli.chmod(cli.stat().st_mode | stat.S_IXUSR)
    (home / "instruments").mkdir(exist_ok=True)
    (home / "instruments" / "busy-ai.yaml").write_text(
        f'name: busy-ai\nexecutable: {cli}\nargs: ["{{prompt}}"]\n'
        'patterns:\n  rate_limit: [{regex: "Too Many Requests"}]\n'
    )
    spec = {"name": "limited", "sheets": [{"name": "ask", "instrument": "busy-ai", "prompt": "x"}]}
    async with Conductor(make_config(max_rate_limit_retries=0)) as conductor:
        job = await conductor.submit_job(spec=spec)
        assert (await wait_for_job(conductor, job.job_id)).status is JobStatus.FAILED
        result = await conductor.diagnose(job.job_id)

    [sheet] = result.failing
    assert sheet.error_category is ErrorCategory.RATE_LIMITED
    assert "stayed rate limited" in sheet.cause
    # Nothing in the spec is wrong: no "resume with a corrected spec".
    assert not any(
        s.tool == "resume" and "spec" in (s.arguments or {}) for s in result.next_steps
    ), result.next_steps
    actions = " ".join(s.action for s in result.next_steps)
    assert "corrected spec" not in actions
    assert "limit lifts" in actions and "fallbacks" in actions
    tools = [s.tool for s in result.next_steps]
    assert "clear_rate_limits" in tools
    rerun = next(s for s in result.next_steps if s.tool == "resume")
    assert rerun.arguments == {"job_id": job.job_id, "retry_failed": True}

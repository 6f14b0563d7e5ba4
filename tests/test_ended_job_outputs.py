"""What the sheets of a job that ended (a cancel, a deadline) show as their output: a sheet
shows the output of its last attempt, the one numbered `attempts`, whatever ended it; a sheet
that never ran shows none; a sheet whose attempt the job's end cut off shows that attempt's
own output, never the one before's (docs/tools.md, "Each sheet")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import seed_second_attempt_in_flight, wait_for_job, wait_until
from mcp_harness import Harness, mcp, ok, wait_status

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import ErrorCategory, JobStatus, Outcome, SheetStatus
from podium.core.store.rows import JobRow

pytestmark = pytest.mark.anyio
__all__ = ["mcp"]  # fixture used by name below

FIRST = "printed by the first try"
EARLIER = "printed by the attempt before"


def retrying_spec(**extra: Any) -> dict[str, Any]:
    """Sheet 1 fails its first attempt and waits a long backoff for its retry; sheet 2
    depends on it, so it never starts."""
    return {
        "name": "retrying",
        "retry": {"max_retries": 1, "base_delay_seconds": 600, "jitter": False},
        "sheets": [
            {"name": "flaky", "prompt": f'echo "{FIRST}"; exit 1'},
            {"name": "after", "depends_on": ["flaky"], "prompt": "echo never"},
        ],
        **extra,
    }


async def waiting_for_retry(c: Conductor, job_id: str) -> None:
    async def waiting() -> bool:
        sheet = (await c.get_job(job_id)).sheets[0]
        return sheet.status is SheetStatus.WAITING and sheet.waiting_reason is not None

    await wait_until(waiting, timeout=20)


@pytest.mark.parametrize("end", ["cancel", "deadline"])
async def test_a_sheet_ended_with_its_job_while_it_waits_to_retry_shows_its_last_attempt(
    conductor: Conductor, end: str
) -> None:
    """The sheet that failed once and waited for its retry when the job ended shows its
    last attempt's output and time (attempt 1, as its history says), not output of its
    own; the sheet that never started shows none."""
    extra = {"deadline_seconds": 3} if end == "deadline" else {}
    job = await conductor.submit_job(spec=retrying_spec(**extra))
    await waiting_for_retry(conductor, job.job_id)
    if end == "cancel":
        await conductor.cancel_job(job.job_id)
    detail = await wait_for_job(conductor, job.job_id)
    assert detail.status is (JobStatus.CANCELLED if end == "cancel" else JobStatus.FAILED)
    flaky, after = detail.sheets
    history, _ = await conductor.get_execution_history(job.job_id, sheet_num=1)
    [first] = history
    category = ErrorCategory.CANCELLED if end == "cancel" else ErrorCategory.DEADLINE
    assert (flaky.status, flaky.error_category) == (SheetStatus.CANCELLED, category)
    # The tail is the last attempt's: `attempts` names it, and its history entry ended so.
    assert flaky.attempts == first.attempt == 1
    assert first.outcome is Outcome.FAILED
    assert flaky.output_tail is not None and FIRST in flaky.output_tail
    assert flaky.duration_seconds == first.duration_seconds
    assert flaky.log_uri is not None
    assert (after.status, after.error_category) == (SheetStatus.CANCELLED, category)
    assert after.attempts == 0
    assert (after.output_tail, after.duration_seconds, after.log_uri) == (None, None, None)


async def test_show_job_and_diagnose_of_a_cancelled_job_attribute_the_output(
    mcp: Harness,
) -> None:
    """Through the MCP tools: show_job gives the waiting sheet its last attempt's output with
    that attempt's number as `attempts`, and the sheet that never ran no output; diagnose of a
    job failed by its deadline quotes the log of that numbered attempt only, and nothing for
    the sheet that never ran."""
    job = await ok(mcp, "submit_job", {"spec": retrying_spec(deadline_seconds=3)})
    job_id = job["job_id"]
    await waiting_for_retry(mcp.conductor, job_id)
    assert (await wait_status(mcp, job_id))["status"] == "failed"
    shown = await ok(mcp, "show_job", {"job_id": job_id})
    flaky, after = shown["sheets"]
    assert (flaky["status"], flaky["attempts"]) == ("cancelled", 1)
    assert FIRST in flaky["output_tail"]
    assert (after["status"], after["attempts"], after["output_tail"]) == ("cancelled", 0, None)
    assert after["log_uri"] is None
    diagnosis = await ok(mcp, "diagnose", {"job_id": job_id})
    by_num = {s["sheet_num"]: s for s in diagnosis["failing"]}
    assert by_num[1]["attempts"] == 1
    assert by_num[1]["log_excerpt"]["attempt"] == 1
    assert any(FIRST in line for line in by_num[1]["log_excerpt"]["lines"])
    assert by_num[2]["attempts"] == 0 and by_num[2]["log_excerpt"] is None


async def test_a_sheet_cancelled_while_it_runs_shows_that_attempts_output_and_time(
    conductor: Conductor, tmp_path: Path
) -> None:
    """Attempt 1 fails after a while, attempt 2 prints and is cancelled at once: the sheet
    shows attempt 2's output and duration, not attempt 1's."""
    started = tmp_path / "second-started"
    prompt = (
        f'if [ "$PODIUM_ATTEMPT" = 1 ]; then echo "{EARLIER}"; sleep 1.5; exit 1; fi; '
        f'echo "own output of attempt 2"; touch {started}; sleep 1000'
    )
    spec = {
        "name": "cut",
        "retry": {"max_retries": 1, "base_delay_seconds": 0, "jitter": False},
        "sheets": [{"name": "s1", "prompt": prompt}],
    }
    job = await conductor.submit_job(spec=spec)

    async def second_started() -> bool:
        return started.exists()

    await wait_until(second_started, timeout=20)
    await conductor.cancel_job(job.job_id)
    detail = await wait_for_job(conductor, job.job_id)
    [sheet] = detail.sheets
    history, _ = await conductor.get_execution_history(job.job_id, sheet_num=1)
    first, second = history
    assert (sheet.status, sheet.attempts) == (SheetStatus.CANCELLED, 2)
    assert (first.outcome, second.outcome) == (Outcome.FAILED, Outcome.CANCELLED)
    assert sheet.output_tail is not None and "own output of attempt 2" in sheet.output_tail
    assert EARLIER not in sheet.output_tail
    # Attempt 1 ran its 1.5 s (give or take the clocks: 1.498 was seen), attempt 2 was cut
    # off at once: the sheet shows attempt 2's.
    assert first.duration_seconds is not None and first.duration_seconds >= 1.2
    assert sheet.duration_seconds == second.duration_seconds != first.duration_seconds


async def _cut_off_in_an_ended_job(
    config: PodiumConfig,
    tmp_path: Path,
    owner: str,
    lease_left: float,
    log_text: str | None,
    deadline: bool,
) -> None:
    """A job already ended (cancelled, or failed by its deadline) whose sheet 1 still has
    attempt 2 in flight, owned by `owner` (its lease runs out `lease_left` seconds from
    now): the row still holds attempt 1's output, and attempt 2's log holds `log_text`
    (None: no log file)."""

    def job(started: datetime, now: datetime) -> JobRow:
        return JobRow(
            "ended", "ended", JobStatus.FAILED if deadline else JobStatus.CANCELLED, "/tmp",
            "fp", 1, started, now, started_at=started, completed_at=now,
            error="deadline: the job ran longer than deadline_seconds=5" if deadline else None,
        )  # fmt: skip

    await seed_second_attempt_in_flight(
        config, tmp_path, job, owner=owner, lease_left=lease_left, log_text=log_text,
        earlier_output=EARLIER, earlier_duration=1234.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("owner", "lease_left"),
    [("self", -5.0), ("gone-host", -5.0), ("gone-host", 2.0)],
    ids=["restart", "lapsed-before-start", "lapses-while-running"],
)
@pytest.mark.parametrize("log_text", ["own output of attempt 2\n", None], ids=["log", "no-log"])
@pytest.mark.parametrize("deadline", [False, True], ids=["cancelled", "deadline"])
async def test_an_attempt_cut_off_in_an_ended_job_leaves_its_own_output_on_the_sheet(
    tmp_path: Path,
    make_config: Callable[..., PodiumConfig],
    owner: str,
    lease_left: float,
    log_text: str | None,
    deadline: bool,
) -> None:
    """Found at the next start (ours, or another conductor's whose lease lapsed) or taken
    back when its lease lapses while this conductor runs: the sheet ends cancelled showing
    attempt 2's output and time (or none), not attempt 1's, under the category its job's
    end gives (a deadline's, or a cancel's)."""
    config = make_config()
    await _cut_off_in_an_ended_job(
        config,
        tmp_path,
        config.conductor_id if owner == "self" else owner,
        lease_left,
        log_text,
        deadline,
    )
    async with Conductor(config) as conductor:

        async def recorded() -> bool:
            rows, _ = await conductor.get_execution_history("ended", sheet_num=1)
            return rows[0].outcome is Outcome.INTERRUPTED

        await wait_until(recorded, timeout=15)
        detail = await conductor.get_job("ended")
        [entry], _ = await conductor.get_execution_history("ended", sheet_num=1)
    [sheet] = detail.sheets
    category = ErrorCategory.DEADLINE if deadline else ErrorCategory.CANCELLED
    assert (sheet.status, sheet.error_category) == (SheetStatus.CANCELLED, category)
    assert sheet.last_error == "the job had ended"
    assert sheet.attempts == 2
    assert sheet.duration_seconds == entry.duration_seconds != 1234.0
    if log_text:
        assert sheet.output_tail == log_text
    else:
        assert sheet.output_tail is None


async def test_a_sheet_that_ran_and_printed_nothing_shows_an_empty_output_not_none(
    conductor: Conductor,
) -> None:
    """Ran to its end and printed nothing: "" (it ran; `outputs[N]` reads it empty), where a
    sheet that never ran shows null."""
    spec = {
        "name": "quiet",
        "sheets": [
            {"name": "silent", "prompt": "true"},
            {"name": "reads", "depends_on": ["silent"], "prompt": 'echo "[{{ outputs[1] }}]"'},
            {"name": "never", "depends_on": ["reads"], "prompt": "exit 3"},
            {"name": "after", "depends_on": ["never"], "prompt": "echo unreachable"},
        ],
    }
    job = await conductor.submit_job(spec=spec)
    detail = await wait_for_job(conductor, job.job_id)
    silent, reads, _, after = detail.sheets
    assert silent.status is SheetStatus.COMPLETED and silent.output_tail == ""
    assert reads.output_tail == "[]\n"
    assert after.attempts == 0 and after.output_tail is None

"""Control calls that meet a job in between: a `clear` while a cancel is still stopping the
job's sheets, an `approve` of a gate that already ended undecided, and a `resume` whose
changed spec renamed or removed sheets."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import wait_for_job, wait_until

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.errors import InvalidTransitionError, SpecError
from podium.core.models import ErrorCategory, JobStatus, SheetStatus, utcnow

pytestmark = pytest.mark.anyio


def _slow_to_stop(marker: str, seconds: float) -> dict[str, object]:
    """A sheet that takes `seconds` to end after SIGTERM, saying when it starts to stop and
    when it has stopped (files in the workspace)."""
    prompt = (
        f"trap 'touch stopping; sleep {seconds}; touch {marker}; exit 143' TERM; "
        "touch started; sleep 60 & wait"
    )
    return {"name": "slow-stop", "sheets": [{"prompt": prompt}]}


async def _started(c: Conductor, spec: dict[str, object]) -> tuple[str, Path]:
    job = await c.submit_job(spec=spec)
    workspace = Path((await c.get_job(job.job_id)).workspace)

    async def started() -> bool:
        detail = await c.get_job(job.job_id)
        return detail.sheets[0].status is SheetStatus.RUNNING and (workspace / "started").exists()

    await wait_until(started)
    return job.job_id, workspace


async def _cancelled_while_stopping(c: Conductor, job_id: str, workspace: Path) -> None:
    async def stopping() -> bool:
        detail = await c.get_job(job_id)
        return detail.status is JobStatus.CANCELLED and (workspace / "stopping").exists()

    await wait_until(stopping)
    assert (await c.get_job(job_id)).sheets[0].status is SheetStatus.RUNNING


async def test_clear_during_a_cancel_waits_for_the_stopping_sheets_then_clears(
    make_config: Callable[..., PodiumConfig],
) -> None:
    async with Conductor(make_config(kill_grace_seconds=10)) as c:
        job_id, workspace = await _started(c, _slow_to_stop("stopped", 1.0))
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.cancel_job, job_id)
            await _cancelled_while_stopping(c, job_id, workspace)
            result = await c.clear_jobs(job_ids=[job_id])
        assert (workspace / "stopped").exists()  # it waited for the sheet to end
        assert result.job_ids == [job_id] and result.skipped_active == []
        jobs, _ = await c.list_jobs()
        assert job_id not in [j.job_id for j in jobs]
        assert not (c.config.logs_dir / job_id).exists()


async def test_clear_reports_a_job_whose_sheets_are_still_stopping_past_its_wait(
    make_config: Callable[..., PodiumConfig],
) -> None:
    async with Conductor(make_config(kill_grace_seconds=10)) as c:
        c.housekeeping.stopping_wait_seconds = 0.2
        job_id, workspace = await _started(c, _slow_to_stop("stopped", 3.0))
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.cancel_job, job_id)
            await _cancelled_while_stopping(c, job_id, workspace)
            result = await c.clear_jobs(job_ids=[job_id])
            assert result.deleted == 0 and result.skipped_active == [job_id]
        # The attempt was recorded in full, the job kept, and a clear now removes it.
        detail = await wait_for_job(c, job_id)
        assert detail.sheets[0].status is SheetStatus.CANCELLED
        assert (await c.clear_jobs(job_ids=[job_id])).job_ids == [job_id]


# ----- approve of a gate that ended undecided -------------------------------------------------


def _gate(
    name: str = "gate", timeout: float | None = None, fail_beside: bool = False
) -> dict[str, object]:
    gate: dict[str, object] = {"name": "ask", "instrument": "approval", "prompt": "Ship it?"}
    if timeout is not None:
        gate["instrument_config"] = {"timeout_seconds": timeout}
    sheets: list[dict[str, object]] = [gate]
    if fail_beside:
        sheets.append({"name": "beside", "prompt": "sleep 0.3; exit 3"})
    return {"name": name, "retry": {"max_retries": 0}, "sheets": sheets}


async def _gate_open(c: Conductor, job_id: str) -> None:
    async def waits() -> bool:
        sheet = (await c.get_job(job_id)).sheets[0]
        return sheet.status is SheetStatus.WAITING and sheet.waiting_reason is not None

    await wait_until(waits)


async def _pause_past_the_gates_timeout(c: Conductor, job_id: str) -> None:
    """Its gate open, the job paused, and the gate's time run out (nothing of a paused job
    is picked, so nothing ended it)."""
    await _gate_open(c, job_id)
    await c.pause_job(job_id)
    until = (await c.get_job(job_id)).sheets[0].waiting_until
    assert until is not None

    async def passed() -> bool:
        return utcnow() > until

    await wait_until(passed)


async def _refused(c: Conductor, job_id: str, decision: str = "approve") -> str:
    with pytest.raises(InvalidTransitionError) as caught:
        await c.approvals.approve(job_id, "ask", decision)
    return str(caught.value)


async def test_approve_after_the_job_was_cancelled_says_why_and_that_a_resume_asks_again(
    conductor: Conductor,
) -> None:
    c = conductor
    job_id = (await c.submit_job(spec=_gate())).job_id
    await _gate_open(c, job_id)
    await c.cancel_job(job_id)
    message = await _refused(c, job_id)
    assert "ended undecided (the job was cancelled while it waited)" in message, message
    assert "cannot be approved now" in message and "a `resume` of the job asks it again" in message
    await c.resume_job(job_id)
    await _gate_open(c, job_id)
    await c.approvals.approve(job_id, "ask", "approve")
    assert (await wait_for_job(c, job_id)).status is JobStatus.COMPLETED


async def test_approve_after_a_timeout_or_a_failure_of_the_job_says_why(
    conductor: Conductor,
) -> None:
    c = conductor
    timed_out = (await c.submit_job(spec=_gate("late", timeout=0.3))).job_id
    assert (await wait_for_job(c, timed_out)).status is JobStatus.FAILED
    message = await _refused(c, timed_out, "reject")
    assert "no decision came before its timeout_seconds ran out" in message, message
    assert "cannot be rejected now" in message and "`resume`" in message

    failed = (await c.submit_job(spec=_gate("stopped", fail_beside=True))).job_id
    await _gate_open(c, failed)
    assert (await wait_for_job(c, failed)).status is JobStatus.FAILED
    message = await _refused(c, failed)
    assert "skipped while it waited: sheet 2 failed and on_failure is stop" in message, message
    assert "a `resume` of the job asks it again" in message


async def test_approve_after_the_gate_timed_out_while_its_job_was_paused_is_refused(
    conductor: Conductor,
) -> None:
    """A paused job's gate is not ended by the dispatcher when its time runs out (nothing
    of a paused job is picked): a decision after that must not override timeout_seconds."""
    c = conductor
    job_id = (await c.submit_job(spec=_gate(timeout=0.5))).job_id
    await _pause_past_the_gates_timeout(c, job_id)
    message = await _refused(c, job_id)
    assert "timeout_seconds ran out" in message and "`resume`" in message, message
    detail = await c.get_job(job_id)
    assert detail.sheets[0].status is SheetStatus.FAILED
    assert detail.sheets[0].error_category is ErrorCategory.TIMEOUT
    # A resume asks again (given time enough, this once), and that question takes it.
    await c.resume_job(job_id, spec=_gate(timeout=60))
    await _gate_open(c, job_id)
    await c.approvals.approve(job_id, "ask", "approve")
    assert (await wait_for_job(c, job_id)).status is JobStatus.COMPLETED


async def test_a_gate_timed_out_in_a_paused_job_that_goes_on_says_a_resume_asks_again(
    conductor: Conductor,
) -> None:
    """With on_failure: continue and another sheet still pending, the gate's timeout leaves
    the job paused, and a resume of a paused job resets failed sheets: that is what to do."""
    c = conductor
    spec = _gate("goes-on", timeout=0.5)
    spec["on_failure"] = "continue"
    spec["sheets"].append({"name": "later", "depends_on": ["beside"], "prompt": "true"})
    spec["sheets"].insert(1, {"name": "beside", "prompt": "sleep 0.3"})
    job_id = (await c.submit_job(spec=spec)).job_id
    await _pause_past_the_gates_timeout(c, job_id)
    message = await _refused(c, job_id)
    assert message.endswith("so it cannot be approved now; a `resume` of the job asks it again")
    assert (await c.get_job(job_id)).status is JobStatus.PAUSED
    await c.cancel_job(job_id)


# ----- resume with a changed spec that renamed or removed sheets -------------------------------

THREE = {
    "name": "three",
    "sheets": [
        {"name": "a", "prompt": "sleep 0.3"},
        {"name": "b", "depends_on": ["a"], "prompt": "true"},
        {"name": "c", "depends_on": ["b"], "prompt": "true"},
    ],
}


def _changed(edit: Callable[[list[dict[str, Any]]], object]) -> dict[str, Any]:
    spec = copy.deepcopy(THREE)
    edit(spec["sheets"])
    return spec


async def _paused_after_a(c: Conductor) -> str:
    """Paused (by a user) once sheet `a` has completed; `b` and `c` wait."""
    job_id = (await c.submit_job(spec=THREE)).job_id
    await wait_for_job(c, job_id, statuses=("running",))
    await c.pause_job(job_id)

    async def a_done() -> bool:
        return (await c.get_job(job_id)).sheets[0].status is SheetStatus.COMPLETED

    await wait_until(a_done)
    detail = await c.get_job(job_id)
    assert detail.status is JobStatus.PAUSED
    assert [s.status for s in detail.sheets[1:]] == [SheetStatus.PENDING] * 2
    return job_id


async def test_resume_with_a_renamed_sheet_is_refused_naming_it_and_the_job_stays(
    conductor: Conductor,
) -> None:
    c = conductor
    job_id = await _paused_after_a(c)
    renamed = _changed(lambda s: (s[1].update(name="b2"), s[2].update(depends_on=["b2"])))
    with pytest.raises(SpecError) as caught:
        await c.resume_job(job_id, spec=renamed)
    message = str(caught.value)
    assert message.startswith("sheets.1.name: sheet 2 ('b') is named 'b2'"), message
    assert "cannot rename" in message and "name it 'b' again" in message
    detail = await c.get_job(job_id, include_spec=True)
    assert detail.status is JobStatus.PAUSED and detail.sheets[1].name == "b"
    assert detail.spec is not None and detail.spec["sheets"][1]["name"] == "b"


async def test_resume_with_removed_sheets_says_which_why_and_what_instead(
    conductor: Conductor,
) -> None:
    c = conductor
    job_id = await _paused_after_a(c)
    # `a` (completed) and `c` (pending) dropped; `b` then sits at number 1.
    with pytest.raises(SpecError) as caught:
        await c.resume_job(
            job_id, spec=_changed(lambda s: (s.pop(2), s.pop(0), s[0].pop("depends_on")))
        )
    lines = str(caught.value).splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("sheets: sheet 1 ('a', completed) is not in the changed spec")
    assert "never runs a completed sheet again" in lines[0]
    assert lines[1].startswith("sheets.0: sheet 2 ('b') moved from number 2 to 1"), lines
    assert lines[2].startswith("sheets: sheet 3 ('c', pending) is not in the changed spec")
    assert "skip_when" in lines[2]
    assert (await c.get_job(job_id)).status is JobStatus.PAUSED
    # What the error offers instead: keep `c`, kept from running.
    kept = _changed(lambda s: s[2].update(skip_when="true"))
    await c.resume_job(job_id, spec=kept)
    detail = await wait_for_job(c, job_id)
    assert detail.status is JobStatus.COMPLETED
    assert detail.sheets[2].status is SheetStatus.SKIPPED
    assert detail.sheets[2].error_category is ErrorCategory.CONDITION


async def test_resume_may_name_an_unnamed_sheet_which_is_matched_by_number(
    conductor: Conductor,
) -> None:
    c = conductor
    spec: dict[str, Any] = {"name": "unnamed", "sheets": [{"prompt": "true"}] * 3}
    job_id = (await c.submit_job(spec=spec, start=False)).job_id
    named = copy.deepcopy(spec)
    named["sheets"][1] = {"name": "two", "prompt": "echo 2"}
    named["sheets"][2] = {"depends_on": ["two"], "prompt": "true"}
    await c.resume_job(job_id, spec=named)
    detail = await wait_for_job(c, job_id)
    assert detail.status is JobStatus.COMPLETED
    assert [s.name for s in detail.sheets] == [None, "two", None]
    assert detail.sheets[2].depends_on == [2]
    # Removing an unnamed sheet is refused, saying what matching by number would do.
    paused = (await c.submit_job(spec=spec, start=False, job_id="unnamed-2")).job_id
    shorter = {"name": "unnamed", "sheets": [{"prompt": "true"}] * 2}
    with pytest.raises(SpecError, match=r"sheet 3 \(pending\) is not in the changed spec") as e:
        await c.resume_job(paused, spec=shorter)
    assert "matched by its number" in str(e.value) and "skip_when" in str(e.value)


async def test_a_modify_of_a_running_job_that_renames_a_sheet_is_refused_and_it_runs_on(
    conductor: Conductor,
) -> None:
    c = conductor
    spec = {"name": "long", "sheets": [{"name": "work", "prompt": "sleep 30"}]}
    job_id = (await c.submit_job(spec=spec)).job_id
    await wait_for_job(c, job_id, statuses=("running",))
    renamed = {"name": "long", "sheets": [{"name": "labour", "prompt": "sleep 30"}]}
    with pytest.raises(SpecError, match=r"sheets\.0\.name: sheet 1 \('work'\) is named 'labour'"):
        await c.resume_job(job_id, spec=renamed)
    detail = await c.get_job(job_id)
    assert detail.status is JobStatus.RUNNING and detail.pause_reason is None
    await c.cancel_job(job_id)

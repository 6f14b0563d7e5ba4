"""Instrument fallbacks (issue 17): a sheet whose instrument is not installed, cannot start,
fails on auth, or is rate-limited past the job's bound runs on the next instrument of its
list; the history shows each attempt and the instrument it ran on."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for_job, wait_until

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.errors import SpecError
from podium.core.models import ErrorCategory, JobStatus, Outcome, SheetStatus, WaitingReason

pytestmark = pytest.mark.anyio

SCRIPTS = {
    # Logged out: says so and fails, as a real CLI does.
    "logged-out-cli": 'echo "Error: Invalid API key. Please run /login" >&2; exit 1\n',
    # Out of its usage window for an hour.
    "limited-cli": 'echo "429 Too Many Requests: retry after 3600 seconds" >&2; exit 1\n',
    # Does the work.
    "working-cli": 'printf "%s\\n" "$1" >> ran-on-working.txt; echo "done: $1"\n',
}


def profile(name: str, executable: str) -> str:
    return f"""\
name: {name}
executable: {executable}
args: ["{{prompt}}"]
patterns:
  auth: ["invalid api key"]
  rate_limit: [{{regex: "retry after (?P<secs>[0-9]+) seconds", retry_after_group: secs}}]
"""


@pytest.fixture
async def fleet(
    make_config: Callable[..., PodiumConfig], home: Path, tmp_path: Path
) -> AsyncIterator[Conductor]:
    """Profiles for each fake CLI, one whose executable vanishes after the catalog saw it,
    and one whose executable was never there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (home / "instruments").mkdir(exist_ok=True)
    for name, body in SCRIPTS.items():
        script = bin_dir / name
        script.write_text("#!/bin/bash\n" + body)
        script.chmod(0o755)
        (home / "instruments" / f"{name.removesuffix('-cli')}.yaml").write_text(
            profile(name.removesuffix("-cli"), str(script))
        )
    vanishing = bin_dir / "vanishing-cli"
    vanishing.write_text("#!/bin/bash\necho never\n")
    vanishing.chmod(0o755)
    (home / "instruments" / "vanishing.yaml").write_text(profile("vanishing", str(vanishing)))
    (home / "instruments" / "absent.yaml").write_text(
        profile("absent", str(bin_dir / "no-such-cli"))
    )
    conductor = Conductor(make_config())
    await conductor.start()
    vanishing.unlink()  # installed when probed, gone when the sheet runs
    try:
        yield conductor
    finally:
        await conductor.stop()


async def run(conductor: Conductor, spec: dict[str, Any]) -> Any:
    submitted = await conductor.submit_job(spec=spec)
    detail = await wait_for_job(conductor, submitted.job_id)
    history, _ = await conductor.get_execution_history(submitted.job_id)
    return detail, history, Path(submitted.workspace)


async def test_auth_failure_moves_the_sheet_to_the_next_instrument(fleet: Conductor) -> None:
    spec = {
        "name": "auth-fallback",
        "retry": {"max_retries": 0},  # a move is not a retry: none is needed
        "instrument": "logged-out",
        "fallbacks": ["absent", "working"],
        "sheets": [{"name": "task", "prompt": "write the report"}],
    }
    detail, history, workspace = await run(fleet, spec)
    assert detail.status is JobStatus.COMPLETED, detail.sheets[0].last_error
    assert detail.sheets[0].instrument == "working"
    assert [(h.attempt, h.instrument, h.outcome, h.error_category) for h in history] == [
        (1, "logged-out", Outcome.FAILED, ErrorCategory.AUTH),
        (2, "working", Outcome.COMPLETED, None),
    ]
    assert (workspace / "ran-on-working.txt").read_text() == "write the report\n"


async def test_an_uninstalled_instrument_starts_on_its_fallback(fleet: Conductor) -> None:
    spec = {
        "name": "absent-primary",
        "instrument": "absent",
        "sheets": [
            {"name": "task", "prompt": "do it", "fallbacks": ["working"]},
            {"name": "own", "instrument": "working", "prompt": "also"},
        ],
    }
    report = await fleet.validate_spec(spec=spec)
    assert report.valid, report.errors
    detail, history, _ = await run(fleet, spec)
    assert detail.status is JobStatus.COMPLETED
    assert [s.instrument for s in detail.sheets] == ["working", "working"]
    assert [(h.sheet_num, h.instrument) for h in history] == [(1, "working"), (2, "working")]


async def test_an_instrument_that_cannot_start_moves_on(fleet: Conductor) -> None:
    spec = {
        "name": "vanished",
        "instrument": "vanishing",
        "fallbacks": ["working"],
        "sheets": [{"prompt": "go"}],
    }
    detail, history, _ = await run(fleet, spec)
    assert detail.status is JobStatus.COMPLETED
    assert [(h.instrument, h.outcome) for h in history] == [
        ("vanishing", Outcome.FAILED),
        ("working", Outcome.COMPLETED),
    ]
    assert history[0].error is not None and "could not start" in history[0].error


async def test_a_workspace_missing_on_this_host_fails_the_sheet_saying_so_without_a_move(
    fleet: Conductor,
) -> None:
    # As on a conductor of a shared store whose host does not have the job's workspace: not
    # the instrument's fault, so no fallback takes over, and the error says what is missing.
    spec = {
        "name": "no-workspace-here",
        "retry": {"max_retries": 0},
        "instrument": "working",
        "fallbacks": ["shell"],
        "sheets": [{"prompt": "go"}],
    }
    submitted = await fleet.submit_job(spec=spec, start=False)
    shutil.rmtree(submitted.workspace)
    await fleet.resume_job(submitted.job_id)
    detail = await wait_for_job(fleet, submitted.job_id)
    history, _ = await fleet.get_execution_history(submitted.job_id)
    assert detail.status is JobStatus.FAILED
    assert [(h.instrument, h.outcome) for h in history] == [("working", Outcome.FAILED)]
    error = history[0].error or ""
    assert f"workspace {submitted.workspace!r} does not exist on this host" in error


async def test_a_long_rate_limit_moves_on_and_the_hold_stays(fleet: Conductor) -> None:
    spec = {
        "name": "limited",
        "instrument": "limited",
        "fallbacks": ["working"],
        "fallback_wait_seconds": 60,
        "sheets": [{"prompt": "go"}],
    }
    detail, history, _ = await run(fleet, spec)
    assert detail.status is JobStatus.COMPLETED
    assert [(h.instrument, h.outcome) for h in history] == [
        ("limited", Outcome.RATE_LIMITED),
        ("working", Outcome.COMPLETED),
    ]
    status = await fleet.status()
    assert "limited" in {r.instrument for r in status.rate_limits}
    # Within the bound, the sheet waits for its own instrument instead of moving.
    await fleet.clear_rate_limits()
    spec = {**spec, "name": "patient", "fallback_wait_seconds": 7200}
    submitted = await fleet.submit_job(spec=spec)

    async def waiting() -> bool:
        sheet = (await fleet.get_job(submitted.job_id)).sheets[0]
        return sheet.status is SheetStatus.WAITING

    await wait_until(waiting)
    sheet = (await fleet.get_job(submitted.job_id)).sheets[0]
    assert sheet.instrument == "limited" and sheet.error_category is ErrorCategory.RATE_LIMITED
    await fleet.cancel_job(submitted.job_id)


async def test_without_a_usable_fallback_the_sheet_fails_as_before(fleet: Conductor) -> None:
    spec = {
        "name": "no-way-out",
        "retry": {"max_retries": 0},
        "instrument": "logged-out",
        "fallbacks": ["absent"],
        "sheets": [{"prompt": "go"}],
    }
    detail, history, _ = await run(fleet, spec)
    assert detail.status is JobStatus.FAILED
    assert detail.sheets[0].status is SheetStatus.FAILED
    assert detail.sheets[0].error_category is ErrorCategory.AUTH
    assert [h.instrument for h in history] == ["logged-out"]


async def test_fallback_errors_at_submit(fleet: Conductor) -> None:
    with pytest.raises(SpecError) as caught:
        await fleet.submit_job(
            spec={
                "name": "bad",
                "instrument": "absent",
                "fallbacks": ["no-such-instrument"],
                "sheets": [{"prompt": "x"}, {"prompt": "y", "fallbacks": ["workng"]}],
            }
        )
    messages = {e.path: e.message for e in caught.value.errors}
    assert "unknown instrument 'no-such-instrument'" in messages["fallbacks.0"]
    assert "unknown instrument 'workng'" in messages["sheets.1.fallbacks.0"]
    # Neither sheet has an installed instrument to run on.
    assert "not installed" in messages["instrument"]


async def test_an_approval_cannot_be_a_fallback(fleet: Conductor) -> None:
    """A gate runs nothing: in a working sheet's place it would ask the sheet's prompt of a
    person and complete the sheet without doing the work. A gate of its own is fine."""
    spec = {
        "name": "gated-fallbacks",
        "fallbacks": ["approval"],
        "sheets": [
            {"prompt": "echo work"},
            {"prompt": "ship it?", "instrument": "approval"},
            {"prompt": "echo more", "fallbacks": ["shell", "approval"]},
        ],
    }
    report = await fleet.validate_spec(spec=spec)
    assert not report.valid
    messages = {e.path: e.message for e in report.errors}
    assert sorted(messages) == ["fallbacks.0", "sheets.2.fallbacks.1"], messages
    assert "cannot stand in for 'shell'" in messages["fallbacks.0"]
    with pytest.raises(SpecError):
        await fleet.submit_job(spec=spec)
    assert (await fleet.list_jobs())[0] == []
    del spec["fallbacks"]
    spec["sheets"][2]["fallbacks"] = ["shell"]
    assert (await fleet.validate_spec(spec=spec)).valid


async def test_sheets_behind_a_long_hold_move_on_without_running_into_it(
    fleet: Conductor,
) -> None:
    """The hold one sheet's rate limit set is the instrument's: every later sheet with
    fallbacks whose instrument is held past the bound moves on too, instead of sitting
    `pending` for hours; a sheet without fallbacks still waits for the hold."""
    spec = {
        "name": "behind-hold",
        "instrument": "limited",
        "fallbacks": ["working"],
        "fallback_wait_seconds": 60,
        "sheets": [
            {"name": "first", "prompt": "one"},
            {"name": "second", "depends_on": ["first"], "prompt": "two"},
        ],
    }
    detail, history, _ = await run(fleet, spec)
    assert detail.status is JobStatus.COMPLETED, [s.last_error for s in detail.sheets]
    assert [(h.sheet_num, h.instrument, h.outcome) for h in history] == [
        (1, "limited", Outcome.RATE_LIMITED),
        (1, "working", Outcome.COMPLETED),
        (2, "working", Outcome.COMPLETED),
    ]
    assert detail.sheets[1].instrument == "working"
    # Another job on the held instrument moves at once; one without fallbacks waits.
    other = await fleet.submit_job(spec={**spec, "name": "later"})
    stuck = await fleet.submit_job(
        spec={"name": "no-fallback", "instrument": "limited", "sheets": [{"prompt": "x"}]}
    )
    done = await wait_for_job(fleet, other.job_id)
    assert done.status is JobStatus.COMPLETED
    later, _ = await fleet.get_execution_history(other.job_id)
    assert {h.instrument for h in later} == {"working"}
    waiting = await fleet.get_job(stuck.job_id)
    # Held, and shown so (SPEC §6): waiting for the hold, not a bare pending.
    assert waiting.sheets[0].status is SheetStatus.WAITING
    assert waiting.sheets[0].waiting_reason is WaitingReason.RATE_LIMIT
    assert waiting.sheets[0].attempts == 0
    assert waiting.sheets[0].instrument == "limited"
    await fleet.cancel_job(stuck.job_id)


async def test_diagnose_blames_the_instrument_that_failed_not_the_one_moved_to(
    fleet: Conductor,
) -> None:
    """After an auth failure moved a sheet on, diagnose names the instrument that failed
    (the one to log in) and the move, not the fallback the sheet waits on now."""
    blocker = await fleet.submit_job(
        spec={"name": "blocker", "instrument": "limited", "sheets": [{"prompt": "x"}]}
    )

    async def held() -> bool:
        return bool((await fleet.status()).rate_limits)

    await wait_until(held, timeout=20)
    moved = await fleet.submit_job(
        spec={
            "name": "moved",
            "instrument": "logged-out",
            "fallbacks": ["limited"],
            "fallback_wait_seconds": 86400,
            "sheets": [{"prompt": "go"}],
        }
    )

    async def on_fallback() -> bool:
        sheet = (await fleet.get_job(moved.job_id)).sheets[0]
        # On the fallback, which is held: shown waiting for that hold.
        return sheet.instrument == "limited" and sheet.waiting_reason is WaitingReason.RATE_LIMIT

    await wait_until(on_fallback, timeout=20)
    result = await fleet.diagnose(moved.job_id)
    [sheet] = result.failing
    assert "'logged-out'" in sheet.cause and "'limited'" in sheet.cause, sheet.cause
    actions = " ".join(s.action for s in result.next_steps)
    assert "log the 'limited' CLI in" not in actions, actions
    assert [(w.sheet_num, w.reason) for w in result.waiting] == [(1, "rate_limit")]
    for job in (blocker, moved):
        await fleet.cancel_job(job.job_id)


async def test_a_fanned_out_stage_sends_no_instance_into_a_hold_its_siblings_just_set(
    fleet: Conductor,
) -> None:
    """Four instances, three at a time, on an instrument whose limit lasts an hour: the
    three that ran into it move on, and the fourth, started in the slot one of them freed,
    goes to the fallback without running into the hold first (a slot frees when a process
    ends, before its result, and with it the hold, is committed)."""
    spec = {
        "name": "fan-behind-hold",
        "instrument": "limited",
        "fallbacks": ["absent", "working"],
        "fallback_wait_seconds": 0,
        "concurrency": {"max_parallel_sheets": 3},
        "sheets": [
            {"name": "part", "fan_out": 4, "prompt": "part {{ instance }}/{{ fan_count }}"},
            {"name": "join", "depends_on": ["part"], "instrument": "shell",
             "prompt": "sort ran-on-working.txt"},
        ],
    }  # fmt: skip
    detail, history, _ = await run(fleet, spec)
    assert detail.status is JobStatus.COMPLETED
    assert detail.sheets[-1].output_tail == "part 1/4\npart 2/4\npart 3/4\npart 4/4\n"
    limited = [h for h in history if h.instrument == "limited"]
    assert all(h.outcome is Outcome.RATE_LIMITED for h in limited)
    first_end = min(h.ended_at for h in limited if h.ended_at is not None)
    assert [h.sheet_num for h in limited if h.started_at >= first_end] == []
    assert [s.instrument for s in detail.sheets] == ["working"] * 4 + ["shell"]

"""The engine's own overhead (dispatch, validations: what no sheet's span shows) is read from
every earlier run whose timeline is sound, failed and cancelled ones too: their attempts'
start and end times are as real as a completed run's. After a failed run of 500 trivial
sheets, the next estimate said 0.6 s for what took ~10 s. Pure: the runs are written as the
store would hand them back, with their moments set; then two real runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from helpers import wait_for_job, wait_until

from podium.core.conductor import Conductor
from podium.core.estimate import History, SheetSample, SheetSamples, estimate, simulate
from podium.core.history_samples import run_samples
from podium.core.models import (
    HistoryEntry,
    JobDetail,
    JobStatus,
    Outcome,
    SheetState,
    SheetStatus,
)
from podium.core.spec.loader import load_spec

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _sheet(num: int, status: SheetStatus, attempts: int = 1) -> SheetState:
    return SheetState(
        sheet_num=num, name=None, status=status, attempts=attempts, depends_on=[],
        instrument="shell", started_at=None, completed_at=None, duration_seconds=None,
        last_error=None, error_category=None, waiting_reason=None, waiting_until=None,
        output_tail=None, log_uri=None,
    )  # fmt: skip


def _attempt(num: int, start: float, end: float | None, outcome: Outcome | None) -> HistoryEntry:
    return HistoryEntry(
        sheet_num=num, attempt=1, started_at=_at(start),
        ended_at=None if end is None else _at(end), exit_code=0 if outcome else None,
        duration_seconds=None if end is None else end - start, outcome=outcome,
        error_category=None, log_path="x.log",
    )  # fmt: skip


def _job(status: JobStatus, sheets: list[SheetState], seconds: float) -> JobDetail:
    return JobDetail(
        job_id="earlier", name="trivial", status=status, total_sheets=len(sheets),
        completed_sheets=sum(s.status is SheetStatus.COMPLETED for s in sheets),
        failed_sheets=sum(s.status is SheetStatus.FAILED for s in sheets),
        submitted_at=T0, started_at=T0, completed_at=_at(seconds), pause_reason=None,
        error=None, labels=[], workspace="/w", priority=5, sheets_total_matching=len(sheets),
        sheets=sheets, spec={"name": "trivial"},
    )  # fmt: skip


def _one_at_a_time(statuses: list[tuple[SheetStatus, Outcome | None]]) -> list[HistoryEntry]:
    """Each sheet that ran took 1 s, one after another, 1 s of the engine's between them."""
    return [
        _attempt(num, 2.0 * (num - 1), 2.0 * (num - 1) + 1, outcome)
        for num, (_, outcome) in enumerate(statuses, start=1)
        if outcome is not None
    ]


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED])
def test_a_run_that_did_not_complete_tells_the_engines_overhead(status: JobStatus) -> None:
    """Four sheets ran (one failed, or was cancelled), the fifth never started: 4 s of the
    job's 8 s were the sheets', the other 4 s the engine's, 1 s for each sheet that ran."""
    last = SheetStatus.FAILED if status is JobStatus.FAILED else SheetStatus.CANCELLED
    outcome = Outcome.FAILED if status is JobStatus.FAILED else Outcome.CANCELLED
    ran: list[tuple[SheetStatus, Outcome | None]] = [
        (SheetStatus.COMPLETED, Outcome.COMPLETED),
        (SheetStatus.COMPLETED, Outcome.COMPLETED),
        (SheetStatus.COMPLETED, Outcome.COMPLETED),
        (last, outcome),
        (SheetStatus.SKIPPED if status is JobStatus.FAILED else SheetStatus.CANCELLED, None),
    ]
    sheets = [_sheet(n, s, int(o is not None)) for n, (s, o) in enumerate(ran, start=1)]
    found = run_samples(
        _job(status, sheets, 8.0), _one_at_a_time(ran), parallelism=1, gate=lambda _: False
    )
    assert found.overhead == pytest.approx(4.0)
    assert found.ran == 4
    # Its completed sheets are samples; its duration is no completed run's.
    assert len(found.sheets) == 3 and found.seconds is None


def test_a_run_with_an_attempt_that_never_ended_tells_no_overhead() -> None:
    ran: list[tuple[SheetStatus, Outcome | None]] = [
        (SheetStatus.COMPLETED, Outcome.COMPLETED),
        (SheetStatus.FAILED, Outcome.FAILED),
    ]
    sheets = [_sheet(n, s) for n, (s, _) in enumerate(ran, start=1)]
    attempts = [_attempt(1, 0, 1, Outcome.COMPLETED), _attempt(2, 2, None, None)]
    found = run_samples(
        _job(JobStatus.FAILED, sheets, 8.0), attempts, parallelism=1, gate=lambda _: False
    )
    assert found.overhead is None


def test_the_overhead_scales_with_the_sheets_the_spec_runs() -> None:
    """The overhead is the engine's per sheet it dispatches: a run that got through 4 sheets
    at 1 s of overhead each says 500 trivial sheets take about 500 s more than their own
    working time, not 4 s."""
    history = History(earlier_runs=1, overheads_per_sheet=[1.0])
    history.by_instrument["shell"] = SheetSamples()
    history.by_instrument["shell"].add(SheetSample(0.0, None, 1))
    spec = {
        "name": "trivial",
        "sheet": {"size": 1, "total_items": 500},
        "prompt": {"template": "true"},
    }
    guess = estimate(load_spec(data=spec), history, max_concurrent_sheets=4)
    assert guess.expected_seconds == pytest.approx(500.0)


async def test_after_a_failed_run_the_estimate_counts_the_engines_overhead(
    conductor: Conductor,
) -> None:
    """A real failed run of trivial sheets: the estimate is more than the simulation of the
    sheets' own working time (it was exactly that, the overhead left out, before)."""
    sheets: list[dict[str, object]] = [{"prompt": "true"} for _ in range(29)]
    spec = {
        "name": "mostly-trivial",
        "on_failure": "continue",
        "retry": {"max_retries": 0},
        "sheets": [*sheets, {"prompt": "exit 1"}],
    }
    job = await conductor.submit_job(spec=spec)
    assert (await wait_for_job(conductor, job.job_id, timeout=60)).status is JobStatus.FAILED

    guess = await conductor.estimate(spec=spec)
    assert guess.earlier_runs == 1 and guess.observed_seconds is None
    own = {s.sheet_num: s.expected_seconds or 0.0 for s in guess.sheets}
    working = simulate(own, {n: [] for n in own}, guess.parallelism)
    # More by more than rounding (figures are given to the millisecond).
    assert guess.expected_seconds is not None and guess.expected_seconds > working + 0.001, guess


async def test_a_cancelled_run_of_the_name_is_an_earlier_run(conductor: Conductor) -> None:
    spec = {
        "name": "cut-off",
        "sheets": [{"name": "quick", "prompt": "true"}, {"prompt": "sleep 30", "depends_on": [1]}],
    }
    job = await conductor.submit_job(spec=spec)

    async def second_runs() -> bool:
        detail = await conductor.get_job(job.job_id)
        return detail.sheets[1].status is SheetStatus.RUNNING

    await wait_until(second_runs, timeout=30)
    await conductor.cancel_job(job.job_id)
    guess = await conductor.estimate(spec=spec)
    assert guess.earlier_runs == 1, guess
    assert guess.sheets[0].basis == "same_sheet", guess

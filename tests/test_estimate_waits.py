"""`estimate` counts working time, not waits: a sheet that once sat two hours behind a rate
limit, an approval that waited hours for a person, a retry held back, a job paused between
its sheets or frozen by `pause immediate` must not make the next estimate hours longer. The
waits are reported beside the figure (`note`, `observed_seconds`). And `diagnose` does not
take an approval's wait for running time.

Each history is made by a real conductor running real processes on a real store; the wait is
then lengthened in the stored rows (every moment after it moves later), as a longer wait
would have left them: a test cannot wait two hours."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import commit_rows, wait_for_job, wait_until

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.history_samples import run_samples
from podium.core.models import (
    HistoryEntry,
    JobDetail,
    JobStatus,
    Outcome,
    SheetState,
    SheetStatus,
    WaitingReason,
)
from podium.core.store.open import open_store

pytestmark = pytest.mark.anyio

HOURS = timedelta(hours=2)
# bash with a rate-limit pattern: a prompt that prints the message is rate limited.
LIMITED_BASH = """\
name: limited-bash
executable: bash
args: ["-c", "{prompt}"]
patterns:
  rate_limit:
    - regex: "rate limit.*retry after (?P<secs>[0-9]+) seconds"
      retry_after_group: secs
"""
# The first run of a sheet (per job: its marker is in the job's own workspace) is rate
# limited for a second; the next one works.
LIMITED_ONCE = (
    "if [ ! -e {mark} ]; then touch {mark}; echo 'Error: 429 rate limit, retry after 1 seconds'"
    " >&2; exit 1; fi; sleep {seconds}"
)
FAILS_ONCE = "if [ ! -e {mark} ]; then touch {mark}; sleep {seconds}; exit 1; fi; sleep {seconds}"


@pytest.fixture
def config(make_config: Callable[..., PodiumConfig], home: Path) -> PodiumConfig:
    (home / "instruments").mkdir(exist_ok=True)
    (home / "instruments" / "limited-bash.yaml").write_text(LIMITED_BASH)
    return make_config(max_concurrent_sheets=4)


async def stretch(config: PodiumConfig, job_id: str, after: datetime, by: timedelta) -> None:
    """Move every moment of the job's rows later than `after` on by `by`, as a wait that
    began at `after` and lasted `by` longer would have left them. An attempt that ran no
    process (an approval's) and spans the moment lasted that much longer too; a process's
    own running time does not change with a wait around it."""
    store = await open_store(config)
    try:
        job = await store.get_job(job_id)
        assert job is not None
        sheets = await store.get_sheets(job_id)
        attempts, _ = await store.get_history(job_id, None, 10_000, 0)

        def later(moment: datetime | None) -> datetime | None:
            return moment + by if moment is not None and moment > after else moment

        job.started_at, job.completed_at = later(job.started_at), later(job.completed_at)
        job.updated_at = later(job.updated_at) or job.updated_at
        for sheet in sheets:
            sheet.started_at = later(sheet.started_at)
            sheet.completed_at = later(sheet.completed_at)
            sheet.updated_at = later(sheet.updated_at) or sheet.updated_at
        for attempt in attempts:
            spans = attempt.started_at <= after < (attempt.ended_at or after)
            if spans and attempt.log_path is None and attempt.duration_seconds is not None:
                attempt.duration_seconds += by.total_seconds()
            attempt.started_at = later(attempt.started_at) or attempt.started_at
            attempt.ended_at = later(attempt.ended_at)
        await commit_rows(store, jobs=[job], sheets=sheets, attempts=attempts)
    finally:
        await store.close()


async def run(conductor: Conductor, spec: dict[str, Any]) -> tuple[str, list[HistoryEntry]]:
    job = await conductor.submit_job(spec=spec)
    done = await wait_for_job(conductor, job.job_id, timeout=60)
    assert done.status is JobStatus.COMPLETED, done
    history, _ = await conductor.get_execution_history(job.job_id)
    return job.job_id, history


def by_name(guess: Any) -> dict[str | None, Any]:
    return {s.name: s for s in guess.sheets}


async def test_a_long_rate_limit_hold_is_not_the_sheets_duration(config: PodiumConfig) -> None:
    spec = {
        "name": "held-once",
        "instrument": "limited-bash",
        "sheets": [
            {"name": "a", "prompt": LIMITED_ONCE.format(mark="a.mark", seconds=0.3)},
            {"name": "b", "prompt": "sleep 0.3", "depends_on": ["a"]},
        ],
    }
    async with Conductor(config) as conductor:
        job_id, history = await run(conductor, spec)
    limited, worked = [e for e in history if e.sheet_num == 1]
    assert limited.outcome is Outcome.RATE_LIMITED and worked.outcome is Outcome.COMPLETED
    assert limited.ended_at is not None
    await stretch(config, job_id, limited.ended_at, HOURS)

    async with Conductor(config) as conductor:
        guess = await conductor.estimate(spec=spec)
    sheets = by_name(guess)
    # The rate-limited attempt and the two hours behind the limit are not sheet a's work.
    assert sheets["a"].expected_seconds == pytest.approx(0.3, abs=0.25), guess
    assert sheets["b"].expected_seconds == pytest.approx(0.3, abs=0.25), guess
    assert guess.expected_seconds is not None and guess.expected_seconds < 5, guess
    assert guess.attempts == 3 and guess.samples == 2
    # What the run took, waits included, and what it waited for, are said beside it.
    assert guess.observed_seconds is not None and guess.observed_seconds > HOURS.total_seconds()
    assert "rate limits (1 sheet run(s), longest 2h00m)" in guess.note, guess.note


async def test_an_approval_that_waited_hours_needs_no_working_time(
    config: PodiumConfig,
) -> None:
    spec = {
        "name": "gated",
        "sheets": [
            {"name": "build", "prompt": "sleep 0.3"},
            {"name": "ask", "instrument": "approval", "prompt": "ship?", "depends_on": ["build"]},
            {"name": "ship", "prompt": "sleep 0.3", "depends_on": ["ask"]},
        ],
    }
    async with Conductor(config) as conductor:
        job = await conductor.submit_job(spec=spec)

        async def asking() -> bool:
            gate = (await conductor.get_job(job.job_id)).sheets[1]
            return gate.waiting_reason is WaitingReason.APPROVAL

        await wait_until(asking, timeout=20)
        await conductor.approvals.approve(job.job_id, "ask", "approve", decided_by="tester")
        assert (await wait_for_job(conductor, job.job_id)).status is JobStatus.COMPLETED
        history, _ = await conductor.get_execution_history(job.job_id)
    [decided] = [e for e in history if e.sheet_num == 2]
    await stretch(config, job.job_id, decided.started_at, 3 * timedelta(hours=1))

    async with Conductor(config) as conductor:
        guess = await conductor.estimate(spec=spec)
        # A new job with a gate of its own and no history of it: the gate is not assumed
        # to take as long as the other sheets.
        fresh = await conductor.estimate(
            spec={
                "name": "gated-new",
                "instrument": "limited-bash",
                "sheets": [
                    {"name": "x", "prompt": "sleep 1"},
                    {"name": "ok", "instrument": "approval", "prompt": "?", "depends_on": ["x"]},
                ],
            }
        )
    sheets = by_name(guess)
    assert sheets["ask"].expected_seconds == 0.0 and sheets["ask"].basis == "same_sheet"
    assert guess.expected_seconds is not None and guess.expected_seconds < 5, guess
    assert guess.critical_path_seconds == pytest.approx(0.6, abs=0.4)
    assert guess.observed_seconds is not None and guess.observed_seconds > 3 * 3600
    assert "approvals (1 sheet run(s), longest 3h00m)" in guess.note, guess.note

    # `limited-bash` has no history, so x has none: nothing to draw on but the gate's zero.
    assert fresh.expected_seconds is None and fresh.note.startswith("no history")


async def test_an_approval_without_history_is_assumed_to_need_no_time(
    config: PodiumConfig,
) -> None:
    async with Conductor(config) as conductor:
        await run(conductor, {"name": "plain", "sheets": [{"prompt": "sleep 0.5"}]})
        guess = await conductor.estimate(
            spec={
                "name": "gated-new",
                "sheets": [
                    {"name": "x", "prompt": "sleep 0.5"},
                    {"name": "ok", "instrument": "approval", "prompt": "?", "depends_on": ["x"]},
                ],
            }
        )
    sheets = by_name(guess)
    assert sheets["x"].basis == "same_instrument"
    assert sheets["ok"].basis == "assumed" and sheets["ok"].expected_seconds is None
    assert guess.sequential_seconds == sheets["x"].expected_seconds, guess
    assert "1 approval sheet(s) without history assumed to need no working time" in guess.note


async def test_retried_attempts_count_with_their_backoff_but_not_a_hold(
    config: PodiumConfig,
) -> None:
    """A flaky sheet really takes both attempts and the backoff between them; a retry held
    back longer than the retry policy's backoff (backpressure, say) waited the rest."""
    spec = {
        "name": "flaky",
        "retry": {"max_retries": 2, "base_delay_seconds": 0.5, "jitter": False},
        "sheets": [{"name": "a", "prompt": FAILS_ONCE.format(mark="a.mark", seconds=0.3)}],
    }
    async with Conductor(config) as conductor:
        job_id, history = await run(conductor, spec)
        plain = await conductor.estimate(spec=spec)
    failed, worked = history
    assert failed.outcome is Outcome.FAILED and worked.outcome is Outcome.COMPLETED
    # Two 0.3 s runs and the 0.5 s backoff.
    assert plain.sheets[0].expected_seconds == pytest.approx(1.1, abs=0.3), plain
    assert failed.ended_at is not None
    await stretch(config, job_id, failed.ended_at, HOURS)

    async with Conductor(config) as conductor:
        guess = await conductor.estimate(spec=spec)
    assert guess.sheets[0].expected_seconds == pytest.approx(1.1, abs=0.3), guess
    assert guess.expected_seconds is not None and guess.expected_seconds < 5, guess
    assert guess.attempts == 2
    assert "other holds (1 sheet run(s), longest 2h00m)" in guess.note, guess.note


async def test_a_hold_is_counted_once_when_its_sheet_and_its_instrument_are_both_drawn_on(
    config: PodiumConfig,
) -> None:
    """Sheet `a`'s run is in its own samples and its instrument's, which the new sheet `b`
    draws on: the note named the one held run twice ("2 sheet run(s)")."""
    spec = {
        "name": "flaky",
        "retry": {"max_retries": 2, "base_delay_seconds": 0.5, "jitter": False},
        "sheets": [{"name": "a", "prompt": FAILS_ONCE.format(mark="a.mark", seconds=0.3)}],
    }
    async with Conductor(config) as conductor:
        job_id, [failed, _] = await run(conductor, spec)
    assert failed.ended_at is not None
    await stretch(config, job_id, failed.ended_at, HOURS)
    grown = {**spec, "sheets": [*spec["sheets"], {"name": "b", "prompt": "true"}]}
    async with Conductor(config) as conductor:
        guess = await conductor.estimate(spec=grown)
    sheets = by_name(guess)
    assert sheets["a"].basis == "same_sheet" and sheets["b"].basis == "same_instrument", guess
    assert guess.samples == 1
    assert "other holds (1 sheet run(s), longest 2h00m)" in guess.note, guess.note


async def test_a_job_paused_between_its_sheets_does_not_lengthen_the_next_estimate(
    config: PodiumConfig,
) -> None:
    """A wait before a sheet's first attempt leaves no record of its own: it shows only as
    the run's overhead beyond its sheets. The run that waited least is the one to trust."""
    spec = {
        "name": "paused-once",
        "sheets": [
            {"name": "a", "prompt": "sleep 1"},
            {"name": "b", "prompt": "sleep 0.3", "depends_on": ["a"]},
        ],
    }
    async with Conductor(config) as conductor:
        await run(conductor, spec)
        job = await conductor.submit_job(spec=spec)

        async def a_runs() -> bool:
            return (await conductor.get_job(job.job_id)).sheets[0].status is SheetStatus.RUNNING

        await wait_until(a_runs, timeout=20)
        await conductor.pause_job(job.job_id)

        async def a_done() -> bool:
            return (await conductor.get_job(job.job_id)).sheets[0].status is SheetStatus.COMPLETED

        await wait_until(a_done, timeout=20)
        await conductor.resume_job(job.job_id)
        assert (await wait_for_job(conductor, job.job_id)).status is JobStatus.COMPLETED
        history, _ = await conductor.get_execution_history(job.job_id)
    [a] = [e for e in history if e.sheet_num == 1]
    assert a.ended_at is not None
    await stretch(config, job.job_id, a.ended_at, HOURS)

    async with Conductor(config) as conductor:
        guess = await conductor.estimate(spec=spec)
    assert guess.earlier_runs == 2
    assert guess.expected_seconds == pytest.approx(1.3, abs=0.5), guess
    # Half of the runs took two hours longer: the median of what they took says so.
    assert guess.observed_seconds is not None and guess.observed_seconds > 3600


async def test_time_frozen_by_pause_immediate_is_not_running_time(config: PodiumConfig) -> None:
    spec = {"name": "frozen", "sheets": [{"name": "a", "prompt": "sleep 0.5"}]}
    async with Conductor(config) as conductor:
        job = await conductor.submit_job(spec=spec)

        async def running() -> bool:
            return (await conductor.get_job(job.job_id)).sheets[0].status is SheetStatus.RUNNING

        await wait_until(running, timeout=20)
        await conductor.pause_job(job.job_id, immediate=True)
        await conductor.resume_job(job.job_id)
        assert (await wait_for_job(conductor, job.job_id)).status is JobStatus.COMPLETED
        [attempt], _ = await conductor.get_execution_history(job.job_id)
    # The freeze, two hours long: the process's own running time leaves it out.
    await stretch(config, job.job_id, attempt.started_at, HOURS)

    async with Conductor(config) as conductor:
        guess = await conductor.estimate(spec=spec)
    assert guess.sheets[0].expected_seconds == pytest.approx(0.5, abs=0.3), guess
    assert guess.expected_seconds is not None and guess.expected_seconds < 5, guess


async def test_diagnose_does_not_take_an_approvals_wait_for_running_time(
    config: PodiumConfig,
) -> None:
    spec = {
        "name": "unanswered",
        "retry": {"max_retries": 0},
        "sheets": [
            {"name": "build", "prompt": "sleep 0.2"},
            {
                "name": "ask",
                "instrument": "approval",
                "prompt": "ship?",
                "depends_on": ["build"],
                "instrument_config": {"timeout_seconds": 0.5},
            },
        ],
    }
    async with Conductor(config) as conductor:
        job = await conductor.submit_job(spec=spec)
        assert (await wait_for_job(conductor, job.job_id)).status is JobStatus.FAILED
        history, _ = await conductor.get_execution_history(job.job_id)
    [expired] = [e for e in history if e.sheet_num == 2]
    assert expired.outcome is Outcome.TIMEOUT
    # Nobody came for a day.
    await stretch(config, job.job_id, expired.started_at, timedelta(days=1))

    async with Conductor(config) as conductor:
        result = await conductor.diagnose(job.job_id)
    [gate] = result.failing
    assert gate.name == "ask" and gate.error_category is not None
    assert gate.running_seconds == 0.0, gate
    assert "nobody approved or rejected it" in gate.cause and "24h00m" in gate.cause, gate.cause
    actions = " ".join(s.action for s in result.next_steps)
    assert "idle_timeout_seconds" not in actions and "ask again" in actions, actions


def _entry(attempt: int, start: float, end: float, outcome: Outcome) -> HistoryEntry:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return HistoryEntry(
        sheet_num=1, attempt=attempt, started_at=t0 + timedelta(seconds=start),
        ended_at=t0 + timedelta(seconds=end), exit_code=0 if outcome is Outcome.COMPLETED else 1,
        duration_seconds=end - start, outcome=outcome, error_category=None, log_path="x.log",
    )  # fmt: skip


@pytest.mark.parametrize(("max_retries", "failed_runs"), [(0, 1), (1, 2), (3, 4)])
def test_no_backoff_is_counted_where_the_policy_had_no_retry_left(
    max_retries: int, failed_runs: int
) -> None:
    """The sheet spent its retries (each after its backoff) and failed; someone resumed the
    job much later (a fresh retry budget) and it completed. The gap before the resume is a
    hold, not a backoff: the policy waits none once no retry is left."""
    base = 1.0
    entries, at = [], 0.0
    for attempt in range(1, failed_runs + 1):
        entries.append(_entry(attempt, at, at + 0.5, Outcome.FAILED))
        at += 0.5 + base * 2 ** (attempt - 1)  # the backoff before the next retry
    resumed = at + 3600.0
    entries.append(_entry(failed_runs + 1, resumed, resumed + 0.5, Outcome.COMPLETED))
    sheet = SheetState(
        sheet_num=1, name="s", status=SheetStatus.COMPLETED, attempts=failed_runs + 1,
        depends_on=[], instrument="shell", started_at=None, completed_at=None,
        duration_seconds=None, last_error=None, error_category=None, waiting_reason=None,
        waiting_until=None, output_tail=None, log_uri=None,
    )  # fmt: skip
    detail = JobDetail(
        job_id="j", name="resumed", status=JobStatus.COMPLETED, total_sheets=1,
        completed_sheets=1, failed_sheets=0, submitted_at=entries[0].started_at,
        started_at=entries[0].started_at, completed_at=entries[-1].ended_at, pause_reason=None,
        error=None, labels=[], workspace="/w", priority=5, sheets_total_matching=1,
        sheets=[sheet],
        spec={"name": "resumed", "retry": {"max_retries": max_retries, "base_delay_seconds": base,
              "jitter": False}},
    )  # fmt: skip
    [(_, _, sample)] = run_samples(detail, entries, parallelism=1, gate=lambda _: False).sheets
    backoffs = sum(base * 2 ** (n - 1) for n in range(1, failed_runs))
    assert sample.seconds == pytest.approx(0.5 * (failed_runs + 1) + backoffs)
    assert sample.waits["held"] == pytest.approx(3600.0 + base * 2 ** (failed_runs - 1))


def test_a_retry_dispatched_just_after_its_backoff_was_not_held() -> None:
    """The engine starts a retry a few milliseconds after its backoff ends: that is no hold,
    and the note said "other holds (1 sheet run(s), longest 0.0s)" after every retry."""
    base = 0.05
    entries = [
        _entry(1, 0.0, 0.3, Outcome.FAILED),
        _entry(2, 0.3 + base + 0.009, 0.7, Outcome.COMPLETED),  # 9 ms of dispatch
    ]
    [(_, _, sample)] = run_samples(
        _one_sheet_job(entries, max_retries=2, base=base), entries, parallelism=1,
        gate=lambda _: False,
    ).sheets  # fmt: skip
    assert sample.waits == {}, sample
    assert sample.seconds == pytest.approx(0.3 + base + 0.341)
    # A retry held back for seconds past its backoff (backpressure) still is a hold.
    entries[1] = _entry(2, 0.3 + base + 5.0, 5.7, Outcome.COMPLETED)
    [(_, _, sample)] = run_samples(
        _one_sheet_job(entries, max_retries=2, base=base), entries, parallelism=1,
        gate=lambda _: False,
    ).sheets  # fmt: skip
    assert sample.waits["held"] == pytest.approx(5.0)


def _one_sheet_job(entries: list[HistoryEntry], max_retries: int, base: float) -> JobDetail:
    sheet = SheetState(
        sheet_num=1, name="s", status=SheetStatus.COMPLETED, attempts=len(entries),
        depends_on=[], instrument="shell", started_at=None, completed_at=None,
        duration_seconds=None, last_error=None, error_category=None, waiting_reason=None,
        waiting_until=None, output_tail=None, log_uri=None,
    )  # fmt: skip
    return JobDetail(
        job_id="j", name="retried", status=JobStatus.COMPLETED, total_sheets=1,
        completed_sheets=1, failed_sheets=0, submitted_at=entries[0].started_at,
        started_at=entries[0].started_at, completed_at=entries[-1].ended_at, pause_reason=None,
        error=None, labels=[], workspace="/w", priority=5, sheets_total_matching=1,
        sheets=[sheet],
        spec={"name": "retried", "retry": {"max_retries": max_retries, "base_delay_seconds": base,
              "jitter": False}},
    )  # fmt: skip

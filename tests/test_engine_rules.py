"""The engine's pure parts, tested directly: transition rules, the fair-share pick, and the
ready index of one job (SPEC §6 retries and rate limits, §9 traps 2 and 7)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from podium.core.engine.attempts import Continuation, continuation
from podium.core.engine.rules import (
    JUDGES,
    RetryLimits,
    backoff_seconds,
    final_job_status,
    interrupt,
    interrupt_in_ended_job,
    judge_attempt,
    last_known_running,
    reset_for_retry,
    set_job_status,
    skipped_after_failure,
    unreachable,
)
from podium.core.engine.scheduler import Candidate, Limits, pick_next
from podium.core.engine.state import JobState
from podium.core.models import (
    ErrorCategory,
    JobStatus,
    Outcome,
    PauseReason,
    SheetStatus,
    ValidationResult,
    WaitingReason,
)
from podium.core.runner.logs import truncation_marker
from podium.core.runner.runner import AttemptResult
from podium.core.spec.models import RetryPolicy
from podium.core.store.rows import AttemptRow, JobRow, SheetRow

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LIMITS = RetryLimits(max_rate_limit_retries=2, max_rate_limit_wait_seconds=60)
POLICY = RetryPolicy(max_retries=1, base_delay_seconds=2, max_delay_seconds=120, jitter=False)


def sheet(
    num: int, status: SheetStatus = SheetStatus.PENDING, deps: tuple[int, ...] = ()
) -> SheetRow:
    return SheetRow("job", num, f"s{num}", status, "shell", T0, depends_on=list(deps))


def job(status: JobStatus = JobStatus.RUNNING) -> JobRow:
    return JobRow("job", "demo", status, "/w", "fp", 0, T0, T0)


def result(outcome: Outcome, **extra: object) -> AttemptResult:
    fields: dict[str, object] = {
        "outcome": outcome,
        "error_category": None if outcome is Outcome.COMPLETED else ErrorCategory.FAILED,
        "error": None if outcome is Outcome.COMPLETED else "boom",
        "exit_code": 0 if outcome is Outcome.COMPLETED else 1,
        "signal": None,
        "started_at": T0,
        "ended_at": T0 + timedelta(seconds=1),
        "duration_seconds": 1.0,
        "stdout_tail": "x" * 5000,
        "log_path": "/l",
    }
    fields.update(extra)
    return AttemptResult(**fields)  # type: ignore[arg-type]


# ----- attempt results -------------------------------------------------------------------


def test_success_completes_the_sheet_and_keeps_the_last_4_kib() -> None:
    row = sheet(1, SheetStatus.RUNNING)
    verdict = judge_attempt(row, result(Outcome.COMPLETED), POLICY, LIMITS, T0)
    assert verdict.outcome is Outcome.COMPLETED and not verdict.failed
    assert verdict.hold_until is None
    assert row.status is SheetStatus.COMPLETED and row.completed_at == T0
    assert row.output_tail is not None and len(row.output_tail) == 4096


def test_a_failed_run_waits_for_its_backoff_then_fails_for_good() -> None:
    row = sheet(1, SheetStatus.RUNNING)
    first = judge_attempt(row, result(Outcome.FAILED), POLICY, LIMITS, T0)
    assert (first.outcome, first.failed) == (Outcome.FAILED, False)
    assert row.status is SheetStatus.WAITING
    assert row.waiting_reason is WaitingReason.RETRY_BACKOFF
    assert row.waiting_until == T0 + timedelta(seconds=2)  # base delay, no jitter
    assert row.retries_used == 1
    second = judge_attempt(row, result(Outcome.TIMEOUT), POLICY, LIMITS, T0)
    assert (second.outcome, second.failed) == (Outcome.TIMEOUT, True)
    assert row.status is SheetStatus.FAILED and row.last_error == "boom"


def test_an_auth_error_fails_at_once_without_a_retry() -> None:
    row = sheet(1, SheetStatus.RUNNING)
    auth = result(Outcome.FAILED, error_category=ErrorCategory.AUTH)
    verdict = judge_attempt(row, auth, POLICY, LIMITS, T0)
    assert verdict.failed and row.status is SheetStatus.FAILED and row.retries_used == 0
    assert row.error_category is ErrorCategory.AUTH


def test_a_rate_limit_holds_without_spending_a_retry_until_its_budget_runs_out() -> None:
    row = sheet(1, SheetStatus.RUNNING)
    limited = result(
        Outcome.RATE_LIMITED, error_category=ErrorCategory.RATE_LIMITED, retry_after_seconds=600
    )
    verdict = judge_attempt(row, limited, POLICY, LIMITS, T0)
    # The reported wait is capped by max_rate_limit_wait_seconds.
    assert verdict.hold_until == T0 + timedelta(seconds=60) and not verdict.failed
    assert row.status is SheetStatus.WAITING and row.waiting_reason is WaitingReason.RATE_LIMIT
    assert row.waiting_until == T0 + timedelta(seconds=60)
    assert (row.retries_used, row.rate_limit_hits) == (0, 1)
    judge_attempt(row, limited, POLICY, LIMITS, T0)
    final = judge_attempt(row, limited, POLICY, LIMITS, T0)
    assert final.failed and final.hold_until is None
    assert row.status is SheetStatus.FAILED and row.error_category is ErrorCategory.RATE_LIMITED
    assert "still rate limited after 2 waits" in (row.last_error or "")


def test_a_billing_stop_fails_at_once_without_a_retry() -> None:
    row = sheet(1, SheetStatus.RUNNING)
    billing = result(Outcome.FAILED, error_category=ErrorCategory.BILLING)
    verdict = judge_attempt(row, billing, POLICY, LIMITS, T0)
    assert verdict.failed and verdict.hold_until is None
    assert row.status is SheetStatus.FAILED and row.retries_used == 0
    assert row.error_category is ErrorCategory.BILLING


def test_a_reported_reset_moment_is_the_wait_itself_capped_by_the_limit() -> None:
    # The runner dated the reset with its own clock (here 10 s before the writer's `now`):
    # the sheet waits until that very moment, not `now` plus the seconds.
    read_at = T0 - timedelta(seconds=10)
    soon = result(
        Outcome.RATE_LIMITED,
        error_category=ErrorCategory.RATE_LIMITED,
        reset_at=read_at + timedelta(seconds=45),
        retry_after_seconds=45,
    )
    row = sheet(1, SheetStatus.RUNNING)
    assert judge_attempt(row, soon, POLICY, LIMITS, T0).hold_until == read_at + timedelta(
        seconds=45
    )
    assert row.waiting_until == read_at + timedelta(seconds=45)
    far = result(
        Outcome.RATE_LIMITED,
        error_category=ErrorCategory.RATE_LIMITED,
        reset_at=read_at + timedelta(hours=3),
        retry_after_seconds=3 * 3600,
    )
    row = sheet(1, SheetStatus.RUNNING)
    judge_attempt(row, far, POLICY, LIMITS, T0)
    assert row.waiting_until == read_at + timedelta(seconds=60)  # max_rate_limit_wait_seconds


def test_a_reset_moment_already_past_backs_off_instead() -> None:
    past = result(
        Outcome.RATE_LIMITED,
        error_category=ErrorCategory.RATE_LIMITED,
        reset_at=T0 - timedelta(minutes=2),
        retry_after_seconds=0.0,
    )
    row = sheet(1, SheetStatus.RUNNING)
    verdict = judge_attempt(row, past, POLICY, LIMITS, T0)
    assert verdict.hold_until == T0 + timedelta(seconds=2)  # the first backoff step
    assert row.waiting_until == T0 + timedelta(seconds=2)


def test_every_outcome_has_a_rule_and_unknown_ones_are_failed_runs() -> None:
    assert set(JUDGES) == {Outcome.COMPLETED, Outcome.RATE_LIMITED}
    for outcome in (Outcome.FAILED, Outcome.TIMEOUT, Outcome.CANCELLED):
        row = sheet(1, SheetStatus.RUNNING)
        assert judge_attempt(row, result(outcome), POLICY, LIMITS, T0).outcome is outcome


def test_backoff_grows_exponentially_is_capped_and_jitters_down() -> None:
    plain = RetryPolicy(max_retries=9, base_delay_seconds=2, max_delay_seconds=30, jitter=False)
    assert [backoff_seconds(plain, n) for n in range(6)] == [2, 4, 8, 16, 30, 30]
    jittered = plain.model_copy(update={"jitter": True})
    rng = random.Random(7)
    samples = [backoff_seconds(jittered, 3, rng) for _ in range(50)]
    assert all(8 <= s <= 16 for s in samples) and len(set(samples)) > 1


# ----- failure propagation, unreachable sheets, the job's final status ----------------------


def test_a_failure_skips_dependents_and_with_stop_every_sheet_not_started() -> None:
    rows = {
        1: sheet(1, SheetStatus.FAILED),
        2: sheet(2, deps=(1,)),
        3: sheet(3, SheetStatus.WAITING, deps=(2,)),
        4: sheet(4),
        5: sheet(5, SheetStatus.RUNNING),
    }
    cont = skipped_after_failure(rows, {2, 3}, 1, stop_all=False)
    assert [n for n, _ in cont] == [2, 3]
    assert "depends on sheet 1, which failed" in cont[0][1]
    stop = skipped_after_failure(rows, {2, 3}, 1, stop_all=True)
    # Sheet 5 is running: it finishes and is recorded; only sheets not started are skipped.
    assert [n for n, _ in stop] == [2, 3, 4]
    assert "on_failure is stop" in stop[2][1]


def test_sheets_behind_a_dead_sheet_are_unreachable_whatever_the_depth() -> None:
    rows = {n: sheet(n, deps=(n - 1,) if n > 1 else ()) for n in range(1, 3001)}
    rows[1] = sheet(1, SheetStatus.CANCELLED)
    rows[3001] = sheet(3001)  # independent
    found = dict(unreachable(rows))
    assert set(found) == set(range(2, 3001))
    assert found[2999] == "skipped: depends on sheet 1, which did not complete"


def test_final_status_needs_every_sheet_terminal() -> None:
    assert final_job_status([sheet(1, SheetStatus.COMPLETED), sheet(2)]) is None
    assert final_job_status([sheet(1, SheetStatus.COMPLETED)] * 2) == (JobStatus.COMPLETED, None)
    failed = [sheet(2, SheetStatus.FAILED), sheet(1, SheetStatus.FAILED)]
    for row in failed:
        row.last_error = f"e{row.sheet_num}"
    assert final_job_status(failed) == (JobStatus.FAILED, "sheet 1 failed: e1 (and 1 more)")
    cancelled = [sheet(1, SheetStatus.COMPLETED), sheet(2, SheetStatus.CANCELLED)]
    assert final_job_status(cancelled) == (JobStatus.CANCELLED, None)
    skipped = [sheet(1, SheetStatus.COMPLETED), sheet(2, SheetStatus.SKIPPED)]
    assert final_job_status(skipped) == (JobStatus.FAILED, "some sheets were skipped")


def test_job_status_timestamps_and_pause_reason() -> None:
    row = job(JobStatus.QUEUED)
    set_job_status(row, JobStatus.RUNNING, T0)
    assert (row.started_at, row.completed_at, row.pause_reason) == (T0, None, None)
    row.pause_reason = PauseReason.USER
    set_job_status(row, JobStatus.PAUSED, T0 + timedelta(seconds=1))
    assert row.pause_reason is PauseReason.USER  # kept while paused
    set_job_status(row, JobStatus.RUNNING, T0 + timedelta(seconds=2))
    assert row.started_at == T0 and row.pause_reason is None  # first `running` only
    set_job_status(row, JobStatus.FAILED, T0 + timedelta(seconds=3))
    assert row.completed_at == T0 + timedelta(seconds=3)
    set_job_status(row, JobStatus.QUEUED, T0 + timedelta(seconds=4))
    assert row.completed_at is None


def test_a_restart_keeps_the_retry_budgets_a_resume_renews_them() -> None:
    row = sheet(1, SheetStatus.WAITING)
    row.retries_used, row.rate_limit_hits = 2, 3
    reset_for_retry(row, T0, fresh_budget=False)
    assert (row.status, row.retries_used, row.rate_limit_hits) == (SheetStatus.PENDING, 2, 3)
    reset_for_retry(row, T0)
    assert (row.retries_used, row.rate_limit_hits) == (0, 0)


def test_an_interrupted_attempt_ends_when_last_known_running_and_its_sheet_says_so() -> None:
    started, renewed, now = T0, T0 + timedelta(seconds=40), T0 + timedelta(minutes=5)
    attempt = AttemptRow("job", 1, 1, started, lease_renewed_at=renewed)
    row = sheet(1, SheetStatus.RUNNING)
    row.retries_used, row.started_at = 1, started
    interrupt(now, "its conductor's lease ran out", attempt=attempt, sheet=row,
              ended_at=last_known_running(attempt, now))  # fmt: skip
    assert (attempt.outcome, attempt.error_category) == (
        Outcome.INTERRUPTED,
        ErrorCategory.INTERRUPTED,
    )
    assert (attempt.ended_at, attempt.duration_seconds) == (renewed, 40.0)
    assert attempt.error == row.last_error == "interrupted: its conductor's lease ran out"
    assert (row.status, row.error_category) == (SheetStatus.PENDING, ErrorCategory.INTERRUPTED)
    assert (row.duration_seconds, row.retries_used, row.started_at) == (40.0, 1, None)


def test_an_attempt_the_runner_timed_keeps_its_end_when_interrupted() -> None:
    """A graceful shutdown's attempt was ended by the runner: its own end stands."""
    ended = T0 + timedelta(seconds=3)
    attempt = AttemptRow("job", 1, 1, T0, ended_at=ended, duration_seconds=2.5)
    row = sheet(1, SheetStatus.RUNNING)
    interrupt(T0 + timedelta(seconds=9), "the conductor shut down", attempt=attempt, sheet=row)
    assert (attempt.ended_at, attempt.duration_seconds, row.duration_seconds) == (ended, 2.5, 2.5)
    # A sheet whose attempt left no record says why, with no duration to show.
    alone = sheet(2, SheetStatus.RUNNING)
    alone.duration_seconds = 7.0  # an earlier attempt's
    interrupt(T0, "the conductor stopped while it ran", sheet=alone)
    assert alone.last_error == "interrupted: the conductor stopped while it ran"
    assert alone.duration_seconds is None


def test_an_attempt_cut_off_with_a_log_at_its_cap_is_recorded_truncated() -> None:
    """After a crash or a lease taken back there is no runner's result: the end of the
    attempt's log says whether it reached log_max_bytes."""
    cut_log = "last lines" + truncation_marker(4096).decode()
    for ended_job in (False, True):
        attempt = AttemptRow("job", 1, 1, T0)
        row = sheet(1, SheetStatus.RUNNING)
        if ended_job:
            why, category = "its conductor's lease ran out", ErrorCategory.CANCELLED
            interrupt_in_ended_job(
                T0, why, attempt=attempt, sheet=row, category=category, output=cut_log
            )
        else:
            interrupt(T0, "the conductor stopped", attempt=attempt, sheet=row, output=cut_log)
        assert attempt.log_truncated, ended_job
        assert row.output_tail is not None and "log truncated at 4096 bytes" in row.output_tail
    quiet = AttemptRow("job", 1, 1, T0)
    interrupt(T0, "the conductor stopped", attempt=quiet, output="all of it, under the cap\n")
    assert not quiet.log_truncated
    unread = AttemptRow("job", 1, 1, T0)
    interrupt(T0, "the conductor stopped", attempt=unread, output=None)
    assert not unread.log_truncated


def test_last_known_running_is_the_last_renewal_within_start_and_now() -> None:
    now = T0 + timedelta(minutes=1)
    assert last_known_running(AttemptRow("job", 1, 1, T0), now) == T0  # never renewed
    renewed = AttemptRow("job", 1, 1, T0, lease_renewed_at=T0 + timedelta(seconds=20))
    assert last_known_running(renewed, now) == T0 + timedelta(seconds=20)
    # Another host's clock ran ahead, or behind the start: kept within what is possible.
    ahead = AttemptRow("job", 1, 1, T0, lease_renewed_at=now + timedelta(seconds=5))
    assert last_known_running(ahead, now) == now
    behind = AttemptRow("job", 1, 1, T0, lease_renewed_at=T0 - timedelta(seconds=5))
    assert last_known_running(behind, now) == T0


# ----- the pick ---------------------------------------------------------------------------


def candidate(
    job_id: str, running: int, *, priority: int = 5, age: int = 0, ready: int = 5, parallel: int = 4
) -> Candidate:
    return Candidate(job_id, running, parallel, priority, T0 + timedelta(seconds=age), ready)


def test_the_job_with_fewest_running_sheets_goes_first_then_priority_then_age() -> None:
    limits = Limits(max_concurrent_jobs=8, max_concurrent_sheets=8)
    jobs = [
        candidate("busy", 3),
        candidate("young", 1, age=10),
        candidate("old", 1, age=0),
        candidate("urgent", 1, priority=1, age=20),
    ]
    chosen = pick_next(jobs, limits, active_jobs=4)
    assert chosen is not None and chosen.job_id == "urgent"
    jobs = [candidate("busy", 3), candidate("young", 1, age=10), candidate("old", 1)]
    chosen = pick_next(jobs, limits, active_jobs=3)
    assert chosen is not None and chosen.job_id == "old"


def test_the_pick_respects_job_parallelism_readiness_and_the_job_limit() -> None:
    limits = Limits(max_concurrent_jobs=1, max_concurrent_sheets=8)
    full = candidate("full", 4, parallel=4)
    nothing_ready = candidate("empty", 0, ready=0)
    new = candidate("new", 0)
    assert pick_next([full, nothing_ready], limits, active_jobs=1) is None
    # A job with nothing running may start only under max_concurrent_jobs.
    assert pick_next([new], limits, active_jobs=1) is None
    chosen = pick_next([new], Limits(2, 8), active_jobs=1)
    assert chosen is new


# ----- one job's ready index ------------------------------------------------------------


def test_the_ready_index_follows_dependencies_and_orders_retries_first() -> None:
    rows = [sheet(1), sheet(2, deps=(1,)), sheet(3, deps=(1,)), sheet(4)]
    state = JobState(job(), rows, None, None)
    assert state.ready_keys() == {"shell": 2}  # 1 and 4
    assert state.unmet == {1: 0, 2: 1, 3: 1, 4: 0}
    assert state.pop("shell") == 1
    done = sheet(1, SheetStatus.COMPLETED)
    state.replace_sheet(done, T0)
    assert state.unmet[2] == 0 and state.ready_keys() == {"shell": 3}
    retried = sheet(3)
    retried.retries_used = 1
    state.replace_sheet(retried, T0)
    assert state.pop("shell") == 3  # a retry goes before fresh sheets
    assert state.pop("shell") == 4  # then the shallower sheet (4 has no dependency)
    assert state.pop("shell") == 2
    assert state.pop("shell") is None


def test_a_waiting_sheet_is_ready_only_once_its_time_comes() -> None:
    waiting = sheet(1, SheetStatus.WAITING)
    waiting.waiting_until = T0 + timedelta(seconds=30)
    state = JobState(job(), [waiting], None, None)
    assert state.ready_keys() == {} and state.waiting == {1: waiting.waiting_until}
    assert not state.wait_over(1, T0)
    assert state.wait_over(1, T0 + timedelta(seconds=30))
    assert state.ready_keys() == {"shell": 1}
    assert state.open_sheets == 1


@pytest.mark.parametrize("status", list(SheetStatus))
def test_counts_follow_every_status_change(status: SheetStatus) -> None:
    state = JobState(job(), [sheet(1), sheet(2)], None, None)
    state.replace_sheet(sheet(1, status), T0)
    assert state.counts[status] == (2 if status is SheetStatus.PENDING else 1)
    assert state.open_sheets == (1 if status.is_terminal else 2)


# ----- what a retry carries over ------------------------------------------------------------


def attempt_row(
    attempt: int,
    outcome: Outcome,
    category: ErrorCategory | None,
    session: str | None = "s-1",
    validations: list[ValidationResult] | None = None,
) -> AttemptRow:
    return AttemptRow(
        job_id="j",
        sheet_num=1,
        attempt=attempt,
        started_at=T0,
        outcome=outcome,
        error_category=category,
        session_id=session,
        validations=validations or [],
        instrument="claude-code",
    )


@pytest.mark.parametrize(
    "category",
    [
        ErrorCategory.TIMEOUT,
        ErrorCategory.TRANSIENT,
        ErrorCategory.RATE_LIMITED,
        ErrorCategory.CRASHED,
        ErrorCategory.INTERRUPTED,
    ],
)
def test_a_retry_after_an_interruption_of_the_work_resumes_its_session(
    category: ErrorCategory,
) -> None:
    assert continuation([attempt_row(1, Outcome.FAILED, category)], "claude-code") == Continuation(
        "s-1"
    )


@pytest.mark.parametrize(
    "category", [ErrorCategory.FAILED, ErrorCategory.AUTH, ErrorCategory.BILLING, None]
)
def test_a_retry_after_an_unexplained_failure_starts_afresh(
    category: ErrorCategory | None,
) -> None:
    assert continuation([attempt_row(1, Outcome.FAILED, category)], "claude-code") == Continuation()


def test_a_retry_after_failed_validations_resumes_with_feedback() -> None:
    check = ValidationResult(type="file_exists", passed=False, detail="count.txt does not exist")
    carried = continuation(
        [attempt_row(1, Outcome.FAILED, ErrorCategory.VALIDATION_FAILED, validations=[check])],
        "claude-code",
    )
    assert carried.session_id == "s-1"
    assert carried.feedback is not None
    assert "- file_exists: count.txt does not exist" in carried.feedback


def test_an_attempt_cut_off_before_it_named_its_session_defers_to_the_one_before() -> None:
    cut = attempt_row(2, Outcome.INTERRUPTED, ErrorCategory.INTERRUPTED, session=None)
    timed_out = attempt_row(1, Outcome.TIMEOUT, ErrorCategory.TIMEOUT, session="s-1")
    assert continuation([cut, timed_out], "claude-code") == Continuation("s-1")
    assert continuation([cut], "claude-code") == Continuation()
    # One that named it is enough on its own.
    named = attempt_row(2, Outcome.INTERRUPTED, ErrorCategory.INTERRUPTED, session="s-2")
    assert continuation([named, timed_out], "claude-code") == Continuation("s-2")


def test_a_session_of_another_cli_is_not_resumed_after_a_switch() -> None:
    # A changed spec moved the sheet from claude-code to codex-cli: only the feedback goes on.
    check = ValidationResult(type="file_exists", passed=False, detail="count.txt does not exist")
    failed = attempt_row(1, Outcome.FAILED, ErrorCategory.VALIDATION_FAILED, validations=[check])
    carried = continuation([failed], "codex-cli")
    assert carried.session_id is None and carried.feedback is not None

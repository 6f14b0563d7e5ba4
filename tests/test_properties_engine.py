"""Property tests of the scheduler and the transition rules (issue 10 proof suite), on the
real engine: random DAGs, limits, retry policies and attempt outcomes, drawn by hypothesis,
run by a real conductor (its store, writer, dispatcher and rules) whose attempts are answered
in memory by a stand-in for the runner, so hundreds of sheets take a second or two.

For every run:
- the caps are never exceeded: `max_concurrent_sheets`, `max_concurrent_jobs`, each job's
  `max_parallel_sheets`; no sheet runs twice at once, none before its dependencies completed;
- terminal states absorb: once a sheet is completed, failed, skipped or cancelled, no later
  change moves it, and it is never run again;
- a failure skips exactly the transitive dependents (`on_failure: continue`; with `stop`,
  at least those, and only sheets that had not run to their end);
- each sheet ends as its own outcomes say (retries and rate-limit budgets counted as the
  SPEC says), with exactly that many attempts in the history;
- a job is terminal exactly when all its sheets are (checked at every change event, in
  commit order, as well as at the end).
`--long` draws many more runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.engine import dispatch as dispatch_module
from podium.core.events import ChangeEvent
from podium.core.models import ErrorCategory, JobStatus, Outcome, SheetStatus, utcnow
from podium.core.runner.runner import AttemptResult

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

MAX_RATE_LIMIT_RETRIES = 2
ATTEMPT_OUTCOMES = [Outcome.COMPLETED, Outcome.FAILED, Outcome.TIMEOUT, Outcome.RATE_LIMITED]
CATEGORY = {
    Outcome.FAILED: ErrorCategory.FAILED,
    Outcome.TIMEOUT: ErrorCategory.TIMEOUT,
    Outcome.RATE_LIMITED: ErrorCategory.RATE_LIMITED,
}


@dataclass
class JobPlan:
    deps: dict[int, list[int]]
    outcomes: dict[int, list[Outcome]]  # per attempt; the last one repeats
    max_retries: int
    max_parallel: int
    on_failure: str
    job_id: str = field(default_factory=lambda: f"p-{uuid.uuid4().hex[:10]}")

    def spec(self) -> dict[str, Any]:
        return {
            "name": "prop",
            "retry": {
                "max_retries": self.max_retries,
                "base_delay_seconds": 0.001,
                "max_delay_seconds": 0.005,
                "jitter": False,
            },
            "concurrency": {"max_parallel_sheets": self.max_parallel},
            "on_failure": self.on_failure,
            "sheets": [{"prompt": f"sheet {n}", "depends_on": self.deps[n]} for n in self.deps],
        }

    def outcome(self, sheet: int, attempt: int) -> Outcome:
        listed = self.outcomes[sheet]
        return listed[min(attempt, len(listed)) - 1]

    def fate(self, sheet: int) -> tuple[SheetStatus, int]:
        """How the sheet ends if it runs to its end, and after how many attempts: the SPEC's
        retry rules, written down independently of the engine's."""
        retries = hits = 0
        attempt = 0
        while True:
            attempt += 1
            outcome = self.outcome(sheet, attempt)
            if outcome is Outcome.COMPLETED:
                return SheetStatus.COMPLETED, attempt
            if outcome is Outcome.RATE_LIMITED:
                hits += 1
                if hits > MAX_RATE_LIMIT_RETRIES:
                    return SheetStatus.FAILED, attempt
                continue
            if retries < self.max_retries:
                retries += 1
                continue
            return SheetStatus.FAILED, attempt

    def descendants(self, sheet: int) -> set[int]:
        found: set[int] = set()
        frontier = [sheet]
        while frontier:
            top = frontier.pop()
            for n, deps in self.deps.items():
                if top in deps and n not in found:
                    found.add(n)
                    frontier.append(n)
        return found


@st.composite
def job_plans(draw: st.DrawFn) -> JobPlan:
    n = draw(st.integers(1, 8))
    deps = {
        i: sorted(draw(st.sets(st.integers(1, i - 1), max_size=3))) if i > 1 else []
        for i in range(1, n + 1)
    }
    weights = st.sampled_from([Outcome.COMPLETED] * 4 + ATTEMPT_OUTCOMES)
    outcomes = {i: draw(st.lists(weights, min_size=1, max_size=4)) for i in deps}
    return JobPlan(
        deps=deps,
        outcomes=outcomes,
        max_retries=draw(st.integers(0, 2)),
        max_parallel=draw(st.integers(1, 3)),
        on_failure=draw(st.sampled_from(["stop", "continue"])),
    )


def draw_runs(count: int) -> list[list[JobPlan]]:
    """Runs of 1-4 jobs submitted together, drawn before any event loop runs."""
    runs: list[list[JobPlan]] = []

    @settings(
        max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.lists(job_plans(), min_size=1, max_size=4))
    def collect(plans: list[JobPlan]) -> None:
        runs.append(plans)

    collect()
    return runs


class StandIn:
    """Answers attempts in memory, as the plans say, watching what the engine asks of it."""

    def __init__(self, conductor: Conductor, plans: dict[str, JobPlan]) -> None:
        self.conductor = conductor
        self.plans = plans
        self.running: set[tuple[str, int]] = set()
        self.attempts: dict[tuple[str, int], int] = {}
        self.ended: set[tuple[str, int]] = set()  # ran to a terminal result
        self.violations: list[str] = []
        self.peak_sheets = 0
        self.peak_jobs = 0

    async def run_attempt(self, plan: Any, control: Any, **_: Any) -> AttemptResult:
        key = (plan.job_id, plan.sheet_num)
        job_plan = self.plans[plan.job_id]
        config = self.conductor.config
        if key in self.running:
            self.violations.append(f"{key} started while it ran")
        if key in self.ended:
            self.violations.append(f"{key} ran again after it ended")
        if plan.attempt != self.attempts.get(key, 0) + 1:
            self.violations.append(f"{key} attempt {plan.attempt} after {self.attempts.get(key)}")
        self.attempts[key] = plan.attempt
        rows = {s.sheet_num: s for s in await self.conductor.store.get_sheets(plan.job_id)}
        for dep in job_plan.deps[plan.sheet_num]:
            if rows[dep].status is not SheetStatus.COMPLETED:
                self.violations.append(f"{key} started before dependency {dep} completed")
        self.running.add(key)
        jobs = {j for j, _ in self.running}
        per_job = sum(1 for j, _ in self.running if j == plan.job_id)
        self.peak_sheets = max(self.peak_sheets, len(self.running))
        self.peak_jobs = max(self.peak_jobs, len(jobs))
        if len(self.running) > config.max_concurrent_sheets:
            self.violations.append(f"{len(self.running)} sheets at once")
        if len(jobs) > config.max_concurrent_jobs:
            self.violations.append(f"{len(jobs)} jobs at once")
        if per_job > job_plan.max_parallel:
            self.violations.append(f"{plan.job_id}: {per_job} sheets at once")
        started = utcnow()
        try:
            await anyio.sleep(0.001 * (plan.sheet_num % 3))  # let runs overlap and interleave
        finally:
            self.running.discard(key)
        outcome = job_plan.outcome(plan.sheet_num, plan.attempt)
        _, attempts = job_plan.fate(plan.sheet_num)
        if plan.attempt == attempts:
            self.ended.add(key)
        return AttemptResult(
            outcome=outcome,
            error_category=CATEGORY.get(outcome),
            error=None if outcome is Outcome.COMPLETED else f"{outcome.value} as planned",
            exit_code=0 if outcome is Outcome.COMPLETED else 1,
            signal=None,
            started_at=started,
            ended_at=started + timedelta(milliseconds=1),
            duration_seconds=0.001,
            stdout_tail="",
            log_path=str(plan.log_path),
        )


async def watch_events(
    conductor: Conductor, job_ids: set[str], violations: list[str], ready: anyio.Event
) -> None:
    """In commit order: no sheet leaves a terminal status; a job is terminal exactly when
    every one of its sheets is."""
    final: dict[tuple[str, int], str] = {}
    terminal_sheets = {s.value for s in SheetStatus if s.is_terminal}
    terminal_jobs = {s.value for s in JobStatus if s.is_terminal}
    store = conductor.store
    async with conductor.events.subscribe() as events:
        ready.set()
        async for event in events:
            if event.job_id not in job_ids:
                continue
            await _check_event(event, store, final, terminal_sheets, terminal_jobs, violations)


async def _check_event(
    event: ChangeEvent,
    store: Any,
    final: dict[tuple[str, int], str],
    terminal_sheets: set[str],
    terminal_jobs: set[str],
    violations: list[str],
) -> None:
    if event.kind == "sheet" and event.sheet_num is not None:
        key = (event.job_id, event.sheet_num)
        if key in final and event.status != final[key]:
            violations.append(f"{key} moved from {final[key]} to {event.status}")
        if event.status in terminal_sheets:
            final.setdefault(key, event.status or "")
        sheets = await store.get_sheets(event.job_id)
        job = await store.get_job(event.job_id)
        if all(s.status.is_terminal for s in sheets) and not job.status.is_terminal:
            violations.append(f"{event.job_id}: every sheet terminal, job {job.status.value}")
    elif event.kind == "job_status" and event.status in terminal_jobs:
        sheets = await store.get_sheets(event.job_id)
        open_ = [s.sheet_num for s in sheets if not s.status.is_terminal]
        if open_:
            violations.append(f"{event.job_id}: {event.status} with sheets {open_} open")


async def check_run(conductor: Conductor, plan: JobPlan) -> None:
    detail = await conductor.get_job(plan.job_id, sheet_limit=1000)
    history, _ = await conductor.get_execution_history(plan.job_id)
    status = {s.sheet_num: s.status for s in detail.sheets}
    attempts = {s.sheet_num: s.attempts for s in detail.sheets}
    context = f"{plan} ended as {status}"
    assert detail.status.is_terminal, context
    assert all(s.is_terminal for s in status.values()), context
    failed = {n for n, s in status.items() if s is SheetStatus.FAILED}
    skipped = {n for n, s in status.items() if s is SheetStatus.SKIPPED}
    dependents = set().union(*(plan.descendants(n) for n in failed)) if failed else set()
    for n, s in status.items():
        entries = [h for h in history if h.sheet_num == n]
        assert [h.attempt for h in entries] == list(range(1, attempts[n] + 1)), context
        assert all(h.outcome is not None for h in entries), context
        fate, fate_attempts = plan.fate(n)
        if s in (SheetStatus.COMPLETED, SheetStatus.FAILED):
            # It ran its course: as its own outcomes say, in as many attempts.
            assert (s, attempts[n]) == (fate, fate_attempts), (n, context)
            assert all(status[d] is SheetStatus.COMPLETED for d in plan.deps[n]), (n, context)
        else:
            assert s is SheetStatus.SKIPPED, (n, context)
            # Skipped before it ran, or while it waited out a retry's backoff.
            assert attempts[n] < fate_attempts, (n, context)
    assert dependents <= skipped, context
    if plan.on_failure == "continue":
        assert skipped == dependents, context
        for n in status:
            blocked = any(status[d] is not SheetStatus.COMPLETED for d in plan.deps[n])
            assert (n in skipped) == blocked, (n, context)
    expected = (
        JobStatus.COMPLETED
        if all(s is SheetStatus.COMPLETED for s in status.values())
        else JobStatus.FAILED
    )
    assert detail.status is expected, context
    assert (detail.status is JobStatus.FAILED) == bool(failed), context


LIMITS = [
    {"max_concurrent_sheets": 1, "max_concurrent_jobs": 1},
    {"max_concurrent_sheets": 3, "max_concurrent_jobs": 2},
    {"max_concurrent_sheets": 4, "max_concurrent_jobs": 8},
]


@pytest.mark.parametrize(
    "limits",
    LIMITS,
    ids=lambda d: f"sheets{d['max_concurrent_sheets']}-jobs{d['max_concurrent_jobs']}",
)
async def test_random_dags_limits_and_outcomes_keep_every_rule(
    make_config: Callable[..., PodiumConfig],
    monkeypatch: pytest.MonkeyPatch,
    limits: dict[str, int],
    long_run: bool,
) -> None:
    runs = draw_runs(120 if long_run else 8)
    config = make_config(
        max_rate_limit_retries=MAX_RATE_LIMIT_RETRIES, max_rate_limit_wait_seconds=0.01, **limits
    )
    conductor = Conductor(config)
    await conductor.start()
    sheets_run = 0
    peaks = (0, 0)
    try:
        for plans in runs:
            stand_in = StandIn(conductor, {p.job_id: p for p in plans})
            monkeypatch.setattr(dispatch_module, "run_attempt", stand_in.run_attempt)
            violations: list[str] = []
            async with anyio.create_task_group() as tg:
                ready = anyio.Event()
                tg.start_soon(watch_events, conductor, {p.job_id for p in plans}, violations, ready)
                await ready.wait()
                for plan in plans:
                    await conductor.submit_job(spec=plan.spec(), job_id=plan.job_id)
                with anyio.fail_after(30):
                    for plan in plans:
                        while not (await conductor.get_job(plan.job_id)).status.is_terminal:
                            await anyio.sleep(0.005)
                await anyio.sleep(0.02)  # the last events reach the watcher
                tg.cancel_scope.cancel()
            assert not stand_in.violations, (stand_in.violations, plans)
            assert not violations, (violations, plans)
            for plan in plans:
                await check_run(conductor, plan)
            sheets_run += sum(len(p.deps) for p in plans)
            peaks = (max(peaks[0], stand_in.peak_sheets), max(peaks[1], stand_in.peak_jobs))
    finally:
        await conductor.stop()
    print(f"{len(runs)} runs, {sheets_run} sheets, peak {peaks[0]} sheets / {peaks[1]} jobs")

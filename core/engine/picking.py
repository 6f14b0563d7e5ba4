"""Which ready sheets start now: the free slots shared out between jobs by the scheduler's
fair share, each job's best ready sheet taken from its in-memory ready index, and sheets of
an instrument held by a rate limit left where they are (one sheet of a just-released one
goes first). A pure read of the engine's state: the dispatcher commits what it picks."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime

from podium.core.engine import approvals, ratelimits
from podium.core.engine.context import EngineContext
from podium.core.engine.scheduler import Candidate, free_slots, pick_next
from podium.core.engine.state import EngineState, JobState
from podium.core.pressure import PressureLevel


def pick_ready(ctx: EngineContext, state: EngineState, now: datetime) -> list[tuple[str, int]]:
    """The (job, sheet) pairs to start now, taken off the ready index."""
    limits = ctx.limits
    # A slot is a live process: an attempt whose processes ended frees its slot while
    # its result is still being committed, so the next sheet's start shares that commit.
    free = free_slots(limits, state.live)
    active_jobs = len(state.live_by_job)
    pool: Iterable[JobState] = state.jobs.values()
    if active_jobs >= limits.max_concurrent_jobs:
        # No other job may start: only the jobs running now can take a slot, so a pass
        # looks at those few rather than every job in hand.
        pool = [state.jobs[j] for j in state.live_by_job if j in state.jobs]
    labels = ctx.config.run_labels
    pool = [
        job_state
        for job_state in pool
        if job_state.dispatchable
        and not (
            job_state.spec is not None
            and job_state.spec.spec.hosts
            and labels.isdisjoint(job_state.spec.spec.hosts)
        )  # for other conductors (the job's `hosts`)
    ]
    gates = _ready_gates(ctx, pool)
    if free <= 0:
        return gates
    held = state.held_keys(now)
    released = state.released_keys()
    busy = ratelimits.busy_released(state, released)
    candidates: dict[str, Candidate] = {}
    for job_state in pool:
        keys = job_state.ready_keys()
        if not keys:
            continue
        startable = _startable(keys, held, released, busy)
        if startable:
            job = job_state.job
            candidates[job.job_id] = Candidate(
                job.job_id,
                # The job's `max_parallel_sheets` counts its sheets on every conductor.
                state.live_by_job.get(job.job_id, 0) + _elsewhere(state, job_state),
                job_state.max_parallel,
                job.priority,
                job.submitted_at,
                startable,
            )
    picks: list[tuple[str, int]] = gates
    newly_active: set[str] = set()
    while free > 0 and candidates:
        chosen = pick_next(candidates.values(), limits, active_jobs)
        if chosen is None:
            break
        job_state = state.jobs[chosen.job_id]
        key = _best_key(job_state, held, released, busy)
        num = job_state.pop(key) if key is not None else None
        if num is None:
            del candidates[chosen.job_id]
            continue
        if key in released:
            busy.add(key)
            for other in candidates.values():
                keys = state.jobs[other.job_id].ready_keys()
                other.startable = _startable(keys, held, released, busy)
        if chosen.job_id not in state.live_by_job and chosen.job_id not in newly_active:
            # Jobs count against max_concurrent_jobs by what runs here.
            newly_active.add(chosen.job_id)
            active_jobs += 1
        chosen.running += 1
        chosen.startable = _startable(job_state.ready_keys(), held, released, busy)
        picks.append((chosen.job_id, num))
        free -= 1
        if ctx.pressure is PressureLevel.HIGH:
            # High pressure: keep going, but one sheet at a time with a pause between.
            ctx.last_slow_dispatch = time.monotonic()
            break
    return picks


def _ready_gates(ctx: EngineContext, pool: Iterable[JobState]) -> list[tuple[str, int]]:
    """Every ready approval sheet of `pool`, slots or not: a gate runs no process and takes
    no slot, so one stayed `pending` (no question asked) while its job's other sheets filled
    `max_parallel_sheets` or the conductor's `max_concurrent_sheets`."""
    gates: list[tuple[str, int]] = []
    for job_state in pool:
        for key in list(job_state.ready_keys()):
            # An approval profile has no accounts, so its hold key is its name.
            if not approvals.is_gate(ctx, key):
                continue
            while (num := job_state.pop(key)) is not None:
                gates.append((job_state.job_id, num))
    return gates


def _elsewhere(state: EngineState, job_state: JobState) -> int:
    """Sheets of the job that run on other conductors (running rows with no entry here)."""
    if not job_state.running:
        return 0
    job_id = job_state.job_id
    return sum(1 for num in job_state.running if (job_id, num) not in state.running)


def _startable(keys: Mapping[str, int], held: set[str], released: set[str], busy: set[str]) -> int:
    total = 0
    for key, count in keys.items():
        if key in held:
            continue
        if key in released:
            total += 0 if key in busy else 1
        else:
            total += count
    return total


def _best_key(
    job_state: JobState, held: set[str], released: set[str], busy: set[str]
) -> str | None:
    best: tuple[tuple[int, int, int], str] | None = None
    for key in job_state.ready_keys():
        if key in held or (key in released and key in busy):
            continue
        top = job_state.peek(key)
        if top is not None and (best is None or top < best[0]):
            best = (top, key)
    return None if best is None else best[1]

"""Global sheet scheduling: which job gets the next free slot. A pure function of a few
numbers per job, tested directly; the dispatcher feeds it from the ready index."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Limits:
    max_concurrent_jobs: int
    max_concurrent_sheets: int


@dataclass
class Candidate:
    """A job with sheets that could start now (`startable`: ready sheets not behind a held
    or busy hold key)."""

    job_id: str
    running: int
    max_parallel: int
    priority: int
    submitted_at: datetime
    startable: int
    order: tuple[int, datetime, str] = field(init=False)

    def __post_init__(self) -> None:
        self.order = (self.priority, self.submitted_at, self.job_id)


def pick_next(
    candidates: Iterable[Candidate], limits: Limits, active_jobs: int
) -> Candidate | None:
    """The job whose ready sheet goes next, by fair share: the job with the fewest running
    sheets (then priority, then age), so a small job submitted last gets a slot as soon as one
    frees instead of waiting behind a big job. A job with nothing running may start only
    while fewer than `max_concurrent_jobs` jobs have sheets running."""
    best: Candidate | None = None
    best_key: tuple[int, tuple[int, datetime, str]] | None = None
    for candidate in candidates:
        if candidate.startable <= 0 or candidate.running >= candidate.max_parallel:
            continue
        if candidate.running == 0 and active_jobs >= limits.max_concurrent_jobs:
            continue
        key = (candidate.running, candidate.order)
        if best_key is None or key < best_key:
            best, best_key = candidate, key
    return best


def free_slots(limits: Limits, running_total: int) -> int:
    return max(0, limits.max_concurrent_sheets - running_total)

"""Samples of how long (and how costly) each sheet of a finished run was, read from its
execution history; what `estimate` draws on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from podium.core.estimate import SheetSample, sheet_key, simulate
from podium.core.models import HistoryEntry, JobDetail, JobStatus, Outcome, SheetStatus

# Attempt outcomes after which a sheet waited on a person or a restart, not on its own work:
# the time before them is not part of how long the sheet takes.
_BREAKS = frozenset({Outcome.INTERRUPTED, Outcome.CANCELLED})


@dataclass
class RunSamples:
    sheets: list[tuple[str, str, SheetSample]]  # (sheet key, instrument, sample)
    overhead: float | None  # actual job seconds minus the simulation of its own sheets


def _elapsed(attempts: Sequence[HistoryEntry]) -> float | None:
    """Seconds from the first attempt of the final stretch (retries and their backoff
    included) to the end of the attempt that completed the sheet."""
    stretch: list[HistoryEntry] = []
    for entry in attempts:
        if entry.outcome in _BREAKS:
            stretch = []
        elif entry.outcome is not None:
            stretch.append(entry)
    if not stretch or stretch[-1].outcome is not Outcome.COMPLETED:
        return None
    end = stretch[-1].ended_at
    if end is None:
        return None
    return max(0.0, (end - stretch[0].started_at).total_seconds())


def _cost(attempts: Sequence[HistoryEntry]) -> float | None:
    costs = [a.cost_usd for a in attempts if a.cost_usd is not None]
    return float(sum(costs)) if costs else None


def run_samples(
    detail: JobDetail, history: Sequence[HistoryEntry], *, parallelism: int
) -> RunSamples:
    by_sheet: dict[int, list[HistoryEntry]] = {}
    for entry in history:
        by_sheet.setdefault(entry.sheet_num, []).append(entry)
    found: list[tuple[str, str, SheetSample]] = []
    durations: dict[int, float] = {}
    for sheet in detail.sheets:
        if sheet.status is not SheetStatus.COMPLETED:
            continue
        attempts = by_sheet.get(sheet.sheet_num, [])
        seconds = _elapsed(attempts)
        if seconds is None:
            continue
        durations[sheet.sheet_num] = seconds
        sample = SheetSample(seconds=seconds, cost_usd=_cost(attempts), attempts=len(attempts))
        found.append((sheet_key(sheet.name, sheet.sheet_num), sheet.instrument, sample))
    overhead = None
    complete = len(durations) == len(detail.sheets) and detail.sheets
    if (
        complete
        and detail.status is JobStatus.COMPLETED
        and detail.started_at is not None
        and detail.completed_at is not None
    ):
        deps = {s.sheet_num: [d for d in s.depends_on if d in durations] for s in detail.sheets}
        actual = (detail.completed_at - detail.started_at).total_seconds()
        overhead = actual - simulate(durations, deps, parallelism)
    return RunSamples(sheets=found, overhead=overhead)

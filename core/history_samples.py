"""Samples of how long (and how costly) each sheet of a finished run was, read from its
execution history; what `estimate` draws on.

A sheet's sample is its working time: how long its attempts' processes ran (failed ones that
were retried included, time frozen by `pause immediate` not) and the retry backoff between
them, as long as the job's retry policy makes it (none after the attempt that spent its
retries: what followed that was a resume).
Everything else in its span is a wait, kept apart by kind: a rate-limited attempt and the
hold after it, an approval gate's attempt (it runs nothing: its length is a person's
delay), and a gap after a failed attempt longer than its backoff (backpressure, or a failed
job resumed the next day).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from podium.core.estimate import ItemRange, SheetSample, WaitKind, sheet_key, simulate
from podium.core.models import HistoryEntry, JobDetail, JobStatus, Outcome, SheetStatus
from podium.core.spec.fanout import layout
from podium.core.spec.models import RetryPolicy

# Attempt outcomes after which a sheet waited on a person or a restart, not on its own work:
# the time before them is not part of how long the sheet takes. A completion before the last
# attempt is one too: the sheet ran again only because someone changed or re-ran it.
_BREAKS = frozenset({Outcome.INTERRUPTED, Outcome.CANCELLED, Outcome.COMPLETED})

Gate = Callable[[str], bool]  # whether an instrument is an approval gate


@dataclass
class RunSamples:
    sheets: list[tuple[str, str, SheetSample]]  # (sheet key, instrument, sample)
    # Actual job seconds minus the simulation of the sheets that ran, over their spans.
    overhead: float | None
    seconds: float | None = None  # actual job seconds, waits included (completed runs)
    keys: frozenset[str] = frozenset()  # every sheet of the run, by sheet key
    ran: int = 0  # the sheets the overhead is measured over: those that ran


@dataclass(frozen=True)
class _Timing:
    work: float
    waits: dict[WaitKind, float]
    # From the sheet's first attempt to the end of the one that completed it, waits included:
    # what the run's own timeline shows, against which its overhead is measured.
    span: float


# A retry starts a few milliseconds after its backoff ends (the engine dispatches it): that
# much is no hold, and a note naming "other holds ... longest 0.0s" after every retry misled.
DISPATCH_SLACK_SECONDS = 1.0


def _backoff_bound(policy: RetryPolicy, retries_used: int) -> float:
    """The longest backoff the policy waits before retry `retries_used` + 1 (jitter only
    shortens it)."""
    return float(min(policy.max_delay_seconds, policy.base_delay_seconds * (2**retries_used)))


def _span_seconds(entry: HistoryEntry) -> float:
    if entry.ended_at is not None:
        return max(0.0, (entry.ended_at - entry.started_at).total_seconds())
    return max(0.0, entry.duration_seconds or 0.0)


def _run_seconds(entry: HistoryEntry) -> float:
    """How long the attempt's process ran: the runner's own figure leaves out time it spent
    frozen by `pause immediate`, which its start and end include."""
    if entry.duration_seconds is not None:
        return max(0.0, entry.duration_seconds)
    return _span_seconds(entry)


def _timing(
    attempts: Sequence[HistoryEntry], policy: RetryPolicy, is_gate: Callable[[HistoryEntry], bool]
) -> _Timing | None:
    finished = [a for a in attempts if a.outcome is not None]
    if not finished or finished[-1].outcome is not Outcome.COMPLETED:
        return None
    end = finished[-1].ended_at
    if end is None:
        return None
    first = 0
    for i, entry in enumerate(finished[:-1]):
        if entry.outcome in _BREAKS:
            first = i + 1
    work = 0.0
    waits: dict[WaitKind, float] = {}

    def wait(kind: WaitKind, seconds: float) -> None:
        if seconds > 0:
            waits[kind] = waits.get(kind, 0.0) + seconds

    failures = 0
    previous: HistoryEntry | None = None
    for entry in finished[first:]:
        if previous is not None and previous.ended_at is not None:
            gap = max(0.0, (entry.started_at - previous.ended_at).total_seconds())
            if previous.outcome is Outcome.RATE_LIMITED:
                wait("rate_limit", gap)
            elif is_gate(previous) or failures == 0:
                wait("held", gap)  # a turned-down gate asked again: a person resumed it
            elif failures > policy.max_retries:
                # Its retries were spent: the sheet failed, and a resume (with a fresh retry
                # budget) ran it again. The policy waited no backoff here.
                wait("held", gap)
                failures = 0
            else:
                backoff = min(gap, _backoff_bound(policy, failures - 1))
                work += backoff
                if gap - backoff > DISPATCH_SLACK_SECONDS:
                    wait("held", gap - backoff)
        if entry.outcome is Outcome.RATE_LIMITED:
            wait("rate_limit", _span_seconds(entry))
        elif is_gate(entry):
            wait("approval", _span_seconds(entry))
        else:
            work += _run_seconds(entry)
            if entry.outcome is not Outcome.COMPLETED:
                failures += 1
        previous = entry
    span = max(0.0, (end - finished[0].started_at).total_seconds())
    return _Timing(work=work, waits=waits, span=span)


def _gate_attempt(gate: Gate, instrument: str) -> Callable[[HistoryEntry], bool]:
    # An attempt records the instrument it ran on; a gate's decision records none.
    def check(entry: HistoryEntry) -> bool:
        return gate(entry.instrument or instrument)

    return check


def _cost(attempts: Sequence[HistoryEntry]) -> float | None:
    costs = [a.cost_usd for a in attempts if a.cost_usd is not None]
    return float(sum(costs)) if costs else None


def _policy(detail: JobDetail) -> RetryPolicy:
    try:
        return RetryPolicy.model_validate((detail.spec or {}).get("retry") or {})
    except ValueError:
        # A spec stored by another version: its backoff is most likely the default's.
        return RetryPolicy()


def _unfinished_spans(
    detail: JobDetail, by_sheet: Mapping[int, Sequence[HistoryEntry]]
) -> dict[int, float] | None:
    """From the first attempt's start to the last one's end, for each sheet that ran and did
    not complete; None when an attempt has no end (its timeline cannot be measured)."""
    spans: dict[int, float] = {}
    for sheet in detail.sheets:
        attempts = by_sheet.get(sheet.sheet_num, [])
        if sheet.status is SheetStatus.COMPLETED or not attempts:
            continue
        ends = [a.ended_at for a in attempts]
        if any(end is None or a.outcome is None for a, end in zip(attempts, ends, strict=True)):
            return None
        last = max(end for end in ends if end is not None)
        spans[sheet.sheet_num] = max(0.0, (last - attempts[0].started_at).total_seconds())
    return spans


def batch_items(spec: Mapping[str, Any] | None) -> dict[int, ItemRange]:
    """The items each sheet of a stored batch-form spec covered, by sheet number (none for
    the explicit form, or a batch block this version cannot read: its sheets then match by
    name alone, as they always did)."""
    block = (spec or {}).get("sheet")
    if not isinstance(block, Mapping):
        return {}
    try:
        size, total = int(block["size"]), int(block["total_items"])
        counts = [1] * -(-total // size)
        for stage, count in (block.get("fan_out") or {}).items():
            counts[int(stage) - 1] = int(count)
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError):
        return {}
    return {
        num: ((slot.stage - 1) * size + 1, min(slot.stage * size, total))
        for num, slot in enumerate(layout(counts), start=1)
    }


def run_samples(
    detail: JobDetail, history: Sequence[HistoryEntry], *, parallelism: int, gate: Gate
) -> RunSamples:
    by_sheet: dict[int, list[HistoryEntry]] = {}
    for entry in history:
        by_sheet.setdefault(entry.sheet_num, []).append(entry)
    policy = _policy(detail)
    by_num = {s.sheet_num: s for s in detail.sheets}
    items = batch_items(detail.spec)
    found: list[tuple[str, str, SheetSample]] = []
    spans: dict[int, float] = {}
    sound = True
    for sheet in detail.sheets:
        if sheet.status is not SheetStatus.COMPLETED:
            continue
        attempts = by_sheet.get(sheet.sheet_num, [])
        timing = _timing(attempts, policy, _gate_attempt(gate, sheet.instrument))
        if timing is None:
            sound = False  # it ran, for a time its history cannot tell
            continue
        spans[sheet.sheet_num] = timing.span
        cost = _cost(attempts)
        sample = SheetSample(timing.work, cost, len(attempts), waits=timing.waits)
        key = sheet_key(sheet.name, sheet.sheet_num, items.get(sheet.sheet_num))
        found.append((key, sheet.instrument, sample))
    overhead = None
    actual = None
    if detail.started_at is not None and detail.completed_at is not None:
        actual = (detail.completed_at - detail.started_at).total_seconds()
    # A failed or cancelled run's attempts started and ended when they say as a completed
    # run's do: its sheets that did not complete have spans too, and tell the overhead.
    unfinished = _unfinished_spans(detail, by_sheet)
    if sound and unfinished is not None and detail.status.is_terminal:
        spans.update(unfinished)
    else:
        spans = {}
    if actual is not None and spans:
        deps = {n: [d for d in by_num[n].depends_on if d in spans] for n in spans}
        # Against the sheets' spans, waits included: a wait inside a sheet is the sheet's
        # (and left out of its sample), not the engine's overhead.
        overhead = actual - simulate(spans, deps, parallelism)
    keys = frozenset(sheet_key(s.name, s.sheet_num, items.get(s.sheet_num)) for s in detail.sheets)
    return RunSamples(
        sheets=found,
        overhead=overhead,
        seconds=actual if detail.status is JobStatus.COMPLETED else None,
        keys=keys,
        ran=len(spans),
    )

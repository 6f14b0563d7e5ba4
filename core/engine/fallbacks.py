"""Instrument fallbacks (issue 17): a sheet moves to the next instrument of its list when
its own cannot do the work — it cannot start, it fails on auth or billing (no retry can fix
those), or it is rate-limited longer than the job's `fallback_wait_seconds` (or more times
than `max_rate_limit_retries`), or it is ready while its instrument is held that long.
The move is a transition of the sheet row like any other: the same attempt result (none,
for a sheet moved before it ran), a different instrument for the next attempt."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from podium.core.engine.rules import Verdict
from podium.core.engine.state import HELD_BACK, EngineState, JobState
from podium.core.engine.tx import Op, Tx
from podium.core.instruments.profile import InstrumentProfile
from podium.core.models import ErrorCategory, Outcome, SheetStatus, WaitingReason
from podium.core.runner.runner import AttemptResult
from podium.core.spec.loader import ResolvedSheet
from podium.core.spec.models import InstrumentConfig
from podium.core.store.rows import SheetRow

Usable = Callable[[str], bool]

# Failures that are the instrument's, not the task's: another instrument may succeed.
INSTRUMENT_CATEGORIES = frozenset({ErrorCategory.AUTH, ErrorCategory.BILLING})
_READY = frozenset({SheetStatus.PENDING, SheetStatus.WAITING})


def chain(resolved: ResolvedSheet) -> tuple[str, ...]:
    return (resolved.instrument, *resolved.fallbacks)


def first_usable(resolved: ResolvedSheet, usable: Usable) -> str:
    """The instrument a new sheet starts on: its own, else its first installed fallback."""
    return next((name for name in chain(resolved) if usable(name)), resolved.instrument)


def next_usable(resolved: ResolvedSheet, current: str, usable: Usable) -> str | None:
    """The instrument after `current` in the sheet's list that can run, if any. The list is
    walked once, never round: a sheet cannot bounce between two failing instruments."""
    names = chain(resolved)
    start = names.index(current) + 1 if current in names else 0
    return next((n for n in names[start:] if n != current and usable(n)), None)


def reason_to_move(
    result: AttemptResult, verdict: Verdict, now: datetime, wait_bound: float
) -> str | None:
    """Why this result sends the sheet to its next instrument, or None."""
    if result.instrument_unusable:
        return "it could not start"
    if verdict.failed and result.error_category in INSTRUMENT_CATEGORIES:
        assert result.error_category is not None
        return f"it failed with {result.error_category.value}"
    if result.outcome is Outcome.RATE_LIMITED:
        if verdict.failed:
            return "it stayed rate limited"
        if verdict.hold_until is not None:
            wait = (verdict.hold_until - now).total_seconds()
            if wait > wait_bound:
                return f"it is rate limited for {wait:.0f}s (more than {wait_bound:g}s)"
    return None


def move_to(
    sheet: SheetRow, instrument: str, why: str, result: AttemptResult, retries_used: int
) -> None:
    """The sheet (already judged by the result) goes back to `pending` on `instrument`; the
    retry budget stays what it was before the result, rate-limit hits start afresh."""
    previous = sheet.instrument
    sheet.instrument = instrument
    sheet.status = SheetStatus.PENDING
    sheet.retries_used = retries_used
    sheet.rate_limit_hits = 0
    sheet.started_at = None
    sheet.completed_at = None
    sheet.waiting_reason = None
    sheet.waiting_until = None
    sheet.error_category = result.error_category
    sheet.last_error = f"{result.error}; moved from {previous} to {instrument}: {why}"


def fallback_config(config: InstrumentConfig, profile: InstrumentProfile) -> InstrumentConfig:
    """A sheet's settings on a fallback: its timeouts and environment carry over; a model
    and extra arguments were written for its own instrument's CLI, so they do not, nor does
    a permission mode the fallback has no flag for."""
    update: dict[str, object] = {"model": None, "extra_args": []}
    if config.permission_mode not in profile.permission_flags:
        update["permission_mode"] = None
    return config.model_copy(update=update)


Move = tuple[str, int, str, str, str]  # job_id, sheet_num, from, to, why


def moves_off_holds(state: EngineState, now: datetime, usable: Usable) -> list[Move]:
    """Ready sheets with fallbacks whose instrument is held (by any sheet's rate limit, in
    any job) for longer than their job's `fallback_wait_seconds`: each moves to the first
    instrument after its own that is installed and not held that long. Without this only the
    sheet that hit the limit would move, and every later one would sit `pending` behind the
    hold for hours although its spec names a way out."""
    held = {
        key: (hold.until - now).total_seconds()
        for key, hold in state.holds.items()
        if not hold.released and hold.until > now
    }
    ends = {key: state.holds[key].until for key in held}
    if not held:
        return []
    moves: list[Move] = []
    for job_state in state.jobs.values():
        loaded = job_state.spec
        if loaded is None or not job_state.dispatchable:
            continue
        bound = loaded.spec.fallback_wait_seconds
        for key, wait in held.items():
            if wait <= bound:
                continue
            for num in [*job_state.ready_behind(key), *_shown_waiting(job_state, key, ends[key])]:
                resolved = loaded.sheet(num)
                if not resolved.fallbacks:
                    continue
                current = job_state.sheets[num].instrument
                names = chain(resolved)
                start = names.index(current) + 1 if current in names else 0
                target = next(
                    (
                        name
                        for name in names[start:]
                        if usable(name) and held.get(state.hold_key_for(name), 0.0) <= bound
                    ),
                    None,
                )
                if target is not None:
                    why = f"it is rate limited for {wait:.0f}s (more than {bound:g}s)"
                    moves.append((job_state.job_id, num, current, target, why))
    return moves


def _shown_waiting(job_state: JobState, key: str, end: datetime) -> list[int]:
    """Sheets behind `key` shown waiting for an earlier end of its hold (holding.py): the
    hold was extended since, so they are held that much longer, as a ready sheet would be."""
    if not job_state.waiting:
        return []
    return sorted(
        num
        for num, until in job_state.waiting.items()
        if until < end
        and job_state.hold_key(num) == key
        and job_state.sheets[num].waiting_reason is WaitingReason.RATE_LIMIT
    )


def move_off_holds(moves: Sequence[Move]) -> Op[None]:
    """Commit `moves` (planned on the rows in hand): each sheet still ready on the
    instrument it was planned from goes to its target, with no attempt."""

    def apply(tx: Tx) -> None:
        for job_id, num, source, target, why in moves:
            sheet = tx.sheet(job_id, num)
            if sheet.instrument != source or sheet.status not in _READY:
                continue  # it started, or moved, since the plan
            row = tx.edit_sheet(job_id, num)
            if row.status is SheetStatus.WAITING and row.waiting_reason in HELD_BACK:
                # It waited for the instrument it leaves: on the new one it is ready.
                row.status = SheetStatus.PENDING
                row.waiting_reason = row.waiting_until = None
            row.instrument = target
            row.rate_limit_hits = 0
            row.last_error = f"moved from {source} to {target}: {why}"
            row.updated_at = tx.now

    return Op(apply, jobs=sorted({m[0] for m in moves}), name="move off held instruments")

"""Rate-limit holds, in one place: a rate-limited attempt holds its hold key (every sheet
behind that key, in every job, waits); when the wait is over the hold is *released*, which
lets one sheet go first; its success lifts the hold, and the rest follow. Holds and the
release live in the store, so a crash or a restart keeps them (SPEC §6)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime

from podium.core.engine.state import EngineState
from podium.core.engine.tx import Op, Tx
from podium.core.models import SheetStatus, WaitingReason
from podium.core.store.rows import HoldRow, SheetRow


def hold(tx: Tx, key: str, until: datetime, reason: str | None) -> None:
    """Hold `key` until `until` (a later hit replaces the earlier wait)."""
    row = tx.edit_hold(key)
    if row is None:
        tx.put_hold(HoldRow(key, until, reason, tx.now))
        return
    row.until, row.reason, row.set_at, row.released = until, reason, tx.now, False
    row.first_job_id = row.first_sheet_num = row.first_attempt = None


def succeeded(tx: Tx, key: str) -> None:
    """A sheet behind `key` succeeded: a released hold is over for everyone."""
    current = tx.hold(key)
    if current is not None and current.released:
        tx.delete_hold(key)


def release_due(now: datetime) -> Op[list[str]]:
    """Holds whose wait is over become released (one sheet goes first)."""

    def apply(tx: Tx) -> list[str]:
        released = []
        for key, current in tx.holds().items():
            if not current.released and current.until <= now:
                row = tx.edit_hold(key)
                if row is not None:
                    row.released = True
                    released.append(key)
        return released

    return Op(apply, name="release holds")


def lift(state: EngineState, keys: Collection[str] | None) -> Op[list[str]]:
    """Lift holds by hand (all of them when `keys` is None): waiting sheets behind them may
    start now. Returns the keys lifted."""

    def apply(tx: Tx) -> list[str]:
        lifted = sorted(k for k in tx.holds() if keys is None or k in keys)
        for key in lifted:
            tx.delete_hold(key)
        for job_id, job_state in state.jobs.items():
            for num in list(job_state.waiting):
                sheet = tx.sheet(job_id, num)
                if (
                    sheet.status is SheetStatus.WAITING
                    and sheet.waiting_reason is WaitingReason.RATE_LIMIT
                    and job_state.hold_key(num) in lifted
                ):
                    row = tx.edit_sheet(job_id, num)
                    row.waiting_until = tx.now
                    row.updated_at = tx.now
        return lifted

    return Op(apply, name="lift holds")


def first_is_going(hold: HoldRow, sheet_of: Callable[[str, int], SheetRow | None]) -> bool:
    """Whether the first sheet claimed behind a released hold may still be running, by the
    rows in hand (`sheet_of`): its attempt has not been seen to end. A claim this view has
    not caught up with (the sheet shows fewer attempts) counts as going; one whose job is
    gone from view (ended) does not, so a claim can never hold the others back for good."""
    if hold.first_job_id is None or hold.first_sheet_num is None or hold.first_attempt is None:
        return False
    sheet = sheet_of(hold.first_job_id, hold.first_sheet_num)
    if sheet is None or sheet.attempts > hold.first_attempt:
        return False
    return sheet.attempts < hold.first_attempt or sheet.status is SheetStatus.RUNNING


def is_held(hold: HoldRow | None, now: datetime) -> bool:
    """Whether `hold` keeps its sheets from starting at `now`."""
    return hold is not None and not hold.released and hold.until > now


def claim_first(tx: Tx, key: str, job_id: str, sheet_num: int, attempt: int) -> bool:
    """Before starting a sheet behind `key`: when its hold is released, claim the first
    place for this attempt (written with the start, compare-and-set on the hold, so of two
    conductors claiming at once one commit lands and the other re-reads). False: another
    sheet goes first; this one must wait."""
    current = tx.hold(key)
    if current is None or not current.released:
        return True
    if first_is_going(current, tx.sheet_or_none):
        return False
    row = tx.edit_hold(key)
    assert row is not None
    row.first_job_id, row.first_sheet_num, row.first_attempt = job_id, sheet_num, attempt
    return True


def busy_released(state: EngineState, released: Collection[str]) -> set[str]:
    """Released keys whose first sheet is already starting or running: nothing else goes
    behind them. Running is read from the sheet rows too, so a first sheet another conductor
    runs counts as well."""
    if not released:
        return set()
    busy = set()
    starting_or_running = [*state.starting, *state.running]
    for held in state.jobs.values():
        starting_or_running += [(held.job_id, num) for num in held.running]
    for job_id, sheet_num in starting_or_running:
        job_state = state.jobs.get(job_id)
        if job_state is not None:
            key = job_state.hold_key(sheet_num)
            if key in released:
                busy.add(key)

    def sheet_of(job_id: str, num: int) -> SheetRow | None:
        held = state.jobs.get(job_id)
        return held.sheets.get(num) if held is not None else None

    # A first sheet claimed by another conductor whose start this view has not seen yet.
    busy.update(
        key
        for key in released
        if key not in busy
        and (h := state.holds.get(key)) is not None
        and first_is_going(h, sheet_of)
    )
    return busy


def next_release(state: EngineState) -> datetime | None:
    times = [h.until for h in state.holds.values() if not h.released]
    return min(times) if times else None

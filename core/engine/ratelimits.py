"""Rate-limit holds, in one place: a rate-limited attempt holds its hold key (every sheet
behind that key, in every job, waits); when the wait is over the hold is *released*, which
lets one sheet go first; its success lifts the hold, and the rest follow. Holds and the
release live in the store, so a crash or a restart keeps them (SPEC §6)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from podium.core.engine.state import EngineState
from podium.core.engine.tx import Op, Tx
from podium.core.models import SheetStatus, WaitingReason
from podium.core.store.rows import HoldRow


def hold(tx: Tx, key: str, until: datetime, reason: str | None) -> None:
    """Hold `key` until `until` (a later hit replaces the earlier wait)."""
    row = tx.edit_hold(key)
    if row is None:
        tx.put_hold(HoldRow(key, until, reason, tx.now))
        return
    row.until, row.reason, row.set_at, row.released = until, reason, tx.now, False


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


def busy_released(state: EngineState, released: Collection[str]) -> set[str]:
    """Released keys whose first sheet is already starting or running: nothing else goes
    behind them."""
    if not released:
        return set()
    busy = set()
    starting_or_running = [*state.starting, *state.running]
    for job_id, sheet_num in starting_or_running:
        job_state = state.jobs.get(job_id)
        if job_state is not None:
            key = job_state.hold_key(sheet_num)
            if key in released:
                busy.add(key)
    return busy


def next_release(state: EngineState) -> datetime | None:
    times = [h.until for h in state.holds.values() if not h.released]
    return min(times) if times else None

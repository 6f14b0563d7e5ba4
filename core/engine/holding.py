"""Sheets held back show it (SPEC §6): a sheet that would start now but for a rate-limit
hold on its instrument (set by any sheet, in any job, by any conductor) or for high or
critical backpressure is `waiting`, with `waiting_reason` `rate_limit` (and
`waiting_until` the hold's end) or `backpressure` (no end known), instead of a plain
`pending` that explains nothing.

Only as many sheets of a job as it has free slots are marked (the ones the dispatcher would
take first): a 10,000-sheet job behind a hold rewrites a few rows, not all of them. A sheet
already marked the same way is not written again, so a pass writes nothing in the steady
state. A mark on a hold has the hold's end as its wait: the sheet leaves the ready index
and comes back by its timer, the path the rate-limited sheet itself takes. A backpressure
mark has no end: the sheet stays ready and starts as soon as dispatch may. When neither
applies any more, a marked sheet that did not start goes back to `pending`.

With no hold and no pressure a pass costs nothing here beyond comparing two sets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime

from podium.core.engine.context import EngineContext
from podium.core.engine.rules import sheet_is_startable
from podium.core.engine.state import DISPATCHABLE, EngineState, JobState
from podium.core.engine.tx import Op, Tx
from podium.core.models import SheetStatus, WaitingReason
from podium.core.pressure import PressureLevel

PRESSURED = frozenset({PressureLevel.HIGH, PressureLevel.CRITICAL})
_CLEAR: tuple[frozenset[str], frozenset[str], bool] = (frozenset(), frozenset(), False)

# job_id, sheet_num, hold key, reason, until (None: no end known)
Mark = tuple[str, int, str, WaitingReason, datetime | None]
# job_id, sheet_num, hold key, the reason its row shows
Revert = tuple[str, int, str, WaitingReason]


class Holding:
    """What one dispatcher remembers between passes: the holds and pressure it last saw, so
    that marked sheets are looked at again only when those change."""

    def __init__(self) -> None:
        self._seen: tuple[frozenset[str], frozenset[str], bool, int] | None = None

    async def show(
        self,
        state: EngineState,
        ctx: EngineContext,
        now: datetime,
        run: Callable[[Op[None]], Awaitable[None]],
    ) -> None:
        """Mark what is held back now and bring back what no longer is, through `run` (the
        writer)."""
        labels = ctx.config.run_labels

        def ours(job_state: JobState) -> bool:
            # A job whose `hosts` exclude this conductor is marked by the ones it runs on.
            hosts = job_state.spec.spec.hosts if job_state.spec is not None else None
            return not hosts or not labels.isdisjoint(hosts)

        def pressured() -> bool:
            return ctx.pressure in PRESSURED

        marks, reverts = self.plan(
            state, now, state.held_keys(now), state.released_keys(), pressured(), ours
        )
        if marks:
            await run(mark(marks, pressured))
        if reverts:
            await run(revert(reverts, pressured))

    def plan(
        self,
        state: EngineState,
        now: datetime,
        held: set[str],
        released: set[str],
        pressured: bool,
        ours: Callable[[JobState], bool],
    ) -> tuple[list[Mark], list[Revert]]:
        # Hold keys reassigned (a profile left or joined a quota pool on reload): a sheet
        # may be shown waiting for a hold that no longer is its own.
        seen = (frozenset(held), frozenset(released), pressured, state.key_generation)
        changed = seen != self._seen
        self._seen = seen
        marks = _marks(state, held, pressured, ours) if held or pressured else []
        reverts = _reverts(state, held, released, pressured) if changed else []
        return marks, reverts

    @property
    def armed(self) -> bool:
        """Whether the last pass saw a hold or pressure (or none has looked yet): the next
        must look, to bring back the sheets marked for it."""
        return self._seen is None or self._seen[:3] != _CLEAR


def _marks(
    state: EngineState, held: set[str], pressured: bool, ours: Callable[[JobState], bool]
) -> list[Mark]:
    marks: list[Mark] = []
    for job_state in state.jobs.values():
        if not job_state.dispatchable or not ours(job_state):
            continue
        keys = job_state.ready_keys()
        if not keys:
            continue
        behind = keys.keys() if pressured else held.intersection(keys)
        if not behind:
            continue
        # Sheets whose own wait is running will take a slot when it ends: they count.
        room = job_state.max_parallel - len(job_state.running) - len(job_state.waiting)
        if room <= 0:
            continue
        for num, key in job_state.best_ready(room, behind):
            if key in held:
                reason, until = WaitingReason.RATE_LIMIT, state.holds[key].until
            else:
                reason, until = WaitingReason.BACKPRESSURE, None
            row = job_state.sheets[num]
            if (
                row.status is SheetStatus.WAITING
                and row.waiting_reason is reason
                and row.waiting_until == until
            ):
                continue
            marks.append((job_state.job_id, num, key, reason, until))
    return marks


def _reverts(
    state: EngineState, held: set[str], released: set[str], pressured: bool
) -> list[Revert]:
    reverts: list[Revert] = []
    for job_state in state.jobs.values():
        for num in job_state.waiting:
            # Shown waiting for a hold that is gone before its end (lifted by hand, maybe by
            # another conductor that had not seen this mark yet): its wait is over.
            key = job_state.hold_key(num)
            row = job_state.sheets[num]
            if (
                row.waiting_reason is WaitingReason.RATE_LIMIT
                and key not in held
                and key not in released
            ):
                reverts.append((job_state.job_id, num, key, WaitingReason.RATE_LIMIT))
        if not job_state.held_back:
            continue
        for num in sorted(job_state.held_back):
            if not job_state.is_ready(num):
                continue  # starting now
            row = job_state.sheets[num]
            key = job_state.hold_key(num)
            reason = row.waiting_reason
            if reason is WaitingReason.RATE_LIMIT and (key in held or key in released):
                continue  # still held, or its first sheet is going: the rest wait on
            if reason is WaitingReason.BACKPRESSURE and pressured:
                continue
            assert reason is not None
            reverts.append((job_state.job_id, num, key, reason))
    return reverts


def mark(marks: Sequence[Mark], pressured: Callable[[], bool]) -> Op[None]:
    """Show `marks` (planned on the rows in hand) on the sheets that are still ready and
    still held back for that reason when the op runs."""

    def apply(tx: Tx) -> None:
        for job_id, num, key, reason, until in marks:
            if tx.job(job_id).status not in DISPATCHABLE:
                continue
            sheet = tx.sheet(job_id, num)
            if not sheet_is_startable(sheet, tx.now):
                continue  # it started, or waits on a timer of its own
            if reason is WaitingReason.RATE_LIMIT:
                hold = tx.hold(key)
                if hold is None or hold.released or hold.until <= tx.now:
                    continue
                until = hold.until
            elif not pressured():
                continue
            if (
                sheet.status is SheetStatus.WAITING
                and sheet.waiting_reason is reason
                and sheet.waiting_until == until
            ):
                continue
            row = tx.edit_sheet(job_id, num)
            row.status = SheetStatus.WAITING
            row.waiting_reason = reason
            row.waiting_until = until
            row.updated_at = tx.now

    return Op(apply, jobs=_jobs(marks), name="show held sheets waiting")


def revert(reverts: Sequence[Revert], pressured: Callable[[], bool]) -> Op[None]:
    """Marked sheets whose hold or pressure is over and that did not start: `pending`."""

    def apply(tx: Tx) -> None:
        for job_id, num, key, reason in reverts:
            sheet = tx.sheet(job_id, num)
            if sheet.status is not SheetStatus.WAITING or sheet.waiting_reason is not reason:
                continue
            if reason is WaitingReason.RATE_LIMIT:
                # A rate-limit wait is the hold's: with the hold gone it is over, whatever
                # end it showed (as `clear_rate_limits` ends it).
                if tx.hold(key) is not None:
                    continue  # held, or about to let its first sheet go: the rest wait on
            elif pressured() or (sheet.waiting_until is not None and sheet.waiting_until > tx.now):
                continue
            row = tx.edit_sheet(job_id, num)
            row.status = SheetStatus.PENDING
            row.waiting_reason = None
            row.waiting_until = None
            row.updated_at = tx.now

    return Op(apply, jobs=_jobs(reverts), name="held sheets back to pending")


def _jobs(items: Collection[tuple[str, int, str, WaitingReason] | Mark]) -> list[str]:
    return sorted({item[0] for item in items})

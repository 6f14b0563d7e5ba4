"""The engine's in-memory view moved onto a batch the writer just committed: jobs, sheets
(and the ready index with them), attempts in flight and holds take the new rows, with their
versions bumped as the store's were, in one step, and the change events are queued for
announcement. Nothing here reads the store: the batch is what was written."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from podium.core.engine.state import EngineState, JobState
from podium.core.engine.tx import Tx
from podium.core.events import ChangeEvent
from podium.core.store.base import WriteBatch
from podium.core.store.rows import AttemptRow, HoldRow, JobRow, SheetRow

log = structlog.get_logger("podium.writer")


def apply_committed(state: EngineState, tx: Tx, batch: WriteBatch) -> None:
    """The batch is durable: move the state and the ready index onto its rows, in the
    same step, then announce."""
    now = tx.now
    own = tx.own()
    for new in batch.new_jobs:
        _bump_all([new.job, *new.sheets])
        spec = tx.new_specs[new.job.job_id]
        job_state = JobState(new.job, new.sheets, spec, None, state.hold_key_for)
        job_state.replace_job(new.job)
        state.add(job_state)
        tx.publish(ChangeEvent(new.job.job_id, "submitted", new.job.status.value))
    rebuild = set(tx.specs) | {s.job_id for s in batch.new_sheets}
    _bump_all(batch.sheets)
    _bump_all(batch.new_sheets)
    for sheet in batch.sheets:
        if sheet.job_id not in rebuild and sheet.job_id in state.jobs:
            state.jobs[sheet.job_id].replace_sheet(sheet, now)
        tx.publish(ChangeEvent(sheet.job_id, "sheet", sheet.status.value, sheet.sheet_num))
    for job_id in rebuild:
        old = state.jobs.get(job_id)
        if old is None:
            continue
        rows = dict(old.sheets)
        rows.update({s.sheet_num: s for s in batch.sheets if s.job_id == job_id})
        rows.update({s.sheet_num: s for s in batch.new_sheets if s.job_id == job_id})
        new_spec = tx.specs.get(job_id, old.spec)
        fresh = JobState(
            old.job, sorted(rows.values(), key=_num), new_spec, None, state.hold_key_for
        )
        state.add(fresh)
    _bump_all(batch.jobs)
    for job in batch.jobs:
        held = state.jobs.get(job.job_id)
        if held is not None:
            held.replace_job(job)
        tx.publish(ChangeEvent(job.job_id, "job_status", job.status.value))
    for job_id, expected in batch.locks.items():
        held = state.jobs.get(job_id)
        if held is not None:
            held.job.version = expected + 1
            held.replace_job(held.job)
            tx.publish(ChangeEvent(job_id, "job_status", held.job.status.value))
    _bump_all(batch.new_attempts)
    _bump_all(batch.attempts)
    for attempt in [*batch.new_attempts, *batch.attempts]:
        key = (attempt.job_id, attempt.sheet_num, attempt.attempt)
        if attempt.outcome is None:
            state.attempts[key] = attempt
        else:
            state.attempts.pop(key, None)
    _bump_all(batch.holds)
    for hold in batch.holds:
        state.holds[hold.hold_key] = hold
    for hold_key, hold_row in own.holds.items():
        if hold_row is None:
            state.holds.pop(hold_key, None)
    for job in batch.deleted_jobs:
        state.jobs.pop(job.job_id, None)
        tx.publish(ChangeEvent(job.job_id, "deleted"))
    for action in tx.actions():
        try:
            action()
        except Exception:
            log.exception("post-commit action failed", op="after")


def _num(row: SheetRow) -> int:
    return row.sheet_num


def _bump_all(rows: Sequence[JobRow | SheetRow | AttemptRow | HoldRow]) -> None:
    for row in rows:
        row.version += 1

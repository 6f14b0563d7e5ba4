"""Recording an attempt's result once its run is over, whatever the store does meanwhile.

The store may refuse the write: by rule (the attempt was taken back, the conductor is
stopping: a `PodiumError`, the result is dropped and said so), because of a value it cannot
hold (a number past its integers), or because it is unreachable for a while (PostgreSQL
restarting). Raised out of the sheet's task, the last two ended the dispatcher and the
conductor with it, and a result never recorded left its sheet `running` with nothing behind
it. So a result the store refuses while it answers reads is recorded bare (failed, its
times and log, the error saying why), and while nothing goes through the result is tried
again with a growing pause until it does or the conductor stops.
"""

from __future__ import annotations

import dataclasses

import anyio
import structlog

from podium.core.engine.attempts import IdleHook, ResultRefused, record_result
from podium.core.engine.context import EngineContext
from podium.core.engine.rules import failed_before_start
from podium.core.engine.state import EngineState, RunningSheet
from podium.core.engine.tx import Op
from podium.core.engine.writer import Writer
from podium.core.errors import PodiumError
from podium.core.runner.runner import AttemptResult
from podium.core.store.base import StoreUnavailableError

log = structlog.get_logger("podium.dispatch")

FIRST_PAUSE_SECONDS = 0.5
MAX_PAUSE_SECONDS = 30.0


def bare_result(result: AttemptResult, exc: Exception) -> AttemptResult:
    """The attempt as failed, with only what any store holds: its times and its log."""
    return dataclasses.replace(
        failed_before_start(
            f"internal error: the store could not record this attempt's result ({exc!r:.300})",
            result.started_at,
            result.log_path,
        ),
        ended_at=result.ended_at,
        duration_seconds=result.duration_seconds,
    )


async def record_attempt(
    writer: Writer,
    ctx: EngineContext,
    state: EngineState,
    entry: RunningSheet,
    result: AttemptResult,
    on_idle: IdleHook,
) -> None:
    def op(recorded: AttemptResult) -> Op[None]:
        return record_result(ctx, state, entry, recorded, on_idle)

    pause = FIRST_PAUSE_SECONDS
    while True:
        refused = await _record(writer, entry, op(result))
        if refused is None:
            return
        if not isinstance(refused, StoreUnavailableError) and await _store_answers(
            writer, entry.job_id
        ):
            # The store answers, so what it cannot take is the result itself.
            bare = bare_result(result, refused)
            if await _record(writer, entry, op(bare)) is None:
                return
        # The pause is not shielded, so a stop ends the wait (the attempt stays in flight in
        # the store, and the next start recovers it).
        log.warning(
            "attempt result not recorded yet; trying again",
            pause=pause,
            job_id=entry.job_id,
            sheet=entry.sheet_num,
            attempt=entry.attempt,
        )
        await anyio.sleep(pause)
        pause = min(pause * 2, MAX_PAUSE_SECONDS)


async def _record(writer: Writer, entry: RunningSheet, op: Op[None]) -> Exception | None:
    """None once the result is recorded (or dropped by rule); else what refused it."""
    where = {"job_id": entry.job_id, "sheet": entry.sheet_num, "attempt": entry.attempt}
    try:
        with anyio.CancelScope(shield=True):
            await writer.run(op)
    except StoreUnavailableError as exc:
        log.warning("the store is unreachable for now", error=str(exc), **where)
        return exc
    except PodiumError as exc:
        _not_recorded(entry, exc)
    except Exception as exc:
        log.exception("the store refused an attempt's result", **where)
        return exc
    return None


async def _store_answers(writer: Writer, job_id: str) -> bool:
    try:
        await writer.store.get_job(job_id)
    except Exception:
        return False
    return True


def _not_recorded(entry: RunningSheet, exc: PodiumError) -> None:
    """Say why an attempt's result was not recorded. After this conductor's stop recorded
    the attempt itself (and logged why, at error), the late result has nothing left to
    record, whatever refused it (the attempt ended, or the writer closed): info. A result
    refused because another conductor took the attempt back is work this one lost, and
    so is one the store refused: a warning, the error saying which."""
    where = {"job_id": entry.job_id, "sheet": entry.sheet_num, "attempt": entry.attempt}
    if entry.recorded_by_stop or (isinstance(exc, ResultRefused) and exc.own_stop):
        log.info(
            "late attempt result dropped: this conductor's stop had recorded the attempt",
            **where,
            error=str(exc),
        )
    else:
        log.warning("attempt result not recorded", **where, error=str(exc))

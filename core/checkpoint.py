"""The job detail and the checkpoint, assembled from rows on every read (SPEC §2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from podium.core.models import FollowUp, JobDetail, SheetState, SheetStatus
from podium.core.spec.storable import redact_spec
from podium.core.store.base import Store
from podium.core.store.rows import OUTPUT_TAIL_VIEW_BYTES, JobRow, SheetRow

# A checkpoint holds every sheet; the spec caps a job at 10,000 of them.
ALL_SHEETS = 1_000_000


class LiveOutput(Protocol):
    """What a running attempt printed so far (the engine keeps it in memory), or None when
    this process does not run that attempt."""

    def __call__(self, job_id: str, sheet_num: int, attempt: int, max_bytes: int) -> str | None: ...


def sheet_states(sheets: Sequence[SheetRow], live: LiveOutput | None) -> list[SheetState]:
    """The sheets' views; a running sheet's `output_tail` is its attempt's output so far.
    The store gets a sheet's tail only when its attempt ends (writing it at every chunk
    would multiply writes), so without `live` a running sheet shows what the store has."""
    states = [s.state() for s in sheets]
    if live is None:
        return states
    for row, state in zip(sheets, states, strict=True):
        if row.status is SheetStatus.RUNNING:
            tail = live(row.job_id, row.sheet_num, row.attempts, OUTPUT_TAIL_VIEW_BYTES)
            if tail is not None:
                state.output_tail = tail
    return states


def job_detail(
    job: JobRow,
    sheets: Sequence[SheetRow],
    matching: int,
    spec: dict[str, Any] | None,
    live: LiveOutput | None = None,
) -> JobDetail:
    return JobDetail(
        **job.summary().model_dump(),
        workspace=job.workspace,
        priority=job.priority,
        sheets_total_matching=matching,
        sheets=sheet_states(sheets, live),
        spec=redact_spec(spec) if spec is not None else None,
        cost_usd=job.cost_usd,
        input_tokens=job.input_tokens,
        output_tokens=job.output_tokens,
        cache_read_tokens=job.cache_read_tokens,
        cache_write_tokens=job.cache_write_tokens,
        cost_limit_usd=job.cost_limit_usd,
        chained_from=job.chained_from,
        chain_depth=job.chain_depth,
        follow_up=FollowUp.model_validate(job.follow_up) if job.follow_up is not None else None,
    )


async def read_job(
    store: Store,
    job_id: str,
    *,
    sheet_status: Sequence[SheetStatus] | None = None,
    sheet_offset: int = 0,
    sheet_limit: int = 100,
    include_spec: bool = False,
    live: LiveOutput | None = None,
) -> JobDetail | None:
    """One page of a job's sheets (read in one snapshot), with its spec when asked for
    (env values redacted); `live` gives running sheets the output they printed so far."""
    page = await store.get_job_page(job_id, sheet_status, sheet_offset, sheet_limit)
    if page is None:
        return None
    job, sheets, matching = page
    spec = await store.get_spec(job_id) if include_spec else None
    if include_spec and spec is None:
        spec = {}
    return job_detail(job, sheets, matching, spec, live)


async def read_checkpoint(
    store: Store, job_id: str, live: LiveOutput | None = None
) -> JobDetail | None:
    """The whole checkpoint: every sheet and the spec (redacted)."""
    return await read_job(store, job_id, sheet_limit=ALL_SHEETS, include_spec=True, live=live)

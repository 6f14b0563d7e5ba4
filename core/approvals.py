"""Approval gates seen from the facade: a person's decision on a waiting approval sheet
(named by number or name), and the approvals that wait."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from podium.core.errors import NotFoundError, PodiumError, job_not_found, quoted
from podium.core.models import Decision, JobSummary
from podium.core.spec import MAX_SHEETS
from podium.core.store.base import Store
from podium.core.store.rows import SheetRow
from podium.core.views import ApprovalList, PendingApproval

if TYPE_CHECKING:
    from podium.core.conductor import Conductor

# Pending approvals listed in the conductor status (the `podium://approvals` resource and
# `podium approve --list` show up to 500).
PENDING_APPROVALS_SHOWN = 20


async def _known_job(store: Store, job_id: str) -> int:
    """The job's number of sheets, or its not-found error."""
    job = await store.get_job(job_id)
    if job is None:
        raise job_not_found(job_id)
    return job.total_sheets


async def sheet_number(store: Store, job_id: str, sheet: int | str) -> int:
    """The number of the job's sheet named by number or name (a name of ASCII digits is a
    number: no sheet name is all digits), or a NotFoundError naming what the job has."""
    # ASCII digits only: str.isdigit() is also true of '²', which int() refuses.
    if isinstance(sheet, int) or (sheet.isascii() and sheet.isdigit()):
        num = int(sheet)
        # No job has a sheet past MAX_SHEETS; a larger number would not fit the store.
        if 1 <= num <= MAX_SHEETS and await store.get_sheet(job_id, num) is not None:
            return num
        total = await _known_job(store, job_id)
        # Says "not found" and what exists, like every other missing-sheet error.
        raise NotFoundError(
            f"sheet: job {quoted(job_id)} has no sheet {num} (not found; it has {total})"
        )
    rows = await store.get_sheets(job_id)
    if not rows:
        await _known_job(store, job_id)
    for row in rows:
        if row.name == sheet:
            return row.sheet_num
    names = ", ".join(r.name for r in rows if r.name) or "none"
    raise NotFoundError(
        f"sheet: job {quoted(job_id)} has no sheet named {quoted(sheet)} (names: {names})"
    )


class Approvals:
    def __init__(self, conductor: Conductor) -> None:
        self._c = conductor

    async def approve(
        self,
        job_id: str,
        sheet: int | str,
        decision: Decision | str,
        *,
        note: str | None = None,
        decided_by: str = "unknown client",
    ) -> JobSummary:
        """A person's decision on an approval sheet (by number or name) that waits."""
        try:
            chosen = Decision(decision)
        except ValueError:
            raise PodiumError(
                f"decision: {quoted(decision)} is not a decision; use 'approve' or 'reject'"
            ) from None
        num = await sheet_number(self._c.store, job_id, sheet)
        return await self._c.engine.decide(job_id, num, chosen, decided_by, note)

    async def pending(self, limit: int = PENDING_APPROVALS_SHOWN) -> ApprovalList:
        rows, total = await self._c.store.pending_approvals(limit)
        return approval_list(rows, total)


def approval_list(rows: Sequence[SheetRow], total: int) -> ApprovalList:
    """The pending approvals as shown: the sheets waiting (as read) and how many wait."""
    return ApprovalList(
        approvals=[
            PendingApproval(
                job_id=r.job_id,
                sheet_num=r.sheet_num,
                name=r.name,
                question=r.output_tail or "",
                requested_at=r.started_at,
                expires_at=r.waiting_until,
            )
            for r in rows
        ],
        total=total,
    )

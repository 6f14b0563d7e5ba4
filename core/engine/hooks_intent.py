"""The intent to run a job's end hooks, stamped by the writer on the transition that ends a
job (whichever op makes it), so the conductor runs them even after a crash in between."""

from __future__ import annotations

from podium.core.engine.tx import Tx
from podium.core.models import JobStatus
from podium.core.spec.loader import LoadedSpec


def hooks_for(spec: LoadedSpec | None, status: JobStatus) -> list[str]:
    if spec is None:
        return []
    job = spec.spec
    hooks: list[str] = []
    notifications = job.notifications
    if status is JobStatus.COMPLETED:
        if notifications is not None and notifications.on_complete:
            hooks.append("on_complete")
        if job.on_success is not None:
            hooks.append("on_success")
    elif status is JobStatus.FAILED and notifications is not None and notifications.on_failure:
        hooks.append("on_failure")
    return hooks


def stamp_hooks(tx: Tx) -> None:
    """Every job this op ends gets the hooks its spec asks for on that ending."""
    for job_id, row in tx.own().jobs.items():
        if not row.status.is_terminal:
            continue
        before = tx.committed_job(job_id)
        if before is None or before.status.is_terminal:
            continue
        hooks = hooks_for(tx.spec_of(job_id), row.status)
        if hooks:
            row.pending_hooks = list(dict.fromkeys([*row.pending_hooks, *hooks]))

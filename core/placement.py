"""Whether a job's `hosts` name a conductor that is alive, for the views (status, the
checkpoint, diagnose).

A job whose `hosts` no live conductor carries is skipped by every dispatcher and marked
by none (each marks only the jobs it runs), so its sheets would sit `pending` with nothing
to say why, for as long as no such conductor starts. Read-time, not a state: the answer
changes the moment a conductor carrying the label starts or stops, without a write."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from podium.core.config import PodiumConfig
from podium.core.models import JobDetail, JobStatus, utcnow
from podium.core.store.base import Store

# How many live conductors the reason names (a big fleet is summed up).
MAX_NAMED = 8


async def live_runners(store: Store, config: PodiumConfig) -> list[tuple[str, frozenset[str]]]:
    """Each live conductor with the labels it runs under (host_labels, id and host name).
    Without a shared store the only one is this home's own."""
    if not store.shared:
        return [(config.conductor_id, config.run_labels)]
    now = utcnow()
    return [
        (c.conductor_id, frozenset({*c.labels, c.conductor_id, c.host}))
        for c in await store.conductors()
        if c.expires_at > now
    ]


def no_host_reason(
    hosts: Collection[str], runners: Sequence[tuple[str, frozenset[str]]]
) -> str | None:
    """Why no conductor runs the job's sheets, or None when one may."""
    if not hosts or any(not labels.isdisjoint(hosts) for _, labels in runners):
        return None
    wanted = ", ".join(sorted(hosts))
    if runners:
        named = [
            f"{cid} ({', '.join(sorted(labels - {cid}))})" for cid, labels in runners[:MAX_NAMED]
        ]
        more = f" and {len(runners) - MAX_NAMED} more" if len(runners) > MAX_NAMED else ""
        alive = f"live: {', '.join(named)}{more}"
    else:
        alive = "none is live"
    return (
        f"no live conductor carries any of the job's hosts ({wanted}); {alive}. Its sheets "
        "start once a conductor carrying one (in host_labels, or as its conductor_id or host "
        "name) runs on this store, or when it is resumed with a spec whose hosts name a live one"
    )


async def placed(
    store: Store, config: PodiumConfig, detail: JobDetail, hosts: Sequence[str] | None
) -> JobDetail:
    """`detail` with `waiting_for_host` set when it waits to run (queued or running) and no
    live conductor may run its sheets. `hosts`: the job's, when the caller has its spec in
    hand (else it is read from the detail's spec or the store)."""
    if detail.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
        return detail
    if hosts is None:
        spec = detail.spec if detail.spec is not None else await store.get_spec(detail.job_id)
        hosts = list((spec or {}).get("hosts") or [])
    if hosts:
        detail.waiting_for_host = no_host_reason(hosts, await live_runners(store, config))
    return detail

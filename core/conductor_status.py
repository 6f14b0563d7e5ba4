"""The conductor's status as the `status` tool shows it: jobs by status, pressure, readiness,
the rate limits held (named by the instruments waiting behind them), the instruments and the
user profile files refused, and the peers on a shared store."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from podium.core.approvals import PENDING_APPROVALS_SHOWN, approval_list
from podium.core.models import utcnow
from podium.core.pressure import PressureLevel
from podium.core.store.urls import store_identity
from podium.core.version import podium_version
from podium.core.views import (
    ConductorStatus,
    ConductorView,
    InstrumentError,
    InstrumentFile,
    InstrumentView,
    RateLimitView,
)

if TYPE_CHECKING:
    from podium.core.conductor import Conductor

# Readiness drops when at least this share of recent attempts failed.
ELEVATED_FAILURE_RATE = 0.9


def behind(keys: Mapping[str, str], hold_key: str) -> list[str]:
    """The instruments waiting behind a hold: every member of a quota pool, else the one
    instrument (or the key itself, for a profile removed since the hold was set)."""
    names = sorted(name for name, key in keys.items() if key == hold_key)
    return names or [hold_key]


async def conductor_status(conductor: Conductor) -> ConductorStatus:
    now = utcnow()
    store, engine, catalog = conductor.store, conductor.engine_or_none, conductor.catalog
    # The engine's view of the holds is the store's (kept in the same step as each
    # write): one store read less per status call.
    holds = list(engine.state.holds.values()) if engine is not None else await store.holds()
    keys = catalog.hold_keys() if catalog is not None else {}
    limits = [
        RateLimitView(
            instrument=name,
            until=h.until,
            pool=h.hold_key if keys.get(name, name) != name else None,
        )
        for h in sorted(holds, key=lambda h: h.hold_key)
        if h.until > now and not h.released
        for name in behind(keys, h.hold_key)
    ]
    sample = conductor.monitor.last if conductor.monitor is not None else None
    memory_mb = sample.memory_mb if sample is not None else None
    failure_rate = None if engine is None else engine.failure_rate
    instruments = [InstrumentView.from_info(i) for i in (catalog.all() if catalog else [])]
    refused = [
        InstrumentError(path=p.path, message=p.message)
        for p in (catalog.problems if catalog else [])
    ]
    files = [
        InstrumentFile(path=path, sha256=digest)
        for path, digest in (catalog.files.items() if catalog else [])
    ]
    peers = []
    if store.shared:
        peers = [
            ConductorView(
                conductor_id=c.conductor_id, host=c.host, labels=c.labels, last_seen=c.last_seen
            )
            for c in await store.conductors()
            if c.expires_at > now
        ]
    # The counts and the approvals waiting, in one store read.
    overview = await store.overview(PENDING_APPROVALS_SHOWN)
    approvals = approval_list(overview.approvals, overview.approvals_total)
    return ConductorStatus(
        pending_approvals=approvals.approvals,
        pending_approvals_total=approvals.total,
        version=podium_version(),
        pid=os.getpid(),
        uptime_seconds=round(conductor.uptime_seconds, 3),
        home=str(conductor.config.home),
        jobs_by_status=overview.jobs_by_status,
        running_sheets=(
            await store.count_running_sheets() if engine is None else engine.running_count
        ),
        pressure_level=sample.level.value if sample is not None else "none",
        pressure_reason=sample.reason if sample is not None else None,
        processes=sample.processes if sample is not None else None,
        failure_rate=failure_rate,
        memory_mb=round(memory_mb, 1) if memory_mb is not None else None,
        rate_limits=limits,
        ready=(
            conductor.accepting
            and (sample is None or sample.level is not PressureLevel.CRITICAL)
            and (failure_rate is None or failure_rate < ELEVATED_FAILURE_RATE)
        ),
        instruments=instruments,
        instrument_errors=refused,
        instruments_loaded_at=catalog.loaded_at if catalog else None,
        instrument_files=files,
        store=store_identity(conductor.config.store_url),
        store_source=conductor.store_source,
        conductor_id=conductor.config.conductor_id,
        conductors=peers,
    )

"""Change notifications between conductors: LISTEN/NOTIFY on one channel per schema.

A write queues a notification naming the jobs it changed (and whether it changed a
rate-limit hold); PostgreSQL delivers it to every listener when, and only if, the write
commits. Each conductor listens on a connection of its own, outside the pool. Delivery is
best effort: a listener that loses its connection reconnects and reports `everything`, and
the engine polls as a safety net, so a missed notification delays a change, never loses it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import anyio
import psycopg
import structlog
from psycopg import sql

from podium.core.store.base import OnChange, StoreChange

log = structlog.get_logger("podium.store.postgres")

# PostgreSQL refuses payloads from 8000 bytes; a change naming more jobs than fit is split.
MAX_PAYLOAD = 7000
# A change to more sheets of one job than this names the job only (it is re-read whole).
MAX_SHEETS_NAMED = 200
RECONNECT_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)


def change_payloads(origin: str, change: StoreChange) -> Iterator[str]:
    """The notification texts that carry `change` (several when it names many jobs)."""
    base: dict[str, object] = {"o": origin}
    if change.holds:
        base["h"] = 1
    if change.everything:
        base["a"] = 1
    if change.suspend:
        base["s"] = sorted(change.suspend)
    jobs = sorted(change.jobs)
    if not jobs:
        yield json.dumps(base)
        return
    chunk: list[str] = []
    detail: dict[str, list[int]] = {}
    size = len(json.dumps(base)) + 20
    for job_id in jobs:
        nums = change.sheets.get(job_id)
        cost = len(json.dumps(job_id)) + 2
        # Sheet numbers travel when they fit; a job named without them is re-read whole.
        listed = sorted(nums) if nums is not None and len(nums) <= MAX_SHEETS_NAMED else None
        if listed is not None:
            cost += len(json.dumps(job_id)) + len(json.dumps(listed)) + 2
        if chunk and size + cost > MAX_PAYLOAD:
            yield json.dumps({**base, "j": chunk, "d": detail})
            chunk, detail, size = [], {}, len(json.dumps(base)) + 20
        chunk.append(job_id)
        if listed is not None:
            detail[job_id] = listed
        size += cost
    yield json.dumps({**base, "j": chunk, "d": detail})


def parse_payload(origin: str, payload: str) -> StoreChange | None:
    """The change a notification carries; None for our own or for one we cannot read
    (which then counts as `everything`: something changed, we cannot tell what)."""
    try:
        data = json.loads(payload)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        if data.get("o") == origin:
            return None
        detail = data.get("d") or {}
        return StoreChange(
            jobs=frozenset(str(j) for j in data.get("j", [])),
            sheets={str(j): frozenset(int(n) for n in nums) for j, nums in detail.items()},
            holds=bool(data.get("h")),
            everything=bool(data.get("a")),
            suspend=frozenset(str(j) for j in data.get("s", [])),
        )
    except (ValueError, TypeError):
        return StoreChange(everything=True)


class Listener:
    """LISTEN on a connection of its own, read straight from its socket: the event loop
    wakes only when a notification (or the end of the connection) arrives. (psycopg's
    `notifies()` looks at the socket ten times a second, waking an idle conductor.)"""

    def __init__(self, url: str, channel: str, origin: str) -> None:
        self.url = url
        self.channel = channel
        self.origin = origin
        # Set once the first LISTEN is in place (tests and start-up wait on it).
        self.listening = anyio.Event()

    async def run(self, on_change: OnChange) -> None:
        """Deliver other users' changes until cancelled, reconnecting when the connection
        drops (after which everything may have changed)."""
        failures = 0
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    application_name="podium listener",
                    # A peer that vanished without closing (a host that lost power) is
                    # noticed within about a minute rather than never.
                    keepalives=1,
                    keepalives_idle=20,
                    keepalives_interval=5,
                    keepalives_count=4,
                )
            except psycopg.OperationalError as exc:
                failures += 1
                log.warning("cannot listen for changes; retrying", error=str(exc))
                await anyio.sleep(RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS)) - 1])
                continue
            try:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                # Whatever was committed before LISTEN took effect (at start, or while
                # reconnecting) was not heard: re-read everything once.
                on_change(StoreChange(everything=True))
                failures = 0
                self.listening.set()
                await self._read(conn, on_change)
            except psycopg.OperationalError as exc:
                failures += 1
                log.warning("lost the change notifications; reconnecting", error=str(exc))
            finally:
                # Closed here, shielded: a cancelled listener must not leave it open.
                with anyio.CancelScope(shield=True):
                    await conn.close()
            await anyio.sleep(RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS)) - 1])

    async def _read(self, conn: psycopg.AsyncConnection[Any], on_change: OnChange) -> None:
        """Until the connection fails (raises OperationalError) or the caller is cancelled."""
        pgconn = conn.pgconn
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        fd = pgconn.socket
        loop.add_reader(fd, readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                # Raises OperationalError once the connection is gone.
                pgconn.consume_input()
                if pgconn.status != psycopg.pq.ConnStatus.OK:
                    raise psycopg.OperationalError("the connection was closed")
                encoding = conn.info.encoding
                while (notice := pgconn.notifies()) is not None:
                    change = parse_payload(self.origin, notice.extra.decode(encoding))
                    if change is not None:
                        on_change(change)
        finally:
            loop.remove_reader(fd)

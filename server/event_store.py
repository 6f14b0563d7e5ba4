"""Resumable streamable-HTTP streams: a bounded in-memory store of the events sent on them.

With an event store the SDK starts every SSE response with a priming event (an id and a
`retry` hint), and a client whose connection drops (say, in the middle of a 50 s `status`
long-poll) reconnects with `Last-Event-ID` and receives what it missed instead of losing
the answer. Memory is bounded by count and by size; the oldest events go first, so a client
that comes back very late simply gets nothing replayed and calls again.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass

from mcp.server.streamable_http import (
    EventCallback,
    EventId,
    EventMessage,
    EventStore,
    StreamId,
)
from mcp_types import JSONRPCMessage

MAX_EVENTS = 2_000
MAX_BYTES = 16 * 1024 * 1024
# Milliseconds a client waits before reconnecting a dropped stream.
RETRY_INTERVAL_MS = 1_000


@dataclass(frozen=True)
class _Event:
    stream_id: StreamId
    message: JSONRPCMessage | None  # None: a priming event
    size: int


class BoundedEventStore(EventStore):
    def __init__(self, max_events: int = MAX_EVENTS, max_bytes: int = MAX_BYTES) -> None:
        self._events: OrderedDict[EventId, _Event] = OrderedDict()
        self._ids = itertools.count(1)
        self._bytes = 0
        self._max_events = max_events
        self._max_bytes = max_bytes

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        size = 0 if message is None else len(message.model_dump_json(by_alias=True))
        event_id = str(next(self._ids))
        self._events[event_id] = _Event(stream_id, message, size)
        self._bytes += size
        while self._events and (
            len(self._events) > self._max_events or self._bytes > self._max_bytes
        ):
            _, oldest = self._events.popitem(last=False)
            self._bytes -= oldest.size
        return event_id

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        last = self._events.get(last_event_id)
        if last is None:
            return None
        later = False
        for event_id, event in list(self._events.items()):
            if event_id == last_event_id:
                later = True
            elif later and event.stream_id == last.stream_id and event.message is not None:
                await send_callback(EventMessage(event.message, event_id))
        return last.stream_id

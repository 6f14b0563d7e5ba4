"""Change events: published by the manager after every persisted transition, so views can
notify subscribers and long-polls can wake without polling the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

SUBSCRIBER_BUFFER = 1000
# An approval sheet's gate opened: the job waits for a person.
APPROVAL_EVENT = "approval"


@dataclass(frozen=True)
class ChangeEvent:
    job_id: str
    kind: str  # "submitted", "job_status", "sheet", "approval", "deleted"
    status: str | None = None
    sheet_num: int | None = None


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[MemoryObjectSendStream[ChangeEvent]] = set()

    def publish(self, event: ChangeEvent) -> None:
        for stream in list(self._subscribers):
            try:
                stream.send_nowait(event)
            except anyio.WouldBlock:
                # A slow subscriber loses events rather than stalling the engine; it re-reads
                # the store when it catches up, so nothing is lost but notifications.
                continue
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.discard(stream)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[MemoryObjectReceiveStream[ChangeEvent]]:
        send, receive = anyio.create_memory_object_stream[ChangeEvent](SUBSCRIBER_BUFFER)
        self._subscribers.add(send)
        try:
            yield receive
        finally:
            self._subscribers.discard(send)
            send.close()
            receive.close()

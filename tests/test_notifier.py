"""The change notifier of a long-running server stays small: its throttle table keeps only
the URIs still in their quiet period, and a legacy subscription unsubscribed leaves nothing."""

from __future__ import annotations

import anyio
import pytest
from mcp.server.subscriptions import InMemorySubscriptionBus

from podium.core.events import ChangeEvent, EventBus
from podium.server import notifier as notifier_module
from podium.server.notifier import ChangeNotifier

pytestmark = pytest.mark.anyio


async def test_the_throttle_table_does_not_grow_with_every_job_ever_seen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notifier_module, "MIN_INTERVAL_SECONDS", 0.05)
    events = EventBus()
    notifier = ChangeNotifier(InMemorySubscriptionBus(), events)
    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.run)
        await anyio.sleep(0)  # subscribed
        for n in range(1, 2001):
            events.publish(ChangeEvent(job_id=f"job-{n}", kind="sheet"))
            if n % 100 == 0:
                # In batches: each batch is sent, and the next comes after its quiet period.
                with anyio.fail_after(10):
                    while notifier._pending:
                        await anyio.sleep(0.01)
                await anyio.sleep(0.06)
        with anyio.fail_after(10):
            while notifier._pending:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    # 2,000 jobs seen; at most the pruning threshold and one batch are still held.
    assert len(notifier._last_sent) <= 256 + 101, len(notifier._last_sent)

"""Issue 10, item 9: retry budgets survive restarts, graceful or not, so a crash loop cannot
reset `max_retries`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from helpers import wait_until

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

FLAKY = {
    "name": "flaky",
    "retry": {"max_retries": 3, "base_delay_seconds": 60, "jitter": False},
    "sheets": [{"prompt": "exit 1"}],
}


async def _used(conductor: Conductor, job_id: str) -> int:
    row = await conductor.store.get_sheet(job_id, 1)
    assert row is not None
    return row.retries_used


@pytest.mark.parametrize("how", ["graceful stop then resume", "auto_resume"])
async def test_retries_used_survive_a_restart(
    make_config: Callable[..., PodiumConfig], how: str
) -> None:
    config = make_config(auto_resume=how == "auto_resume")
    first = Conductor(config)
    await first.start()
    try:
        job = await first.submit_job(spec=FLAKY)

        async def one_retry_used() -> bool:
            return await _used(first, job.job_id) == 1

        await wait_until(one_retry_used)
    finally:
        await first.stop()
    second = Conductor(config)
    await second.start()
    try:
        if how != "auto_resume":
            await second.resume_job(job.job_id)
        # No equality check here: the resumed sheet may already have failed again.

        async def counted_on() -> bool:
            used = await _used(second, job.job_id)
            assert used >= 1, "the restart gave the sheet a fresh retry budget"
            return used == 2

        # The next failure counts on from the budget used before the restart.
        await wait_until(counted_on)
        detail: Any = await second.get_job(job.job_id)
        assert detail.sheets[0].attempts == 2
    finally:
        await second.stop()

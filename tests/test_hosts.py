"""A job's `hosts` on a conductor that carries none of them: nothing will run its sheets, so
its status, checkpoint and diagnosis say why (`waiting_for_host`) instead of a silent
`pending`; a job it may run says nothing of the kind. The same on several conductors of a
shared store is in test_shared_store.py."""

from __future__ import annotations

import pytest
from helpers import wait_for_job

from podium.core.conductor import Conductor
from podium.core.models import JobStatus

pytestmark = pytest.mark.anyio


def spec(name: str, hosts: list[str]) -> dict[str, object]:
    return {"name": name, "hosts": hosts, "sheets": [{"prompt": "true"}]}


async def test_hosts_no_conductor_carries_are_named_in_status_and_diagnose(
    conductor: Conductor,
) -> None:
    me = conductor.config.conductor_id
    submitted = await conductor.submit_job(spec=spec("elsewhere", ["gpu-box"]))
    detail = await conductor.get_job(submitted.job_id)
    assert detail.status is JobStatus.QUEUED
    why = detail.waiting_for_host
    assert why is not None
    assert "gpu-box" in why and me in why
    assert (await conductor.checkpoint(submitted.job_id)).waiting_for_host == why
    diagnosis = await conductor.diagnose(submitted.job_id)
    assert why in diagnosis.verdict
    assert any("host_labels: [gpu-box]" in s.action for s in diagnosis.next_steps)
    # A paused job waits for a person, not for a host.
    await conductor.pause_job(submitted.job_id)
    assert (await conductor.get_job(submitted.job_id)).waiting_for_host is None


async def test_hosts_naming_this_conductor_run_and_say_nothing(conductor: Conductor) -> None:
    me = conductor.config.conductor_id
    submitted = await conductor.submit_job(spec=spec("here", [me]), start=False)
    assert (await conductor.get_job(submitted.job_id)).waiting_for_host is None
    await conductor.resume_job(submitted.job_id)
    detail = await wait_for_job(conductor, submitted.job_id)
    assert detail.status is JobStatus.COMPLETED
    assert detail.waiting_for_host is None

"""What became of a job's `on_success` follow-up, shown on the job itself (`follow_up`):
submitted (with the child's job id), refused (with why; not tried again), deferred while the
conductor refuses new work (tried again until it is submitted, also after a restart), or
chain_ended at `max_chain`. The record is in the store, the job detail of every surface
carries it (show_job, `podium status`), and diagnose names a refused or deferred one."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import press, wait_for_job, wait_until
from mcp import Client
from test_transports import podium_cli

from podium.core import job_hooks
from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.job_hooks import follow_up_id
from podium.core.models import FollowUp, FollowUpStatus, JobStatus
from podium.core.pressure import PressureLevel
from podium.core.store.rows import JobRow
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio


def write_spec(folder: Path, name: str, **fields: Any) -> Path:
    spec = {"name": name.removesuffix(".yaml"), "sheets": [{"prompt": "echo ok"}], **fields}
    path = folder / name
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    folder = tmp_path / "specs"
    folder.mkdir()
    return folder


@pytest.fixture
async def chained(
    make_config: Callable[..., PodiumConfig], specs: Path
) -> AsyncIterator[Conductor]:
    """A conductor that may read the specs folder (where follow-ups live)."""
    conductor = Conductor(make_config(allowed_roots=[str(specs)]))
    await conductor.start()
    try:
        yield conductor
    finally:
        await conductor.stop()


async def settled(conductor: Conductor, job_id: str, timeout: float = 30) -> JobRow:
    """The job's row once it has ended and its follow-up is recorded and its hooks are
    done."""

    async def done() -> bool:
        row = await conductor.store.get_job(job_id)
        return (
            row is not None
            and row.status.is_terminal
            and row.follow_up is not None
            and not row.pending_hooks
        )

    await wait_until(done, timeout=timeout)
    row = await conductor.store.get_job(job_id)
    assert row is not None
    return row


async def follow_up_is(conductor: Conductor, job_id: str, status: FollowUpStatus) -> FollowUp:
    async def reached() -> bool:
        row = await conductor.store.get_job(job_id)
        return row is not None and (row.follow_up or {}).get("status") == status.value

    await wait_until(reached, timeout=30)
    found = (await conductor.get_job(job_id)).follow_up
    assert found is not None
    return found


async def test_a_submitted_follow_up_names_the_child_and_survives_a_restart(
    chained: Conductor, make_config: Callable[..., PodiumConfig], specs: Path
) -> None:
    child_spec = write_spec(specs, "child.yaml")
    parent_spec = write_spec(specs, "parent.yaml", on_success={"submit": "child.yaml"})
    before = time.time()
    parent = await chained.submit_job(path=str(parent_spec))
    row = await settled(chained, parent.job_id)

    detail = await chained.get_job(parent.job_id)
    record = detail.follow_up
    assert record is not None and record.status is FollowUpStatus.SUBMITTED
    assert record.job_id == follow_up_id(row) and record.error is None
    assert record.path == os.path.realpath(child_spec)
    assert before <= record.at.timestamp() <= time.time()
    child = await wait_for_job(chained, record.job_id)
    assert (child.chained_from, child.status) == (parent.job_id, JobStatus.COMPLETED)
    assert child.follow_up is None  # it has no on_success of its own

    await chained.stop()
    async with Conductor(make_config()) as again:
        assert (await again.get_job(parent.job_id)).follow_up == record


@pytest.mark.parametrize(
    ("submit", "said"),
    [
        ("broken.yaml", "sheets.0.bogus: unknown field 'bogus'"),
        ("../elsewhere.yaml", "outside the job's workspace and its spec's folder"),
        ("missing.yaml", "missing.yaml"),
    ],
)
async def test_a_refused_follow_up_says_why_and_is_not_tried_again(
    chained: Conductor, specs: Path, submit: str, said: str
) -> None:
    (specs / "broken.yaml").write_text("name: broken\nsheets: [{prompt: echo, bogus: 1}]\n")
    write_spec(specs.parent, "elsewhere.yaml")
    parent_spec = write_spec(specs, "parent.yaml", on_success={"submit": submit})
    parent = await chained.submit_job(path=str(parent_spec))
    row = await settled(chained, parent.job_id)
    assert row.pending_hooks == []  # a refusal is final: nothing is pending to retry

    record = (await chained.get_job(parent.job_id)).follow_up
    assert record is not None and record.status is FollowUpStatus.REFUSED
    assert record.job_id is None and said in (record.error or "")
    assert record.path == os.path.realpath(specs / submit)
    assert await chained.store.get_job(follow_up_id(row)) is None

    found = await chained.diagnose(parent.job_id)
    assert found.status is JobStatus.COMPLETED
    assert "follow-up" in found.verdict and "was refused" in found.verdict
    assert said[:40] in found.verdict
    resubmit = [s for s in found.next_steps if s.tool == "submit_job"]
    assert [s.arguments for s in resubmit] == [{"path": record.path}]


async def test_the_chain_ends_at_max_chain_without_an_error(
    chained: Conductor, specs: Path
) -> None:
    looped = write_spec(specs, "loop.yaml", on_success={"submit": "loop.yaml", "max_chain": 1})
    first = await chained.submit_job(path=str(looped))
    first_row = await settled(chained, first.job_id)
    assert first_row.follow_up is not None and first_row.follow_up["status"] == "submitted"
    second_id = first_row.follow_up["job_id"]
    second_row = await settled(chained, second_id)
    assert second_row.chain_depth == 1

    record = (await chained.get_job(second_id)).follow_up
    assert record is not None and record.status is FollowUpStatus.CHAIN_ENDED
    assert (record.job_id, record.error) == (None, None)
    assert record.path == os.path.realpath(looped)
    assert await chained.store.get_job(follow_up_id(second_row)) is None
    # Not a finding: the chain is as long as the spec asked for.
    found = await chained.diagnose(second_id)
    assert found.verdict == "completed: 1/1 sheets completed"
    assert not any("follow-up" in s.action for s in found.next_steps)


async def defer_a_follow_up(conductor: Conductor, specs: Path, tmp_path: Path) -> str:
    """A parent that completes while the conductor refuses new work (critical pressure,
    which lets running sheets finish): its follow-up is deferred. The parent's job id."""
    started, release = tmp_path / "started", tmp_path / "release"
    write_spec(specs, "child.yaml")
    prompt = f"touch {started}; for _ in $(seq 400); do [ -e {release} ] && break; sleep 0.05; done"
    parent_spec = write_spec(
        specs, "parent.yaml", on_success={"submit": "child.yaml"}, sheets=[{"prompt": prompt}]
    )
    parent = await conductor.submit_job(path=str(parent_spec))

    async def running() -> bool:
        return started.exists()

    await wait_until(running, timeout=20)
    press(conductor, PressureLevel.CRITICAL)
    release.touch()
    record = await follow_up_is(conductor, parent.job_id, FollowUpStatus.DEFERRED)
    assert record.job_id is None and "not accepting jobs" in (record.error or "")
    # It is tried again by the conductor: nobody is told to submit it again.
    assert "submit again" not in (record.error or "")
    row = await conductor.store.get_job(parent.job_id)
    assert row is not None and row.status is JobStatus.COMPLETED
    assert row.pending_hooks == ["on_success"]  # kept to be tried again
    return parent.job_id


async def test_a_deferred_follow_up_is_submitted_once_the_pressure_is_gone(
    chained: Conductor, specs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_hooks, "DEFERRED_RETRY_SECONDS", 0.2)
    parent_id = await defer_a_follow_up(chained, specs, tmp_path)
    deferred = (await chained.get_job(parent_id)).follow_up
    found = await chained.diagnose(parent_id)
    assert "is deferred: not accepting jobs" in found.verdict
    assert any("accepts new work" in s.action for s in found.next_steps)

    press(chained, PressureLevel.NONE)
    record = await follow_up_is(chained, parent_id, FollowUpStatus.SUBMITTED)
    assert deferred is not None and record.at > deferred.at and record.error is None
    row = await settled(chained, parent_id)
    assert record.job_id == follow_up_id(row)
    child = await wait_for_job(chained, record.job_id)
    assert child.chained_from == parent_id
    found = await chained.diagnose(parent_id)
    assert "follow-up" not in found.verdict


async def test_a_deferred_follow_up_survives_a_restart_and_is_submitted_at_start(
    chained: Conductor, make_config: Callable[..., PodiumConfig], specs: Path, tmp_path: Path
) -> None:
    # No retry while the first conductor runs: only the start of the next one submits it.
    parent_id = await defer_a_follow_up(chained, specs, tmp_path)
    await chained.stop()
    async with Conductor(make_config(), read_only=True) as reader:
        record = (await reader.get_job(parent_id)).follow_up
        assert record is not None and record.status is FollowUpStatus.DEFERRED

    async with Conductor(make_config(allowed_roots=[str(specs)])) as again:
        record = await follow_up_is(again, parent_id, FollowUpStatus.SUBMITTED)
        assert record.job_id is not None
        child = await wait_for_job(again, record.job_id)
        assert child.chained_from == parent_id and child.status is JobStatus.COMPLETED


async def test_show_job_status_and_the_job_resource_carry_the_follow_up(
    chained: Conductor, specs: Path
) -> None:
    write_spec(specs, "child.yaml")
    parent_spec = write_spec(specs, "parent.yaml", on_success={"submit": "child.yaml"})
    parent = await chained.submit_job(path=str(parent_spec))
    row = await settled(chained, parent.job_id)
    child_id = follow_up_id(row)
    await wait_for_job(chained, child_id)

    server = PodiumServer(chained)
    async with server.running(), Client(server.mcp) as client:
        for tool in ("show_job", "status"):
            shown = await client.call_tool(tool, {"job_id": parent.job_id})
            assert not shown.is_error and shown.structured_content is not None
            record = shown.structured_content["follow_up"]
            assert (record["status"], record["job_id"], record["error"]) == (
                "submitted",
                child_id,
                None,
            )
            assert record["path"] == os.path.realpath(specs / "child.yaml")
            assert record["at"].endswith("Z")
        read = await client.read_resource(f"podium://jobs/{parent.job_id}/checkpoint")
        text = getattr(read.contents[0], "text", None)
        assert isinstance(text, str)
        assert json.loads(text)["follow_up"] == record  # the job resource says the same
        shown = await client.call_tool("show_job", {"job_id": child_id})
        assert shown.structured_content is not None
        # Always present; null for a job without a follow-up.
        assert "follow_up" in shown.structured_content
        assert shown.structured_content["follow_up"] is None
        assert shown.structured_content["chained_from"] == parent.job_id


async def test_podium_status_prints_the_chain(chained: Conductor, home: Path, specs: Path) -> None:
    (specs / "broken.yaml").write_text("name: broken\nsheets: [{prompt: echo, bogus: 1}]\n")
    write_spec(specs, "child.yaml", on_success={"submit": "broken.yaml", "max_chain": 4})
    parent_spec = write_spec(specs, "parent.yaml", on_success={"submit": "child.yaml"})
    parent = await chained.submit_job(path=str(parent_spec))
    child_id = follow_up_id(await settled(chained, parent.job_id))
    await settled(chained, child_id)
    await chained.stop()

    shown = podium_cli(home, "status", parent.job_id)
    assert shown.returncode == 0, shown.stderr
    lines = [line.strip() for line in shown.stdout.splitlines()]
    assert f"follow-up: submitted {child_id}" in lines
    assert not any(line.startswith("chained from:") for line in lines)

    shown = podium_cli(home, "status", child_id)
    assert shown.returncode == 0, shown.stderr
    lines = [line.strip() for line in shown.stdout.splitlines()]
    assert f"chained from: {parent.job_id} (depth 1)" in lines
    (refused,) = [line for line in lines if line.startswith("follow-up:")]
    assert refused.startswith("follow-up: refused: sheets.0.bogus: unknown field 'bogus'")
    assert refused.endswith(f"(spec {os.path.realpath(specs / 'broken.yaml')})")

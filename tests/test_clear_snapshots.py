"""`clear` never removes active jobs; snapshots are captured, listed and expired."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import wait_for_job, wait_until

from podium.core.conductor import Conductor
from podium.core.errors import PodiumError
from podium.core.models import JobStatus, utcnow

pytestmark = pytest.mark.anyio

QUICK = {"name": "quick", "sheets": [{"prompt": "echo hi"}]}
FAILING = {"name": "failing", "retry": {"max_retries": 0}, "sheets": [{"prompt": "exit 2"}]}


async def _finished(conductor: Conductor, spec: dict[str, object]) -> str:
    """A finished job whose snapshot (taken just after the terminal transition) exists."""
    job = await conductor.submit_job(spec=spec)
    await wait_for_job(conductor, job.job_id)

    async def snapshotted() -> bool:
        return bool(await conductor.list_snapshots(job.job_id))

    await wait_until(snapshotted)
    return job.job_id


async def test_clear_removes_only_finished_jobs_with_logs_and_snapshots(
    conductor: Conductor,
) -> None:
    done = await _finished(conductor, QUICK)
    failed = await _finished(conductor, FAILING)
    paused = (await conductor.submit_job(spec=QUICK, start=False)).job_id
    workspace = Path((await conductor.get_job(done)).workspace)
    assert (conductor.config.logs_dir / done).is_dir()
    assert await conductor.list_snapshots(done)

    result = await conductor.clear_jobs(job_ids=[done, paused, "ghost"])
    assert result.deleted == 1 and result.job_ids == [done]
    assert result.skipped_active == [paused] and result.not_found == ["ghost"]
    assert not (conductor.config.logs_dir / done).exists()
    assert not (conductor.config.snapshots_dir / done).exists()
    assert workspace.is_dir()  # workspaces are never deleted

    result = await conductor.clear_jobs(statuses=[JobStatus.FAILED])
    assert result.job_ids == [failed]
    jobs, _ = await conductor.list_jobs()
    assert [j.job_id for j in jobs] == [paused]


async def test_clear_all_never_touches_active_jobs(conductor: Conductor) -> None:
    await _finished(conductor, QUICK)
    paused = (await conductor.submit_job(spec=QUICK, start=False)).job_id
    result = await conductor.clear_jobs(all_jobs=True)
    assert result.deleted == 1
    assert [j.job_id for j in (await conductor.list_jobs())[0]] == [paused]


async def test_clear_needs_a_filter_and_rejects_active_statuses(conductor: Conductor) -> None:
    with pytest.raises(PodiumError, match="at least one of"):
        await conductor.clear_jobs()
    with pytest.raises(PodiumError, match="paused jobs are never cleared"):
        await conductor.clear_jobs(statuses=[JobStatus.PAUSED])


async def test_clear_older_than_counts_from_completion(conductor: Conductor) -> None:
    job_id = await _finished(conductor, QUICK)
    assert (await conductor.clear_jobs(older_than_hours=1)).deleted == 0
    assert (await conductor.clear_jobs(older_than_hours=0)).job_ids == [job_id]


async def test_snapshot_captured_listed_newest_first_and_expired(conductor: Conductor) -> None:
    job_id = await _finished(conductor, QUICK)
    snapshots = await conductor.list_snapshots(job_id)
    assert len(snapshots) == 1
    snap = snapshots[0]
    assert ":" not in snap.snapshot_id
    assert {"checkpoint.json", "history.json", "spec.json", "validations.json"} <= set(snap.files)
    assert (Path(snap.path) / "manifest.json").is_file()
    assert any(f.startswith("logs/") for f in snap.files)
    assert snap.size_bytes > 0 and Path(snap.path).is_dir()
    assert (await conductor.get_job(job_id)).status is JobStatus.COMPLETED

    second = await conductor.snapshots.capture(job_id, None, None)
    assert second is not None
    listed = await conductor.list_snapshots(job_id)
    assert [s.snapshot_id for s in listed] == [second.snapshot_id, snap.snapshot_id]

    assert conductor.snapshots.cleanup(1) == 0
    later = utcnow() + timedelta(hours=2)
    assert conductor.snapshots.cleanup(1, now=later) == 2
    assert await conductor.list_snapshots(job_id) == []


async def test_snapshot_redacts_env_values(conductor: Conductor) -> None:
    spec = {
        "name": "secret",
        "instrument_config": {"env": {"TOKEN": "s3cr3t"}},
        "sheets": [{"prompt": "true"}],
    }
    job_id = await _finished(conductor, spec)
    snap = (await conductor.list_snapshots(job_id))[0]
    text = (Path(snap.path) / "checkpoint.json").read_text()
    assert "s3cr3t" not in text and "TOKEN" in text
    detail = await conductor.get_job(job_id, include_spec=True)
    assert "s3cr3t" not in str(detail.spec)


@pytest.mark.parametrize("capture_outlasts_the_wait", [False, True])
async def test_a_clear_during_the_snapshot_of_a_job_that_just_ended_leaves_no_snapshot(
    conductor: Conductor, monkeypatch: pytest.MonkeyPatch, capture_outlasts_the_wait: bool
) -> None:
    """The snapshot is taken just after the job ends; a clear arriving meanwhile waits for it
    (or, past its wait, the capture removes what it wrote once it finds the job gone)."""
    from podium.core import housekeeping

    if capture_outlasts_the_wait:
        monkeypatch.setattr(housekeeping, "CAPTURE_WAIT_SECONDS", 0.1, raising=False)
    capturing, release = anyio.Event(), anyio.Event()
    store = conductor.snapshots._store
    get_history = store.get_history

    async def history_once_released(*args: Any) -> Any:
        # The capture reads the job's rows, then its history: held here, it has read the
        # job as it ended and writes its files after the clear.
        capturing.set()
        await release.wait()
        return await get_history(*args)

    monkeypatch.setattr(store, "get_history", history_once_released)
    job = await conductor.submit_job(spec=QUICK)
    with anyio.fail_after(30):
        await capturing.wait()
    async with anyio.create_task_group() as tg:
        cleared: list[Any] = []

        async def clear() -> None:
            cleared.append(await conductor.clear_jobs(job_ids=[job.job_id]))

        tg.start_soon(clear)
        try:
            if capture_outlasts_the_wait:

                async def done() -> bool:
                    return bool(cleared)

                await wait_until(done)
            else:
                # Time for a clear that does not wait to be done (the rows and files gone).
                await anyio.sleep(0.3)
                assert not cleared, "the clear went ahead of the snapshot being taken"
        finally:
            release.set()
    assert cleared[0].job_ids == [job.job_id]
    await conductor.engine.hooks_settled(job.job_id)
    assert not (conductor.config.snapshots_dir / job.job_id).exists()
    assert await conductor.list_snapshots() == []

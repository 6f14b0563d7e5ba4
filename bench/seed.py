"""Homes with many stored jobs, written through the store protocol in large batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import bench_config
from podium.core.models import JobStatus, Outcome, SheetStatus
from podium.core.snapshots import snapshot_id_at
from podium.core.store.base import NewJob, WriteBatch
from podium.core.store.open import open_store
from podium.core.store.rows import AttemptRow, JobRow, SheetRow

T0 = datetime(2025, 1, 1, tzinfo=UTC)
BATCH = 2000
ACTIVE = 20  # paused jobs among the finished ones, as a busy home has


async def seed(home: Path, count: int) -> str:
    """`count` jobs of one sheet each (finished but for a few paused ones), each with its
    attempt in the history; returns the id of one of them."""
    store = await open_store(bench_config(home))
    snapshots = bench_config(home).snapshots_dir
    try:
        for start in range(0, count, BATCH):
            new_jobs, attempts = [], []
            for i in range(start, min(count, start + BATCH)):
                job_id = f"seeded-{i:07d}"
                at = T0 + timedelta(seconds=i)
                paused = i % max(1, count // ACTIVE) == 0
                status = JobStatus.PAUSED if paused else JobStatus.COMPLETED
                job = JobRow(
                    job_id=job_id,
                    name=f"seeded-{i % 50}",
                    status=status,
                    workspace=str(home / "workspaces" / job_id),
                    spec_fingerprint="seeded",
                    total_sheets=1,
                    submitted_at=at,
                    updated_at=at,
                    started_at=at,
                    completed_at=None if paused else at + timedelta(seconds=1),
                    labels=["seeded"],
                    # A real home records each finished job's snapshot as it ends; without
                    # one, every start would take again the snapshot of every seeded job.
                    snapshot_path=None
                    if paused
                    else str(snapshots / job_id / snapshot_id_at(at + timedelta(seconds=2))),
                )
                sheet = SheetRow(
                    job_id=job_id,
                    sheet_num=1,
                    name="only",
                    status=SheetStatus.PENDING if paused else SheetStatus.COMPLETED,
                    instrument="shell",
                    updated_at=at,
                    attempts=0 if paused else 1,
                )
                spec = {"name": job.name, "sheets": [{"name": "only", "prompt": "true"}]}
                new_jobs.append(NewJob(job, spec, [sheet]))
                if not paused:
                    attempts.append(
                        AttemptRow(
                            job_id,
                            1,
                            1,
                            at,
                            ended_at=at + timedelta(seconds=1),
                            exit_code=0,
                            duration_seconds=1.0,
                            outcome=Outcome.COMPLETED,
                        )
                    )
            results = await store.commit([WriteBatch(new_jobs=new_jobs, new_attempts=attempts)])
            assert results == [None], results
    finally:
        await store.close()
    return f"seeded-{count - 1:07d}"

"""Trap 16: a kill -9 in the middle of `clear` or of a snapshot capture is finished at the
next start: no log or snapshot dir without its job, no partial snapshot, and the snapshot a
crash interrupted is taken again (issue 10, items 5 and 6)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from podium.core.conductor import Conductor
from podium.core.config import load_config
from podium.core.models import JobStatus

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

SCRIPT = Path(__file__).with_name("crash_points.py")


def crash_at(home: Path, point: str, jobs: int) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(home), point, str(jobs)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def dirs(path: Path) -> set[str]:
    return {p.name for p in path.iterdir() if p.is_dir()} if path.is_dir() else set()


async def test_a_clear_killed_midway_leaves_nothing_after_restart(home: Path) -> None:
    config = load_config(home=home, overrides={"kill_grace_seconds": 1}, env={})
    crash_at(home, "clear", 6)
    # As the crash left it: rows gone, most dirs still there.
    assert len(dirs(config.logs_dir)) >= 4 and len(dirs(config.snapshots_dir)) >= 4
    conductor = Conductor(config)
    await conductor.start()
    try:
        assert (await conductor.list_jobs())[0] == []
        assert dirs(config.logs_dir) == set()
        assert dirs(config.snapshots_dir) == set()
    finally:
        await conductor.stop()


async def test_a_snapshot_killed_midway_is_taken_again_at_restart(home: Path) -> None:
    config = load_config(home=home, overrides={"kill_grace_seconds": 1}, env={})
    crash_at(home, "snapshot", 1)
    partial = [p for p in (config.snapshots_dir / "last").iterdir()]
    assert partial and all(p.name.startswith(".partial-") for p in partial), partial
    # A manifest-less dir (as an older version could leave) is reconciled too.
    (config.snapshots_dir / "last" / "20200101T000000000000Z").mkdir()
    conductor = Conductor(config)
    await conductor.start()
    try:
        job = await conductor.get_job("last")
        assert job.status is JobStatus.COMPLETED
        snaps = await conductor.list_snapshots("last")
        assert len(snaps) == 1, snaps
        assert sorted(p.name for p in (config.snapshots_dir / "last").iterdir()) == [
            snaps[0].snapshot_id
        ]
        assert "manifest.json" in snaps[0].files or Path(snaps[0].path, "manifest.json").exists()
        assert any(f.startswith("logs/") for f in snaps[0].files)
        row = await conductor.store.get_job("last")
        assert row is not None and row.snapshot_path == snaps[0].path
    finally:
        await conductor.stop()
    # A second restart captures nothing more.
    again = Conductor(config)
    await again.start()
    try:
        assert len(await again.list_snapshots("last")) == 1
    finally:
        await again.stop()

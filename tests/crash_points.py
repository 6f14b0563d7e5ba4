"""A conductor that kills itself (SIGKILL) at a chosen point, for the crash-safety tests.

Usage: python tests/crash_points.py HOME POINT JOBS

Starts a `Conductor` on HOME, runs JOBS quick jobs to the end, then does what POINT names and
dies with SIGKILL in the middle of it, exactly where a crash hurts most:
- `clear`: `clear {all: true}`, killed after the rows are deleted and one job's files are;
- `snapshot`: a job's terminal snapshot, killed after its files are partly copied.
Logs go to stderr only.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import structlog

from podium.core import housekeeping as housekeeping_module
from podium.core import snapshots as snapshots_module
from podium.core.conductor import Conductor
from podium.core.config import load_config

QUICK = {"name": "quick", "sheets": [{"prompt": "echo hi"}]}


def die() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


async def main(home: Path, point: str, jobs: int) -> None:
    config = load_config(home=home, overrides={"kill_grace_seconds": 1}, env={})
    conductor = Conductor(config)
    await conductor.start()
    ids = [(await conductor.submit_job(spec=QUICK)).job_id for _ in range(jobs)]
    for job_id in ids:
        with anyio.fail_after(30):
            while not (await conductor.get_job(job_id)).status.is_terminal:
                await anyio.sleep(0.02)
    await conductor.engine.hooks_settled()
    if point == "clear":
        real = housekeeping_module.shutil.rmtree
        calls = [0]

        def rmtree_then_die(*args: Any, **kwargs: Any) -> None:
            real(*args, **kwargs)
            calls[0] += 1
            if calls[0] == 2:  # one job's logs and snapshots are gone, the rest are not
                die()

        housekeeping_module.shutil.rmtree = rmtree_then_die  # type: ignore[assignment]
        await conductor.clear_jobs(all_jobs=True)
    elif point == "snapshot":
        real_copy = snapshots_module.shutil.copytree

        def copy_then_die(*args: Any, **kwargs: Any) -> Any:
            real_copy(*args, **kwargs)
            die()

        snapshots_module.shutil.copytree = copy_then_die  # type: ignore[assignment]
        job = await conductor.submit_job(spec=QUICK, job_id="last")
        with anyio.fail_after(30):
            await anyio.sleep_forever()
        del job
    raise SystemExit(f"unknown point {point!r} (or it did not kill)")


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    anyio.run(main, Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))

"""A conductor in its own process, for the crash-recovery tests (tests/test_recovery.py).

Usage: python tests/crash_conductor.py HOME SPEC_JSON JOB_ID READY_FILE [MODIFIED_SPEC_JSON]

Starts a `Conductor` on HOME (kill_grace_seconds 1, plus the JSON object of config overrides in
$CRASH_CONDUCTOR_OVERRIDES if set; no other env or config-file overrides), submits
SPEC_JSON as JOB_ID unless SPEC_JSON is "-", and with MODIFIED_SPEC_JSON, once the job's first
sheet runs, modifies the job with it (a resume with a changed spec). Then it writes its pid to
READY_FILE and runs until it is killed. Logs go to stderr only; stdout stays unused.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import structlog

from podium.core.conductor import Conductor
from podium.core.config import load_config
from podium.core.models import SheetStatus

# The environment variable a test sets to change this conductor's config (a short lease).
OVERRIDES = "CRASH_CONDUCTOR_OVERRIDES"


async def main(
    home: Path, spec_json: str, job_id: str, ready_file: Path, modified: str | None
) -> None:
    overrides = {"kill_grace_seconds": 1, **json.loads(os.environ.get(OVERRIDES, "{}"))}
    config = load_config(home=home, overrides=overrides, env={})
    conductor = Conductor(config)
    await conductor.start()
    try:
        if spec_json != "-":
            await conductor.submit_job(spec=json.loads(spec_json), job_id=job_id)
        if modified is not None:
            with anyio.fail_after(20):
                while (await conductor.get_job(job_id)).sheets[0].status is not SheetStatus.RUNNING:
                    await anyio.sleep(0.02)
            await conductor.resume_job(job_id, spec=json.loads(modified))
        tmp = ready_file.with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        tmp.replace(ready_file)  # atomic: the test never reads a half-written file
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await conductor.stop()


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    home_arg, spec_arg, job_arg, ready_arg = sys.argv[1:5]
    modified_arg = sys.argv[5] if len(sys.argv) > 5 else None
    anyio.run(main, Path(home_arg), spec_arg, job_arg, Path(ready_arg), modified_arg)

"""Hostile sheets, the rest of the suite (issue 10): an output flood, an ignored SIGTERM,
stdout and stderr closed early, the workspace deleted under a running sheet. Each ends
cleanly, the conductor keeps answering meanwhile, and nothing is left running."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from helpers import wait_for_job, wait_until
from hostile import PROBES, probe_rounds, served

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import JobStatus, SheetStatus
from podium.core.runner import cgroups
from podium.core.runner.escapees import MARK_VARIABLE

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def job(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"name": "hostile", "retry": {"max_retries": 0}, "sheets": [{"prompt": prompt}], **extra}


async def test_an_output_flood_is_capped_and_never_stalls_other_clients(
    make_config: Callable[..., PodiumConfig],
) -> None:
    """200 MB on stdout and stderr as fast as the pipe takes it: the log stops at
    `log_max_bytes` with a marker, the tail in the store stays small, and `status` from
    another client stays quick while it streams (floods in rounds until PROBES probes: one
    flood is over in a fraction of a second, too few samples for a 99th percentile)."""
    cap = 1024 * 1024
    conductor = Conductor(make_config(log_max_bytes=cap))
    await conductor.start()
    flood = "head -c 100000000 /dev/zero | tr '\\0' o & head -c 100000000 /dev/zero >&2"
    flood += "; wait"
    job_ids: list[str] = []
    try:
        async with served(conductor, clients=2) as s:

            async def one_round() -> None:
                submitted = await s.ok("submit_job", {"spec": job(flood)})
                detail = await wait_for_job(conductor, submitted["job_id"], timeout=50)
                assert detail.status is JobStatus.COMPLETED, detail.sheets[0].last_error
                sheet = detail.sheets[0]
                assert sheet.output_tail is not None and len(sheet.output_tail) <= 4096
                logs = await s.ok("logs", {"job_id": submitted["job_id"], "sheet": 1})
                assert logs["truncated"] is True
                job_ids.append(submitted["job_id"])

            latencies, rounds = await probe_rounds(s, one_round)
    finally:
        await conductor.stop()
    for job_id in job_ids:
        log_files = list((conductor.config.logs_dir / job_id).glob("*.log"))
        assert log_files and all(f.stat().st_size <= cap + 200 for f in log_files), [
            f.stat().st_size for f in log_files
        ]
        assert "log truncated" in log_files[0].read_bytes()[-200:].decode()
    assert not latencies.errors, latencies.errors
    # A real 99th percentile: one stall of a loaded machine is one sample of hundreds, a
    # loop the flood holds is a slow sample in every round.
    assert latencies.p99() < 0.5, (rounds, sorted(latencies.seconds)[-5:])
    assert len(latencies.seconds) >= PROBES, rounds


# The pid lands in one step (mv): the test reads it as soon as the file exists.
IGNORES_TERM = "trap '' TERM; echo $$ > pid.tmp && mv pid.tmp pid; while true; do sleep 0.05; done"


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_a_sheet_that_ignores_sigterm_is_killed_after_the_grace(
    conductor: Conductor, how: str
) -> None:
    extra = {"instrument_config": {"timeout_seconds": 1}} if how == "timeout" else {}
    submitted = await conductor.submit_job(spec=job(IGNORES_TERM, **extra))
    workspace = Path((await conductor.get_job(submitted.job_id)).workspace)

    async def running() -> bool:
        return (workspace / "pid").exists()

    await wait_until(running)
    pid = int((workspace / "pid").read_text())
    t0 = time.monotonic()
    if how == "cancel":
        summary = await conductor.cancel_job(submitted.job_id)
        assert summary.status is JobStatus.CANCELLED
        # SIGTERM is ignored: the SIGKILL after kill_grace_seconds (1 s here) ends it.
        assert time.monotonic() - t0 < conductor.config.kill_grace_seconds + 2
    detail = await wait_for_job(conductor, submitted.job_id)
    if how == "timeout":
        assert detail.sheets[0].error_category is not None
        assert detail.sheets[0].error_category.value == "timeout"
    history, _ = await conductor.get_execution_history(submitted.job_id)
    assert history[-1].signal == 9, history[-1]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_a_sheet_that_closes_stdout_and_stderr_early_still_finishes(
    conductor: Conductor,
) -> None:
    prompt = "echo before; exec 1>&- 2>&-; sleep 1; touch done.txt"
    spec = job(prompt, validations=[{"type": "file_exists", "path": "done.txt"}])
    submitted = await conductor.submit_job(spec=spec)
    detail = await wait_for_job(conductor, submitted.job_id)
    assert detail.status is JobStatus.COMPLETED, detail.sheets[0].last_error
    assert "before" in (detail.sheets[0].output_tail or ""), detail.sheets[0]
    # The leader keeps running after its pipes closed: the attempt waited for its exit (the
    # validation, with no retry, already says so; the duration says it did not end at EOF,
    # with room for the start being stamped a little after the spawn on a loaded machine).
    history, _ = await conductor.get_execution_history(submitted.job_id)
    duration = history[0].duration_seconds
    assert duration is not None and duration >= 0.5, history[0]


async def test_a_workspace_deleted_mid_run_fails_the_sheet_readably(conductor: Conductor) -> None:
    """The sheet removes its own workspace and exits 0; its validation fails saying why, the
    retry cannot start in a missing directory and says so; the job fails, nothing breaks, and
    the conductor goes on with the next job."""
    prompt = 'touch out.txt; rm -rf "$PODIUM_WORKSPACE"; echo gone'
    spec = {
        "name": "vanishing",
        "retry": {"max_retries": 1, "base_delay_seconds": 0.1},
        "sheets": [{"prompt": prompt, "validations": [{"type": "file_exists", "path": "out.txt"}]}],
    }
    async with served(conductor, clients=1) as s:
        submitted = await s.ok("submit_job", {"spec": spec})
        detail = await wait_for_job(conductor, submitted["job_id"])
        assert detail.status is JobStatus.FAILED
        sheet = detail.sheets[0]
        assert sheet.status is SheetStatus.FAILED and sheet.attempts == 2
        history, _ = await conductor.get_execution_history(submitted["job_id"])
        first, second = history
        assert first.validations and not first.validations[0].passed
        assert "out.txt" in (first.validations[0].detail or "")
        assert second.error is not None and "workspace" in second.error.lower(), second.error
        diagnosis = await s.ok("diagnose", {"job_id": submitted["job_id"]})
        assert diagnosis
        for tool, args in (("status", {"job_id": submitted["job_id"]}),
                           ("logs", {"job_id": submitted["job_id"], "sheet": 1})):  # fmt: skip
            assert not (await s.call(tool, args)).is_error
        after = await s.ok("submit_job", {"spec": job("echo still here")})
        assert (await wait_for_job(conductor, after["job_id"])).status is JobStatus.COMPLETED


# ----- a fork bomb, bounded ------------------------------------------------------------------


async def test_a_fork_bomb_is_bounded_by_max_processes(
    make_config: Callable[..., PodiumConfig],
) -> None:
    """300 background processes asked for, `max_processes: 40`: the attempt's pids cgroup
    refuses every fork past 40, the conductor keeps answering, and a cancel ends them all
    (the failed forks are named in the attempt's error)."""
    limit = 40
    conductor = Conductor(make_config(max_processes=limit))
    await conductor.start()
    try:
        if not cgroups.enabled(str(conductor.config.home)):
            pytest.skip("no writable pids cgroup hierarchy on this machine")
        bomb = "for i in $(seq 1 300); do sleep 30 & done 2>/dev/null; echo done forking; wait"
        submitted = await conductor.submit_job(spec=job(bomb))
        mark = f"{conductor.config.home}|{submitted.job_id}|1|1"
        peak = 0

        async def refused() -> bool:
            nonlocal peak
            peak = max(peak, len(attempt_processes(mark)))
            return cgroups.refused_forks(mark) > 0

        await wait_until(refused, timeout=20)
        for _ in range(10):
            peak = max(peak, len(attempt_processes(mark)))
            t0 = time.monotonic()
            await conductor.status()
            assert time.monotonic() - t0 < 1.0
            await anyio.sleep(0.05)
        assert 0 < peak <= limit, peak
        await conductor.cancel_job(submitted.job_id)
        history, _ = await conductor.get_execution_history(submitted.job_id)
        assert "forks refused at the max_processes limit" in (history[0].error or "")
        assert attempt_processes(mark) == []
        assert cgroups.members(mark) == []
    finally:
        await conductor.stop()


def attempt_processes(mark: str) -> list[int]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get(MARK_VARIABLE) == mark:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


# ----- orphans that end by themselves --------------------------------------------------------

ADOPTER = """
import anyio, json, sys, time
from pathlib import Path
import psutil, structlog
from podium.core.conductor import Conductor
from podium.core.config import load_config
from podium.core.runner.escapees import become_subreaper

def zombies():
    return [p.pid for p in psutil.Process().children() if p.status() == psutil.STATUS_ZOMBIE]

async def main(home):
    assert become_subreaper()
    config = load_config(home=Path(home), env={}, overrides={
        "kill_grace_seconds": 1, "monitor_interval_seconds": 0.1, "max_concurrent_sheets": 8})
    async with Conductor(config) as c:
        # An orphan that ends by itself 0.2 s in, while its sheet runs on for 2 s.
        orphan = "sh -c '(sleep 0.2; exit 0) &'; touch orphaned; sleep 2"
        job = await c.submit_job(spec={"name": "orphans", "sheets": [{"prompt": orphan}]})
        workspace = Path((await c.get_job(job.job_id)).workspace)
        while not (workspace / "orphaned").exists():
            await anyio.sleep(0.02)
        seen = during = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            seen = max(seen, len(zombies()))
            await anyio.sleep(0.02)
        during = len(zombies())
        running = (await c.get_job(job.job_id)).sheets[0].status.value
        # Meanwhile sheets of our own end with exit codes that must not be taken from them.
        codes = [(await c.submit_job(spec={"name": f"x{n}", "retry": {"max_retries": 0},
                  "sheets": [{"prompt": f"sh -c '(sleep 0.05) &'; exit {n}"}]})).job_id
                 for n in range(1, 9)]
        exits = []
        for job_id in [job.job_id, *codes]:
            while not (await c.get_job(job_id)).status.is_terminal:
                await anyio.sleep(0.02)
        for job_id in codes:
            history, _ = await c.get_execution_history(job_id)
            exits.append(history[0].exit_code)
        await anyio.sleep(0.3)
        print(json.dumps({"seen": seen, "during": during, "running": running,
                          "after": len(zombies()), "exits": exits}))

structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
anyio.run(main, sys.argv[1])
"""


def test_orphans_that_end_on_their_own_are_reaped(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", ADOPTER, str(home)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["running"] == "running"  # the reaping below happened while the sheet ran
    assert found["during"] == 0, found
    assert found["after"] == 0, found
    # Reaping the adopted never took a status from the children the conductor waits for.
    assert found["exits"] == list(range(1, 9)), found


CHILDREN = """
import json, subprocess, threading, time
import psutil
from podium.core.runner import reaper
from podium.core.runner.escapees import become_subreaper

assert become_subreaper()
assert reaper._CHILDREN_FILES
# A child forked by another thread that lives on (as attempts are), with a child of its own.
procs = []
forked, finish = threading.Event(), threading.Event()
def fork():
    procs.append(subprocess.Popen(["sh", "-c", "sleep 30 & wait"]))
    forked.set()
    finish.wait()
worker = threading.Thread(target=fork)
worker.start()
forked.wait()
# An orphan (a double fork) with a child of its own: adopted by this process, the subreaper.
subprocess.run(["sh", "-c", "setsid sh -c 'sleep 30 & wait' &"])
deadline = time.monotonic() + 5
while len(psutil.Process().children(recursive=True)) < 4 and time.monotonic() < deadline:
    time.sleep(0.01)
mine = psutil.Process()
adopted = sorted(p.pid for p in mine.children() if p.pid != procs[0].pid)
print(json.dumps({
    "all": sorted(p.pid for p in mine.children(recursive=True)),
    "adopted": adopted,
    "listed": sorted(reaper._children()),
    "walked": sorted(reaper.descendants([procs[0].pid])),
    "walked_adopted": sorted(reaper.descendants()),
    "below_adopted": sorted(p.pid for pid in adopted for p in [psutil.Process(pid)]
                            for p in [p, *p.children(recursive=True)]),
}))
for p in mine.children(recursive=True):
    p.kill()
finish.set()
"""


def test_the_reaper_finds_the_adopted_and_what_is_below_them() -> None:
    """The reaper reads the kernel's children lists, not every process on the machine: an
    orphan is adopted by the main thread (the children it must collect), and the walk from
    there and from a given leader finds every process below them, as psutil's full read
    of the process table does."""
    done = subprocess.run(
        [sys.executable, "-c", CHILDREN], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(found["all"]) == 4 and len(found["adopted"]) == 1, found
    assert found["listed"] == found["adopted"]
    assert found["walked"] == found["all"]
    assert found["walked_adopted"] == found["below_adopted"]

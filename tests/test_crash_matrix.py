"""The crash matrix (SPEC §9 traps 2, 3, 5, 6, 15, 16; issue 10): a real conductor killed with
SIGKILL at each of 14 points, then a restart (and a resume of what it left paused). At every
point, with side-effect counters written by the sheets themselves:

- every job ends terminal, with the status its point calls for;
- no sheet completed before the crash runs again;
- the history accounts for every attempt: each process a sheet started belongs to an
  attempt in the history, every attempt has an outcome, numbered 1..n as the sheet counts;
- `PRAGMA integrity_check` is ok;
- no process of any attempt is left (including a `setsid` daemon and a validation command);
- no directory is leaked (logs and snapshots only of jobs the store has, no partial
  snapshot, none without its manifest).

Each crashed conductor is forked from a pre-imported zygote (tests/crash_zygote.py), so a
point costs about a second.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

import anyio
import psutil
import pytest
from crash_matrix import JOB, POINTS, holds_for, modified_spec, prepare_home

from podium.core.conductor import Conductor
from podium.core.config import load_config
from podium.core.models import JobStatus, PauseReason, SheetStatus, WaitingReason
from podium.core.runner.escapees import MARK_VARIABLE
from podium.core.store.open import open_store

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

ZYGOTE = Path(__file__).with_name("crash_zygote.py")
FINAL = {"cancel": JobStatus.CANCELLED}
# What the crash left, so each point is known to have been reached: the chain's sheets the
# store had completed, and whether processes of an attempt were still running.
COMPLETED_AT_CRASH = {
    "submit": set(),
    "after-spawn": set(),
    "mid-sheet": {1},
    "validation": {1},
    "between-transitions": {1},
    "backoff": {1},
    "pause": {1},
    "cancel": {1},
    "rate-limit-wait": set(),
    "snapshot": {1},
    "modify": set(),
    "shutdown": {1},
    "recovery": {1},
}
RUNNING_AT_CRASH = {
    "after-spawn", "mid-sheet", "validation", "pause", "cancel", "modify", "shutdown"
}  # fmt: skip


class Zygote:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ZYGOTE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=ZYGOTE.parent,
        )

    def _read(self, stdout: IO[str]) -> dict[str, Any]:
        line = stdout.readline()
        assert line, "the crash zygote died"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def crash(self, home: Path, tmp: Path, point: str) -> dict[str, Any]:
        """Fork a conductor that runs `point` and dies there; returns how it ended."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(
            json.dumps({"home": str(home), "tmp": str(tmp), "point": point}) + "\n"
        )
        forked = self._read(self.proc.stdout)
        ended: dict[str, Any] = {}

        def wait() -> None:
            assert self.proc.stdout is not None
            ended.update(self._read(self.proc.stdout))

        deadline = time.monotonic() + 40
        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        waiter.join(max(0.0, deadline - time.monotonic()))
        if waiter.is_alive():
            psutil.Process(forked["pid"]).kill()
            waiter.join(10)
            raise AssertionError(f"{point}: the conductor never reached its point")
        return ended

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(autouse=True)
def _end_leftover_attempts(tmp_path: Path) -> Iterator[None]:
    """Whatever a failing run leaves running of this test's home is ended afterwards."""
    yield
    for pid in live_attempt_processes(tmp_path / "home"):
        with suppress(psutil.Error):
            psutil.Process(pid).kill()


@pytest.fixture(scope="session")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    try:
        yield z
    finally:
        z.close()


# ----- what is left -----------------------------------------------------------------------


def side_starts(tmp: Path) -> list[tuple[str, int, int]]:
    """(job, sheet, attempt) of every process start the sheets wrote down."""
    path = tmp / "side.txt"
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        kind, mark = line.split(" ", 1)
        if kind == "start":
            _, job, sheet, attempt = mark.rsplit("|", 3)
            out.append((job, int(sheet), int(attempt)))
    return out


def live_attempt_processes(home: Path) -> list[int]:
    prefix = f"{home}|"
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(MARK_VARIABLE, "").startswith(prefix):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def leaked_dirs(home: Path, job_ids: set[str]) -> list[str]:
    leaked = []
    for kind in ("logs", "snapshots"):
        root = home / kind
        for entry in root.iterdir() if root.is_dir() else []:
            if entry.is_dir() and entry.name not in job_ids:
                leaked.append(f"{kind}/{entry.name}")
    snapshots = home / "snapshots"
    for job_dir in snapshots.iterdir() if snapshots.is_dir() else []:
        for snap in job_dir.iterdir() if job_dir.is_dir() else []:
            if snap.name.startswith(".partial-") or not (snap / "manifest.json").exists():
                leaked.append(f"snapshots/{job_dir.name}/{snap.name}")
    return leaked


async def completed_sheets(config: Any) -> dict[str, set[int]]:
    """What the store says is completed, as the crash left it (read before any restart)."""
    store = await open_store(config)
    try:
        out: dict[str, set[int]] = {}
        for job in await store.jobs_with_status(list(JobStatus)):
            sheets = await store.get_sheets(job.job_id)
            out[job.job_id] = {s.sheet_num for s in sheets if s.status is SheetStatus.COMPLETED}
        return out
    finally:
        await store.close()


# ----- the matrix -------------------------------------------------------------------------


@pytest.mark.parametrize("point", POINTS)
async def test_kill9_at_each_point_loses_nothing_reruns_nothing_leaks_nothing(
    zygote: Zygote, tmp_path: Path, point: str
) -> None:
    await crash_and_check(zygote, tmp_path, point)


@pytest.mark.parametrize("seed", range(20))
async def test_kill9_at_a_random_moment_of_a_dag(
    zygote: Zygote, tmp_path: Path, seed: int, long_run: bool
) -> None:
    """Moments nobody picked: two by default, twenty with --long."""
    if seed >= 2 and not long_run:
        pytest.skip("the long variant (--long)")
    await crash_and_check(zygote, tmp_path, f"random-{seed}")


async def crash_and_check(zygote: Zygote, tmp_path: Path, point: str) -> None:
    home = tmp_path / "home"
    prepare_home(home)
    config = load_config(home=home, overrides={}, env={})
    for sheet in holds_for(point):
        (tmp_path / f"hold-{sheet}").touch()
    if point == "validation":
        (tmp_path / "hold-validation").touch()
    crashes = ["mid-sheet", "recovery"] if point == "recovery" else [point]
    left_running: list[int] = []
    for crash_point in crashes:
        ended = zygote.crash(home, tmp_path, crash_point)
        log = tmp_path / f"conductor-{crash_point}.log"
        assert ended["signal"] == 9, (ended, log.read_text()[-3000:] if log.exists() else "")
        # The crash left processes running exactly where an attempt was in flight (the dying
        # recovery had ended those of the crash before it).
        left_running = live_attempt_processes(home)
        if crash_point in POINTS:
            assert bool(left_running) is (crash_point in RUNNING_AT_CRASH), left_running
    done_at_crash = await completed_sheets(config)
    starts_at_crash = Counter(side_starts(tmp_path))
    if point in COMPLETED_AT_CRASH:
        assert done_at_crash.get(JOB, set()) == COMPLETED_AT_CRASH[point], done_at_crash
    for hold in tmp_path.glob("hold-*"):
        hold.unlink()

    conductor = Conductor(config)
    await conductor.start()
    try:
        await _check_right_after_restart(conductor, point)
        jobs, _ = await conductor.list_jobs(limit=500)
        for job in jobs:
            if job.status is JobStatus.PAUSED:
                await conductor.resume_job(job.job_id)
        with anyio.fail_after(30):
            for job in jobs:
                while not (await conductor.get_job(job.job_id)).status.is_terminal:
                    await anyio.sleep(0.02)
        jobs, _ = await conductor.list_jobs(limit=500)
        job_ids = {j.job_id for j in jobs}
        if point == "clear":
            assert job_ids == set(), "a cleared job came back"
        for job in jobs:
            expected = FINAL.get(point, JobStatus.COMPLETED)
            assert job.status is expected, (job.job_id, job.status, job.error)
            await _check_history(conductor, tmp_path, job.job_id, done_at_crash, starts_at_crash)
        if point == "snapshot":
            assert len(await conductor.list_snapshots(JOB)) == 1
        if point in RUNNING_AT_CRASH - {"cancel"} | {"recovery"}:
            history, _ = await conductor.get_execution_history(JOB)
            assert any(h.outcome is not None and h.outcome.value == "interrupted" for h in history)
        await conductor.engine.hooks_settled()
    finally:
        await conductor.stop()

    assert leaked_dirs(home, job_ids) == []
    with sqlite3.connect(home / "podium.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    deadline = time.monotonic() + 5
    while (left := live_attempt_processes(home)) and time.monotonic() < deadline:
        await anyio.sleep(0.05)
    assert left == [], [psutil.Process(p).cmdline() for p in left if psutil.pid_exists(p)]
    print(
        f"crash point {point}: killed {len(crashes)}x, {len(left_running)} processes left by "
        "the crash, 0 after the restart, 0 dirs leaked"
    )


async def _check_right_after_restart(conductor: Conductor, point: str) -> None:
    """What each point must look like once the restart has reconciled it."""
    if point == "clear" or point.startswith("random-"):
        return
    job = await conductor.get_job(JOB)
    if point == "submit":
        # Stored, never started: it runs as it would have.
        assert job.status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.COMPLETED)
        return
    if point == "snapshot":
        assert job.status is JobStatus.COMPLETED
        return
    if point == "cancel":
        assert job.status is JobStatus.CANCELLED
        assert all(s.status.is_terminal for s in job.sheets), job.sheets
        return
    assert job.status is JobStatus.PAUSED, job
    reason = {"pause": PauseReason.USER, "shutdown": PauseReason.SHUTDOWN}
    assert job.pause_reason is reason.get(point, PauseReason.INTERRUPTED), job.pause_reason
    assert not [s for s in job.sheets if s.status is SheetStatus.RUNNING]
    if point == "backoff":
        waiting = job.sheets[1]
        assert waiting.status is SheetStatus.WAITING
        assert waiting.waiting_reason is WaitingReason.RETRY_BACKOFF
    if point == "rate-limit-wait":
        row = await conductor.store.get_sheet(JOB, 1)
        assert row is not None and row.rate_limit_hits == 1
        # The instrument's hold outlived the crash (its wait may be over by now).
        assert [h.hold_key for h in await conductor.store.holds()] == ["limited"]
    if point == "modify":
        assert job.total_sheets == len(modified_spec(Path("/")).get("sheets", []))


async def _check_history(
    conductor: Conductor,
    tmp: Path,
    job_id: str,
    done_at_crash: dict[str, set[int]],
    starts_at_crash: Counter[tuple[str, int, int]],
) -> None:
    detail = await conductor.get_job(job_id, sheet_limit=1000)
    history, _ = await conductor.get_execution_history(job_id)
    starts = Counter(side_starts(tmp))
    for sheet in detail.sheets:
        num = sheet.sheet_num
        entries = [h for h in history if h.sheet_num == num]
        assert [h.attempt for h in entries] == list(range(1, sheet.attempts + 1)), entries
        assert all(h.outcome is not None for h in entries), entries
        assert sum(h.outcome is not None and h.outcome.value == "completed" for h in entries) == (
            1 if sheet.status is SheetStatus.COMPLETED else 0
        )
        started = {a for (j, n, a), _ in starts.items() if j == job_id and n == num}
        # Every process start belongs to an attempt the history has, once.
        assert started <= {h.attempt for h in entries}, (num, started, entries)
        assert all(c == 1 for (j, n, _), c in starts.items() if j == job_id and n == num)
        if num in done_at_crash.get(job_id, set()):
            # Completed before the crash: never run again.
            now = {k: c for k, c in starts.items() if k[:2] == (job_id, num)}
            then = {k: c for k, c in starts_at_crash.items() if k[:2] == (job_id, num)}
            assert now == then, (num, then, now)

"""Hostile sheets (SPEC §9 trap 15, issue 10 item 4 and the hostile-sheet suite): daemons that
leave their group (`setsid nohup ... &`, a `setsid env -i` double fork) end with their attempt
however it ends (completion, cancel, timeout, failure) and at recovery after a kill -9; output
floods, an ignored SIGTERM, closed stdout and a workspace deleted mid-run end cleanly too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import wait_for_job, wait_until

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig, load_config

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

CRASH_SCRIPT = Path(__file__).with_name("crash_conductor.py")


def live_with(token: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if any(token in part for part in proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def token() -> Iterator[str]:
    """A unique sleep length (`sleep 300.<n>`) that names this test's daemons; whatever is
    left is killed at teardown, so a failure does not leak into later tests."""
    value = f"300.{uuid.uuid4().int % 10**9:09d}"
    yield value
    for proc in live_with(value):
        proc.kill()


def daemons(token: str) -> str:
    # One detached with setsid and nohup, one double-forked with a cleared environment.
    return (
        f"setsid nohup sleep {token} >/dev/null 2>&1 & "
        f"setsid env -i /bin/sh -c 'sleep {token} >/dev/null 2>&1 &' ; "
    )


async def wait_daemons(token: str, count: int = 2) -> None:
    async def up() -> bool:
        return len(live_with(token)) >= count

    await wait_until(up, timeout=10)


async def assert_none_left(token: str) -> None:
    async def gone() -> bool:
        return not live_with(token)

    try:
        await wait_until(gone, timeout=5)
    except TimeoutError:
        left = [(p.pid, p.cmdline()) for p in live_with(token)]
        raise AssertionError(f"processes outlived their attempt: {left}") from None


def job(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"name": "hostile", "retry": {"max_retries": 0}, "sheets": [{"prompt": prompt}], **extra}


async def test_daemons_end_when_the_attempt_completes(conductor: Conductor, token: str) -> None:
    submitted = await conductor.submit_job(spec=job(daemons(token) + "sleep 0.3; echo ok"))
    detail = await wait_for_job(conductor, submitted.job_id)
    assert detail.status.value == "completed"
    await assert_none_left(token)


async def test_daemons_end_when_the_attempt_fails(conductor: Conductor, token: str) -> None:
    submitted = await conductor.submit_job(spec=job(daemons(token) + "sleep 0.3; exit 4"))
    assert (await wait_for_job(conductor, submitted.job_id)).status.value == "failed"
    await assert_none_left(token)


async def test_daemons_end_at_cancel(conductor: Conductor, token: str) -> None:
    submitted = await conductor.submit_job(spec=job(daemons(token) + "sleep 60"))
    await wait_daemons(token)
    await conductor.cancel_job(submitted.job_id)
    await assert_none_left(token)


async def test_daemons_end_at_timeout(conductor: Conductor, token: str) -> None:
    spec = job(daemons(token) + "sleep 60", instrument_config={"timeout_seconds": 1})
    submitted = await conductor.submit_job(spec=spec)
    detail = await wait_for_job(conductor, submitted.job_id, timeout=20)
    assert detail.sheets[0].error_category is not None
    assert detail.sheets[0].error_category.value == "timeout"
    await assert_none_left(token)


async def test_daemons_started_by_a_validation_command_end_too(
    conductor: Conductor, token: str
) -> None:
    spec = {
        "name": "hostile-check",
        "sheets": [
            {
                "prompt": "true",
                "validations": [{"type": "command_succeeds", "command": daemons(token) + "true"}],
            }
        ],
    }
    submitted = await conductor.submit_job(spec=spec)
    assert (await wait_for_job(conductor, submitted.job_id)).status.value == "completed"
    await assert_none_left(token)


async def test_a_daemon_of_a_crashed_conductor_ends_at_recovery(
    tmp_path: Path, make_config: Any, token: str
) -> None:
    home = make_config().home
    ready = tmp_path / "ready"
    spec = job(daemons(token) + "sleep 60")
    proc = subprocess.Popen(
        [sys.executable, str(CRASH_SCRIPT), str(home), json.dumps(spec), "crashy", str(ready)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() or len(live_with(token)) < 3:  # two daemons and `sleep 60`?
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        await wait_daemons(token)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert live_with(token), "the daemons should outlive a kill -9 of their conductor"
    config: PodiumConfig = load_config(home=home, overrides={"kill_grace_seconds": 1}, env={})
    restarted = Conductor(config)
    await restarted.start()
    try:
        await assert_none_left(token)
    finally:
        await restarted.stop()


def test_the_serving_conductor_adopts_orphans(token: str) -> None:
    """`become_subreaper` (what `podium serve`/`start` call): a double-forked orphan is
    re-parented to the conductor's process, not to init."""
    code = (
        "import subprocess, sys, time, psutil\n"
        "from podium.core.runner.escapees import become_subreaper\n"
        "assert become_subreaper()\n"
        f"subprocess.run(['sh', '-c', 'setsid sleep {token} &'])\n"
        "time.sleep(0.3)\n"
        f"kids = [p for p in psutil.Process().children() if '{token}' in ' '.join(p.cmdline())]\n"
        "print(len(kids))\n"
        "for k in kids: k.kill(); k.wait()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


SUBREAPER_CONDUCTOR = """
import anyio, json, sys
from pathlib import Path
import structlog
from podium.core.conductor import Conductor
from podium.core.config import load_config
from podium.core.runner import cgroups, escapees, reaper

calls = {"walked": 0, "scanned": 0}
full_scan = escapees.find_attempt_processes
def counted(*args, **kwargs):
    calls["scanned"] += 1
    return full_scan(*args, **kwargs)
escapees.find_attempt_processes = counted
walk = reaper.descendants
def walked(*args):
    calls["walked"] += 1
    return walk(*args)
reaper.descendants = walked
# No pids cgroup: what ends the daemons is the look through the conductor's descendants.
cgroups.enable = lambda home, limit: False

async def main(home, prompts):
    assert reaper.become_subreaper()
    config = load_config(home=Path(home), env={}, overrides={"kill_grace_seconds": 1})
    async with Conductor(config) as c:
        for prompt in prompts:
            spec = {"name": "hostile", "retry": {"max_retries": 0}, "sheets": [{"prompt": prompt}]}
            job = await c.submit_job(spec=spec)
            while not (await c.get_job(job.job_id)).status.is_terminal:
                await anyio.sleep(0.02)
    print(json.dumps(calls))

structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
anyio.run(main, sys.argv[1], json.loads(sys.argv[2]))
"""


async def test_as_subreaper_the_daemons_are_found_among_the_conductors_descendants(
    tmp_path: Path, token: str
) -> None:
    """A serving conductor (a subreaper) looks for what an attempt left among its own
    descendants rather than the whole process table: without a pids cgroup to fall back
    on, the setsid and the `env -i` double-forked daemons still end with their attempt,
    found that way, and the whole table is never read."""
    prompts = [daemons(token) + "sleep 0.3; echo ok", daemons(token) + "sleep 0.3; exit 3"]
    done = subprocess.run(
        [sys.executable, "-c", SUBREAPER_CONDUCTOR, str(tmp_path / "home"), json.dumps(prompts)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    calls = json.loads(done.stdout.strip().splitlines()[-1])
    assert calls == {"walked": 2, "scanned": 0}, calls
    await assert_none_left(token)

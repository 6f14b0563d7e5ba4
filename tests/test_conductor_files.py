"""`conductor.json` and `conductor.lock` left behind by a conductor that died (kill -9, a
power cut): the pid they name may belong to another process by now (the kernel reuses
pids, and a reboot starts them over). That process is not the conductor: `podium start`
starts one, `status` reads the store, and `stop` and `reload` never signal it. Real
processes: a detached conductor SIGKILLed, and a `sleep` given its place in the files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from test_transports import INIT_BODY, PODIUM, make_home, podium_cli, running, server_env

HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)


def conductor_pid(home: Path) -> int:
    return int(json.loads((home / "conductor.json").read_text())["pid"])


def killed(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while running(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        time.sleep(0.02)


def name_in_the_files(home: Path, pid: int) -> None:
    """What the files of a conductor that started an hour ago and died look like once the
    kernel has given its pid to `pid`."""
    info = json.loads((home / "conductor.json").read_text())
    info.update(pid=pid, started_at=HOUR_AGO.isoformat().replace("+00:00", "Z"))
    (home / "conductor.json").write_text(json.dumps(info))
    lock = home / "conductor.lock"
    lock.write_text(f"{pid}\n")
    os.utime(lock, (HOUR_AGO.timestamp(), HOUR_AGO.timestamp()))


def test_a_pid_reused_since_the_conductor_died_is_not_the_conductor(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    assert podium_cli(home, "start", "--detach").returncode == 0
    killed(conductor_pid(home))
    stranger = subprocess.Popen(["sleep", "600"])
    try:
        name_in_the_files(home, stranger.pid)
        status = podium_cli(home, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert "cannot reach" not in status.stderr, status.stderr
        reload = podium_cli(home, "reload")
        assert reload.returncode != 0 and "no conductor is running" in reload.stderr, reload
        stop = podium_cli(home, "stop")
        assert stop.returncode == 0 and "no conductor is running" in stop.stdout, stop
        assert stranger.poll() is None, "a process that is not the conductor was signalled"
        start = podium_cli(home, "start", "--detach")
        assert start.returncode == 0, start.stderr
        assert "already running" not in start.stdout, start.stdout
        pid = conductor_pid(home)
        assert pid != stranger.pid and running(pid)
        assert psutil.Process(pid).cmdline()[-1] == "--child"
        stop = podium_cli(home, "stop")
        assert stop.returncode == 0 and f"pid {pid}" in stop.stdout, stop
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_restart_after_the_conductor_died_starts_one(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    assert podium_cli(home, "start", "--detach").returncode == 0
    dead = conductor_pid(home)
    killed(dead)
    restart = podium_cli(home, "restart")
    assert restart.returncode == 0, restart.stderr
    pid = conductor_pid(home)
    assert pid != dead and running(pid)
    assert f"conductor pid {pid}" in restart.stdout, restart.stdout
    assert podium_cli(home, "stop").returncode == 0


def test_a_token_that_no_longer_matches_is_named_and_stop_force_recovers(
    tmp_path: Path,
) -> None:
    """conductor.json changed under a running conductor (its token is not the one the
    conductor checks): every command says so, instead of a traceback or the SDK's "Server
    returned an error response"; `stop --force` still stops it."""
    home = make_home(tmp_path)
    assert podium_cli(home, "start", "--detach").returncode == 0
    pid = conductor_pid(home)
    info = json.loads((home / "conductor.json").read_text())
    (home / "conductor.json").write_text(json.dumps({**info, "token": "not-the-token"}))
    for command in (["status"], ["list"], ["stop"]):
        done = podium_cli(home, *command)
        assert done.returncode != 0, (command, done)
        assert "Traceback" not in done.stderr, done.stderr
        assert "refused the bearer token in conductor.json" in done.stderr, done.stderr
    serve = subprocess.run(
        [PODIUM, "serve"],
        input=json.dumps(INIT_BODY) + "\n",
        env=server_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    answer = json.loads(serve.stdout.splitlines()[0])
    assert "refused the bearer token in conductor.json" in answer["error"]["message"], answer
    assert running(pid)
    stop = podium_cli(home, "stop", "--force")
    assert stop.returncode == 0, stop.stderr
    assert not running(pid)
    assert podium_cli(home, "start", "--detach").returncode == 0
    assert conductor_pid(home) != pid
    assert podium_cli(home, "status").returncode == 0
    assert podium_cli(home, "stop").returncode == 0

"""The CLI as a person uses it: `podium run` and `podium top` under a pseudo-terminal (live
`rich` rendering), with Ctrl-C, `q`, and commands from another terminal."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pexpect
import pytest
from test_conductor import conductor_client, wait_until
from test_transports import PODIUM, call, echo_pid, make_home, podium_cli, running, server_env

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
# Blanks and terminal escapes (colours, cursor moves) between two words on the screen.
GAP = r"(?:\s|\x1b\[[0-9;?]*[A-Za-z])+"


def spawn(home: Path, *args: str, **env: str) -> pexpect.spawn:
    child = pexpect.spawn(
        PODIUM,
        list(args),
        env=server_env(home, TERM="xterm-256color", **env),
        cwd=str(REPO),
        encoding="utf-8",
        dimensions=(30, 120),
        timeout=60,
    )
    return child


def finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus is not None, f"killed by signal {child.signalstatus}"
    code: int = child.exitstatus
    return code


def write_spec(tmp_path: Path, text: str) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    return spec


def test_run_shows_live_progress_and_exits_by_outcome(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    child = spawn(home, "run", "examples/hello.yaml")
    child.expect("started the conductor")
    child.expect(r"job (hello-\S+) \(3 sheets\)")
    child.expect("━")  # the job's progress bar, drawn in place
    child.expect(r"job hello-\S+ completed")
    screen = child.before
    assert finish(child) == 0
    assert "sheet 3 (report): completed" in screen

    failing = write_spec(
        tmp_path, "name: bad\nretry: {max_retries: 0}\nsheets:\n  - prompt: exit 3\n"
    )
    child = spawn(home, "run", str(failing))
    child.expect(r"job bad-\S+ failed")
    assert "exited with code 3" in child.before
    assert finish(child) == 1


def test_ctrl_c_detaches_and_the_job_completes(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    release = tmp_path / "release"
    # Held until released, not a fixed sleep that could end before Ctrl-C landed.
    hold = f"while [ ! -e {release} ]; do sleep 0.05; done"
    spec = write_spec(
        tmp_path, f"name: slow\nsheets:\n  - {{name: nap, prompt: '{hold}; echo rested'}}\n"
    )
    child = spawn(home, "run", str(spec), "--job-id", "nap-job")
    child.expect(r"sheet 1 \(nap\)" + GAP + "running")
    child.sendintr()
    child.expect("detached")
    child.expect(r"podium status nap-job --follow")
    child.expect(r"podium cancel nap-job")
    assert finish(child) == 130
    release.touch()
    # Reattach: follow it to the end (not a terminal: plain lines).
    followed = subprocess.run(
        [PODIUM, "status", "nap-job", "--follow"],
        env=server_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert "job nap-job completed" in followed.stdout
    detail = json.loads(podium_cli(home, "status", "nap-job", "--json").stdout)
    assert detail["status"] == "completed" and "rested" in detail["sheets"][0]["output_tail"]


def test_cancel_on_interrupt(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    spec = write_spec(tmp_path, "name: slow\nsheets:\n  - {name: nap, prompt: 'sleep 30'}\n")
    child = spawn(home, "run", str(spec), "--job-id", "nap-cancel", "--cancel-on-interrupt")
    child.expect(r"sheet 1 \(nap\)" + GAP + "running")
    child.sendintr()
    child.expect("job nap-cancel cancelled")
    assert finish(child) == 130


async def test_pause_from_another_terminal(tmp_path: Path) -> None:
    """`podium pause JOB` while `podium run` follows it: the run shows the pause, sheet 2 does
    not start; `podium resume JOB` and the run goes on to exit 0."""
    home = make_home(tmp_path)
    gate = tmp_path / "gate"
    spec = write_spec(
        tmp_path,
        "name: two\nsheets:\n"
        f"  - {{name: first, prompt: 'while [ ! -e {gate} ]; do sleep 0.1; done; echo one'}}\n"
        "  - {name: second, depends_on: [first], prompt: 'echo two'}\n",
    )
    child = spawn(home, "run", str(spec), "--job-id", "two-job")
    child.expect(r"sheet 1 \(first\)" + GAP + "running")
    paused = podium_cli(home, "pause", "two-job")
    assert paused.returncode == 0, paused.stderr
    assert "two-job: paused (user)" in paused.stdout
    child.expect(r"paused \(user\)")
    gate.touch()  # sheet 1 may finish now; the paused job must not start sheet 2
    child.expect(r"sheet 1 \(first\): completed")
    detail = json.loads(podium_cli(home, "status", "two-job", "--json").stdout)
    assert detail["status"] == "paused"
    assert [s["status"] for s in detail["sheets"]] == ["completed", "pending"]
    assert child.isalive(), "podium run stopped following a paused job"
    resumed = podium_cli(home, "resume", "two-job")
    assert resumed.returncode == 0, resumed.stderr
    child.expect("job two-job completed")
    assert finish(child) == 0


async def test_top_renders_and_quits(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    pid_file = tmp_path / "sheet.pid"
    assert podium_cli(home, "start", "--detach").returncode == 0
    async with conductor_client(home) as client:
        spec = {
            "name": "busy",
            "sheets": [{"name": "spin", "prompt": f"{echo_pid(pid_file)}; exec sleep 60"}],
        }
        await call(client, "submit_job", {"spec": spec, "job_id": "busy-top"})
    await wait_until(pid_file.exists, what="the sheet started")

    for stop_with in ("q", "ctrl-c"):
        child = spawn(home, "top", "--interval", "0.5")
        child.expect("running and waiting sheets")
        child.expect("q or Ctrl-C quits")
        child.expect("busy-top")  # a refresh draws the running job and its sheet
        child.expect(r"sheet 1 \(spin\)")
        if stop_with == "q":
            child.send("q")
        else:
            child.sendintr()
        assert finish(child) == 0, stop_with
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before or "")
    assert "Traceback" not in screen
    cancelled = podium_cli(home, "cancel", "busy-top")
    assert cancelled.returncode == 0, cancelled.stderr
    assert not running(int(pid_file.read_text()))

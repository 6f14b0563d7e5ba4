"""CLI behaviour that needs no terminal: help, defaults, errors in CLI words, `--json` on
every read command, `list` columns and times, `logs` of a sheet that has not run, and
`podium run` detaching on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import click
import psutil
import pytest
from test_conductor import conductor_client
from test_transports import PODIUM, call, make_home, podium_cli, running, server_env

pytestmark = pytest.mark.anyio

READ_COMMANDS = [["list"], ["status"], ["snapshots"], ["instruments"]]


def test_bare_podium_prints_help_and_options_show_defaults(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    bare = podium_cli(home)
    assert bare.returncode == 0, bare.stderr
    assert "Commands:" in bare.stdout and "run" in bare.stdout and "top" in bare.stdout
    listing = podium_cli(home, "list", "--help")
    assert "[default: 50;" in listing.stdout
    logs = podium_cli(home, "logs", "--help")
    assert "[default: 200;" in logs.stdout and "[default: latest]" in logs.stdout


def all_commands() -> dict[str, click.Command]:
    """Every `podium` command, through the group's lazy loading."""
    from podium.server.cli import main

    assert isinstance(main, click.Group)
    ctx = click.Context(main)
    commands = {name: main.get_command(ctx, name) for name in main.list_commands(ctx)}
    assert all(commands.values()), commands
    return {name: command for name, command in commands.items() if command is not None}


def test_the_lazy_command_table_has_every_command() -> None:
    """Each command module's click commands, and nothing else, are in `podium`'s table."""
    import importlib

    from podium.server.cli import COMMAND_MODULES

    defined = {}
    for module in COMMAND_MODULES:
        for value in vars(importlib.import_module(f"podium.server.{module}")).values():
            if isinstance(value, click.Command):
                defined[value.name] = value
    listed = all_commands()
    assert listed == defined
    assert {"run", "status", "serve", "import-score", "dashboard", "diagnose"} <= set(listed)


def test_a_command_imports_only_its_own_module(tmp_path: Path) -> None:
    """`podium list` loads neither the score importer, the dashboard nor the spec tools'
    commands: a CLI call is mostly its imports. (--help: the command is loaded, not run.)"""
    probe = (
        "import sys\n"
        "from podium.server.cli import main\n"
        "try:\n"
        "    main(['list', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('podium.'))))\n"
    )
    env = server_env(make_home(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    loaded = set(done.stdout.split())
    assert "podium.server.cli_jobs" in loaded, done.stderr
    unused = {
        "podium.server.cli_import",
        "podium.server.cli_dashboard",
        "podium.server.cli_insight",
        "podium.server.cli_control",
        "podium.core.importer",
    }
    assert not loaded & unused, loaded & unused


def test_every_option_has_help() -> None:
    from podium.server.cli import main

    assert main.context_settings.get("show_default") is True
    commands = all_commands()
    assert len(commands) >= 20
    for name, command in commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, f"podium {name} {param.opts[0]} has no help text"


async def test_read_commands_through_the_conductor(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    assert not (home / "conductor.json").exists()
    # With no conductor, reads show the store and say so; they start nothing.
    cold = podium_cli(home, "list")
    assert cold.returncode == 0 and "no jobs" in cold.stdout
    assert "no conductor is running" in cold.stderr
    assert not (home / "conductor.json").exists()

    assert podium_cli(home, "start", "--detach").returncode == 0
    async with conductor_client(home) as client:
        spec = {
            "name": "mixed",
            "retry": {"max_retries": 0},
            "sheets": [
                {"name": "bad", "prompt": "exit 4"},
                {"name": "later", "depends_on": ["bad"], "prompt": "echo never"},
            ],
        }
        await call(client, "submit_job", {"spec": spec, "job_id": "mixed", "start": False})
        pending_log = podium_cli(home, "logs", "mixed", "--sheet", "2")
        assert pending_log.returncode == 0, pending_log.stderr
        assert "sheet 2 of mixed has not run yet" in pending_log.stdout
        await call(client, "resume", {"job_id": "mixed"})
        with_status = await call(client, "status", {"job_id": "mixed", "wait_seconds": 20})
        while with_status["status"] != "failed":
            with_status = await call(client, "status", {"job_id": "mixed", "wait_seconds": 20})

    for command in [*READ_COMMANDS, ["status", "mixed"], ["logs", "mixed", "--sheet", "1"]]:
        done = podium_cli(home, *command, "--json")
        assert done.returncode == 0, (command, done.stderr)
        json.loads(done.stdout)  # valid JSON, nothing else on stdout
    status = json.loads(podium_cli(home, "status", "--json").stdout)
    assert status["conductor_running"] is True
    assert status["pid"] == json.loads((home / "conductor.json").read_text())["pid"]

    listed = podium_cli(home, "list").stdout.splitlines()
    assert listed[0].split() == ["JOB", "STATUS", "SHEETS", "SUBMITTED", "COMPLETED"]
    assert listed[1].startswith("mixed") and "failed" in listed[1]
    assert len(listed[1].split()) >= 7  # date and time for submitted and completed

    text = podium_cli(home, "status", "mixed").stdout
    skipped = next(line for line in text.splitlines() if "sheet 2" in line)
    assert "skipped: skipped" not in skipped and "skipped: depends on sheet 1" in skipped, text


def test_errors_use_cli_words(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    missing = podium_cli(home, "status", "nope")
    assert missing.returncode == 2
    assert "list_jobs" not in missing.stderr and "podium list" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr
    paused = podium_cli(home, "pause", "nope")
    assert paused.returncode == 2
    assert "JOB: job 'nope' not found" in paused.stderr and "podium list" in paused.stderr
    clear = podium_cli(home, "clear")
    assert clear.returncode == 2 and "--all" in clear.stderr, clear.stderr
    assert podium_cli(home, "stop", "--force").returncode == 0


def test_run_names_its_job_id_option_in_errors(tmp_path: Path) -> None:
    """`podium run --job-id` refused (a bad id, or an id taken by another spec) names the
    option to change, not the JOB argument of the other commands or the tool's job_id."""
    home = make_home(tmp_path)
    first = tmp_path / "first.yaml"
    first.write_text("name: first\nsheets: [{prompt: 'true'}]\n")
    other = tmp_path / "other.yaml"
    other.write_text("name: other\nsheets: [{prompt: 'true'}]\n")
    try:
        ran = podium_cli(home, "run", "--job-id", "taken", str(first))
        assert ran.returncode == 0 and "job taken (1 sheet), workspace" in ran.stdout, ran.stdout
        taken = podium_cli(home, "run", "--job-id", "taken", str(other))
        assert taken.returncode == 2, taken.stderr
        assert "--job-id: job 'taken' already exists with a different spec" in taken.stderr
        assert "choose another --job-id" in taken.stderr, taken.stderr
        bad = podium_cli(home, "run", "--job-id", "a b", str(other))
        assert bad.returncode == 2 and "--job-id: 'a b' is not allowed" in bad.stderr, bad.stderr
        for refused in (taken, bad):
            assert "JOB" not in refused.stderr and "job_id" not in refused.stderr
    finally:
        podium_cli(home, "stop", "--force")


def test_piped_errors_keep_their_lines_and_name_cli_options(tmp_path: Path) -> None:
    """Standard error that is not a terminal (a log, a pipe to grep) gets each message line
    whole, never folded at 80 columns in the middle of a command to type; and `clear`
    with nothing to select names the CLI's own arguments, not the tool's."""
    home = make_home(tmp_path)
    unknown = podium_cli(home, "clear", "--rate-limits", "--instrument", "nope")
    assert unknown.returncode == 2
    [line] = [x for x in unknown.stderr.splitlines() if "unknown instrument" in x]
    assert "known: " in line and line.rstrip().endswith("shell"), unknown.stderr
    empty = podium_cli(home, "clear")
    assert empty.returncode == 2
    [line] = empty.stderr.splitlines()
    for word in ("JOB", "--status", "--older-than-hours", "--all"):
        assert word in line, line
    for word in ("job_ids", "statuses", "older_than_hours"):
        assert word not in line, line
    assert podium_cli(home, "stop", "--force").returncode == 0


def test_stop_works_after_config_yaml_was_broken(tmp_path: Path) -> None:
    """The running conductor keeps the configuration it read; a typo saved into config.yaml
    afterwards must not leave `podium stop` unable to stop it."""
    home = make_home(tmp_path)
    assert podium_cli(home, "pause", "nope").returncode == 2  # starts the conductor
    info = json.loads((home / "conductor.json").read_text())
    (home / "config.yaml").write_text("max_concurent_sheets: 3\n")
    stopped = podium_cli(home, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "max_concurent_sheets" in stopped.stderr, stopped.stderr  # still reported
    assert f"pid {info['pid']}" in stopped.stdout, stopped.stdout
    assert not (home / "conductor.json").exists()
    # Anything that would start a conductor on it still refuses, naming the key.
    started = podium_cli(home, "pause", "nope")
    assert started.returncode == 2 and "max_concurent_sheets" in started.stderr
    assert "did you mean 'max_concurrent_sheets'" in started.stderr, started.stderr


def test_a_failed_start_shows_its_own_log_lines_not_an_earlier_runs(tmp_path: Path) -> None:
    """conductor.log keeps every run's lines: the reason a start failed is what that start
    wrote, not the tail of the file, which may be an earlier failure's."""
    home = make_home(tmp_path)
    (home / "config.yaml").write_text("store_url: mysql://db.example/jobs\n")
    first = podium_cli(home, "start", "--detach")
    assert first.returncode != 0 and "'mysql' is not supported" in first.stderr, first.stderr
    (home / "config.yaml").write_text("store_url: redis://cache.example/0\n")
    second = podium_cli(home, "start", "--detach")
    assert second.returncode != 0, second.stderr
    assert "'redis' is not supported" in second.stderr, second.stderr
    assert "mysql" not in second.stderr, second.stderr
    log = (home / "logs" / "conductor.log").read_text()
    assert "mysql" in log and "redis" in log  # both runs are still in the log itself


def test_a_home_that_is_missing_or_not_a_folder_is_named_not_created(tmp_path: Path) -> None:
    """A typo in --home: a read does not create the folder and its database (looking
    changes nothing), and says what is wrong; a home that is a file is refused by every
    command with the reason, never a traceback."""
    missing = tmp_path / "typo-home"
    for args in (["list"], ["status"], ["status", "x"], ["logs", "x"], ["snapshots"]):
        read = podium_cli(missing, *args)
        assert read.returncode == 2, (args, read.stdout, read.stderr)
        assert str(missing) in read.stderr and "does not exist" in read.stderr, read.stderr
        assert not missing.exists(), args
    afile = tmp_path / "a-file"
    afile.write_text("not a home\n")
    for args in (["list"], ["pause", "x"], ["start", "--detach"], ["serve", "--embedded"]):
        used = podium_cli(afile, *args)
        assert used.returncode == 2, (args, used.stdout, used.stderr)
        assert "Traceback" not in used.stderr, used.stderr
        assert str(afile) in used.stderr and "not a directory" in used.stderr, used.stderr
    assert afile.read_text() == "not a home\n"


def test_a_home_that_cannot_be_created_is_named_by_every_engine_command(tmp_path: Path) -> None:
    """A home whose folder cannot be made (here a file stands in its path; a read-only disk
    fails the same way) is refused by each command that runs an engine with the reason,
    never a traceback from creating its log folder."""
    afile = tmp_path / "a-file"
    afile.write_text("not a folder\n")
    home = afile / "home"
    for args in (
        ["start"],
        ["start", "--detach"],
        ["serve", "--embedded"],
        ["serve", "--transport", "sse", "--port", "0"],
        ["run", str(afile)],
    ):
        used = podium_cli(home, *args)
        assert used.returncode == 2, (args, used.stdout, used.stderr)
        assert "Traceback" not in used.stderr, used.stderr
        assert f"cannot create the Podium home {home}: Not a directory" in used.stderr, (
            args,
            used.stderr,
        )
    assert afile.read_text() == "not a folder\n"


def test_a_spec_is_checked_before_the_home_exists_without_creating_it(tmp_path: Path) -> None:
    """`validate` and `estimate` work before the first `podium run` (a new user checks a
    spec first), against an empty home of the moment; the home named stays uncreated."""
    missing = tmp_path / "not-yet"
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: first\nworkspace: " + str(missing / "workspaces" / "mine") + "\n"
        "sheets:\n  - {name: a, prompt: 'true'}\n  - {prompt: 'true', depends_on: [a]}\n"
    )
    checked = podium_cli(missing, "validate", str(spec), "--json")
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["valid"] is True and [s["depends_on"] for s in report["sheets"]] == [[], [1]]
    guessed = podium_cli(missing, "estimate", str(spec), "--json")
    assert guessed.returncode == 0, guessed.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: first\nsheets:\n  - {prompt: 'true', instrument: nope}\n")
    refused = podium_cli(missing, "validate", str(bad))
    assert refused.returncode == 1 and "sheets.0.instrument" in refused.stderr, refused.stderr
    assert not missing.exists()


def test_sigterm_detaches_podium_run(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    spec = tmp_path / "nap.yaml"
    release = tmp_path / "release"
    # The sheet holds until released: with a fixed sleep it could end before the SIGTERM
    # landed (under load), and `podium run` would exit with the job's outcome instead.
    spec.write_text(
        f"name: nap\nsheets:\n  - prompt: 'while [ ! -e {release} ]; do sleep 0.05; done; "
        "echo awake'\n"
    )
    proc = subprocess.Popen(
        [PODIUM, "run", str(spec), "--job-id", "nap-term"],
        env=server_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("job nap-term"), first
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 128 + signal.SIGTERM
        assert "detached" in out and "podium status nap-term --follow" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    conductor = json.loads((home / "conductor.json").read_text())["pid"]
    release.touch()
    deadline = time.monotonic() + 30
    while json.loads(podium_cli(home, "status", "nap-term", "--json").stdout)["status"] != (
        "completed"
    ):
        assert time.monotonic() < deadline, "the detached job did not complete"
        time.sleep(0.2)
    assert running(conductor)


def attached(pid: int, port: int) -> bool:
    """Whether process `pid` holds an open connection to the conductor's `port`."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.raddr and c.raddr.port == port for c in connections)


def test_a_follower_whose_conductor_stops_says_so_and_how_to_follow_again(
    tmp_path: Path,
) -> None:
    """`podium run` and `podium status JOB --follow` lose their conductor (`podium stop
    --force` under them): each says which job it followed and how to pick it up again, and
    exits non-zero, without a traceback or a bare exception name."""
    home = make_home(tmp_path)
    spec = tmp_path / "hold.yaml"
    spec.write_text("name: hold\nsheets:\n  - prompt: 'sleep 600'\n")
    run = subprocess.Popen(
        [PODIUM, "run", str(spec), "--job-id", "held-run"],
        env=server_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    follow: subprocess.Popen[str] | None = None
    try:
        assert run.stdout is not None
        assert run.stdout.readline().startswith("job held-run"), "no submit"
        follow = subprocess.Popen(
            [PODIUM, "status", "held-run", "--follow"],
            env=server_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while "running" not in podium_cli(home, "status", "held-run").stdout:
            assert time.monotonic() < deadline, "the sheet did not start"
            time.sleep(0.2)
        port = urlsplit(json.loads((home / "conductor.json").read_text())["url"]).port
        assert port is not None
        while not attached(follow.pid, port):
            assert time.monotonic() < deadline, "the follower did not attach"
            time.sleep(0.1)
        stopped = podium_cli(home, "stop", "--force")
        assert stopped.returncode == 0, stopped.stderr
        for proc in (run, follow):
            out, errors = proc.communicate(timeout=30)
            assert proc.returncode == 1, (proc.args, out, errors)
            assert "lost the conductor while following job held-run" in errors, errors
            assert "podium status held-run --follow" in errors, errors
            assert "Traceback" not in errors and "Error(" not in errors, errors
    finally:
        for proc in (run, follow):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)
    paused = json.loads(podium_cli(home, "status", "held-run", "--json").stdout)
    assert paused["status"] == "paused" and paused["pause_reason"] == "shutdown"


def test_a_forked_command_answers_as_the_program_does(tmp_path: Path) -> None:
    """tests/cli_zygote.py forks the commands the tests run: the same exit code, stdout and
    stderr as `podium` exec'd, for a usage error, an error in CLI words and a cold read."""
    import cli_zygote

    home = make_home(tmp_path)
    for args in (["nope"], ["status", "ghost"], ["list", "--json"], ["--version"]):
        forked = cli_zygote.run_podium(args, server_env(home))
        execd = subprocess.run(
            [PODIUM, *args], env=server_env(home), capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert (forked.returncode, forked.stdout, forked.stderr) == (
            execd.returncode, execd.stdout, execd.stderr
        ), args  # fmt: skip
        assert forked.returncode != 0 or forked.stdout, args

"""A CLI command configured for another store than the running conductor's refuses (naming
both stores, where the setting came from, and the remedy) instead of acting on the
conductor's store; `podium stop` still works. Real conductor processes, each with a home in
tmp_path."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from cli_zygote import run_podium
from test_transports import make_home, running, server_env

from podium.core.config import PodiumConfig, load_config, setting_source
from podium.core.store.urls import store_identity

CONDITION_TIMEOUT = 30.0


def cli(home: Path, *args: str, **env: str) -> Any:
    return run_podium(list(args), server_env(home, **env), timeout=60)


def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "hello.yaml"
    path.write_text("name: hello\nsheets:\n  - prompt: echo hello\n")
    return path


def job_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return sorted(row[0] for row in conn.execute("SELECT job_id FROM jobs"))


def conductor_pid(home: Path) -> int:
    pid: int = json.loads((home / "conductor.json").read_text())["pid"]
    return pid


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + CONDITION_TIMEOUT
    while running(pid):
        assert time.monotonic() < deadline, f"conductor {pid} still runs"
        time.sleep(0.05)


# ----- what names a store ---------------------------------------------------------------------


def test_store_identity_is_one_string_per_store_and_holds_no_password(tmp_path: Path) -> None:
    db = tmp_path / "podium.db"
    same_file = [f"sqlite://{db}", f"sqlite:///{db}", f"sqlite://{tmp_path}/x/../podium.db"]
    assert {store_identity(u) for u in same_file} == {f"sqlite://{db}"}
    link = tmp_path / "link"
    link.symlink_to(tmp_path, target_is_directory=True)
    assert store_identity(f"sqlite://{link}/podium.db") == f"sqlite://{db}"
    assert store_identity(f"sqlite://{tmp_path}/other.db") != store_identity(f"sqlite://{db}")

    pg = "postgresql://bob@db.example:5432/jobs?application_name=x&options=-csearch_path%3Ds"
    for spelling in [
        "postgresql://bob:secret@db.example:5432/jobs?options=-csearch_path%3Ds&application_name=x",
        "postgres://bob@DB.example/jobs?application_name=x&options=-csearch_path%3Ds",
        "postgresql://bob@db.example/jobs?password=secret&application_name=x"
        "&options=-csearch_path%3Ds",
    ]:
        assert store_identity(spelling) == pg, spelling
        assert "secret" not in store_identity(spelling)
    # Another database, user, port or schema is another store.
    for other in [
        "postgresql://bob@db.example/other?application_name=x&options=-csearch_path%3Ds",
        "postgresql://eve@db.example/jobs?application_name=x&options=-csearch_path%3Ds",
        "postgresql://bob@db.example:5433/jobs?application_name=x&options=-csearch_path%3Ds",
        "postgresql://bob@db.example/jobs?application_name=x&options=-csearch_path%3Dt",
    ]:
        assert store_identity(other) != pg, other
    # Unparseable or unsupported: kept as written, but for the password.
    assert store_identity("postgresql://u:pw@h1:5432,h2:5433/db") == (
        "postgresql://u@h1:5432,h2:5433/db"
    )
    assert store_identity("mysql://u:pw@h/db") == "mysql://u@h/db"


def test_setting_source_names_where_store_url_came_from(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    default = load_config(home=home, env={})
    assert setting_source(default, "store_url", env={}) == "the default"
    other = f"sqlite://{tmp_path}/other.db"
    (home / "config.yaml").write_text(f"store_url: {other}\n")
    from_file = load_config(home=home, env={})
    assert setting_source(from_file, "store_url", env={}) == f"set in {home / 'config.yaml'}"
    env = {"PODIUM_STORE_URL": f"sqlite://{tmp_path}/third.db"}
    from_env = load_config(home=home, env=env)
    assert setting_source(from_env, "store_url", env=env) == (
        "set in environment variable PODIUM_STORE_URL"
    )
    # A value none of those places give was passed by whoever built the configuration.
    built = PodiumConfig(home=home, store_url=f"sqlite://{tmp_path}/fourth.db")
    assert setting_source(built, "store_url", env={}) == (
        "set by the program that loaded the configuration"
    )


# ----- a command on another store -------------------------------------------------------------


def test_commands_configured_for_another_store_refuse_and_change_nothing(
    tmp_path: Path,
) -> None:
    """Every command that attaches refuses, naming both stores, the environment variable
    that differs and the remedy; neither store changes. A matching command works, and
    `podium stop` works with the mismatching setting."""
    home = make_home(tmp_path)
    spec = spec_file(tmp_path)
    db = home / "podium.db"
    done = cli(home, "run", str(spec))
    assert done.returncode == 0, done.stderr
    pid = conductor_pid(home)
    recorded = json.loads((home / "conductor.json").read_text())
    assert recorded["store"] == f"sqlite://{db}"
    assert recorded["store_source"] == "the default"
    before = job_ids(db)
    assert len(before) == 1

    other = tmp_path / "other.db"
    elsewhere = {"PODIUM_STORE_URL": f"sqlite://{other}"}
    for command in [
        ["list"],
        ["status", "--json"],
        ["status", before[0]],
        ["run", str(spec)],
        ["clear", "--all"],
        ["cancel", before[0]],
        ["instruments"],
        ["validate", str(spec)],
        ["start"],
        ["start", "--detach"],
        ["dashboard", "--json"],
        ["serve"],
        ["top"],
    ]:
        refused = cli(home, *command, **elsewhere)
        assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
        message = refused.stderr
        assert "store mismatch" in message, (command, message)
        assert f"runs on sqlite://{db} (its store_url: the default" in message, message
        assert (
            f"this command's store_url is sqlite://{other} (set in environment variable "
            "PODIUM_STORE_URL)" in message
        ), message
        assert "unset PODIUM_STORE_URL" in message
        assert "`podium stop`" in message and "nothing was done" in message
        assert "Traceback" not in message
        assert refused.stdout == "", (command, refused.stdout)
    assert not other.exists()
    assert job_ids(db) == before
    assert running(pid) and conductor_pid(home) == pid

    # The same store spelt another way is the same store.
    same = cli(home, "list", "--json", PODIUM_STORE_URL=f"sqlite:///{home}/../home/podium.db")
    assert same.returncode == 0, same.stderr
    assert [j["job_id"] for j in json.loads(same.stdout)["jobs"]] == before
    status = json.loads(cli(home, "status", "--json").stdout)
    assert (status["store"], status["store_source"]) == (f"sqlite://{db}", "the default")

    # A reload keeps the conductor's store; it says so.
    reload = cli(home, "reload", **elsewhere)
    assert reload.returncode == 0, reload.stderr
    assert "a reload keeps the store the conductor started with" in reload.stderr

    stopped = cli(home, "stop", **elsewhere)
    assert stopped.returncode == 0, stopped.stderr
    wait_gone(pid)
    assert not other.exists() and job_ids(db) == before


def test_a_store_url_changed_in_config_yaml_since_the_start_is_named_there(
    tmp_path: Path,
) -> None:
    home = make_home(tmp_path)
    assert cli(home, "start", "--detach").returncode == 0
    pid = conductor_pid(home)
    other = tmp_path / "other.db"
    config_file = home / "config.yaml"
    config_file.write_text(f"store_url: sqlite://{other}\n")
    refused = cli(home, "list")
    assert refused.returncode == 2
    assert f"this command's store_url is sqlite://{other} (set in {config_file})" in (
        refused.stderr
    )
    assert f"set store_url in {config_file} to the conductor's store" in refused.stderr
    assert not other.exists()
    # The remedy: a restart runs the conductor on the store config.yaml names now.
    restarted = cli(home, "restart")
    assert restarted.returncode == 0, restarted.stderr
    wait_gone(pid)
    status = json.loads(cli(home, "status", "--json").stdout)
    assert status["store"] == f"sqlite://{other}"
    assert status["store_source"] == f"set in {config_file}"
    assert cli(home, "stop").returncode == 0


def test_postgres_stores_compare_without_password_port_or_spelling(tmp_path: Path) -> None:
    """A conductor on one PostgreSQL schema: a command on another schema refuses and leaves
    that schema empty; the conductor's own URL spelt differently (default port, `postgres:`,
    a password) is the same store. No password is written to conductor.json or shown."""
    import psycopg
    from pg import PG_URL, fresh_schema

    with fresh_schema("mine") as mine, fresh_schema("theirs") as theirs:
        home = make_home(tmp_path)
        (home / "config.yaml").write_text(json.dumps({"store_url": mine + "&password=sekrit"}))
        assert cli(home, "start", "--detach").returncode == 0
        pid = conductor_pid(home)
        try:
            recorded = (home / "conductor.json").read_text()
            assert "sekrit" not in recorded
            assert json.loads(recorded)["store"] == store_identity(mine)
            refused = cli(home, "list", PODIUM_STORE_URL=theirs)
            assert refused.returncode == 2
            assert "store mismatch" in refused.stderr and "sekrit" not in refused.stderr
            assert f"runs on {store_identity(mine)} (its store_url: set in " in refused.stderr
            schema = theirs.rsplit("search_path%3D", 1)[-1]
            with psycopg.connect(PG_URL) as conn:
                tables = conn.execute(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s",
                    (schema,),
                ).fetchone()
            assert tables == (0,)
            spelt = "postgres://" + mine.removeprefix("postgresql://").replace(":5432/", "/")
            same = cli(home, "status", "--json", PODIUM_STORE_URL=spelt)
            assert same.returncode == 0, same.stderr
            assert "sekrit" not in same.stdout
        finally:
            assert cli(home, "stop").returncode == 0
        wait_gone(pid)

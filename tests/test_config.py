"""Configuration (SPEC §3): one model, filled from a flag, then `PODIUM_<KEY>`, then
config.yaml, then the default; lists in the environment split on `os.pathsep`; and an
error that names the key, why, and the one place its value came from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from podium.core.config import ConfigError, PodiumConfig, load_config


def write_config(home: Path, text: str) -> None:
    home.mkdir(exist_ok=True)
    (home / "config.yaml").write_text(text)


def test_a_flag_beats_the_environment_which_beats_config_yaml_which_beats_the_default(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    default = PodiumConfig.model_fields["max_concurrent_sheets"].default
    assert load_config(home=home, env={}).max_concurrent_sheets == default

    write_config(home, "max_concurrent_sheets: 3\nmonitor_interval_seconds: 7\n")
    assert load_config(home=home, env={}).max_concurrent_sheets == 3

    env = {"PODIUM_MAX_CONCURRENT_SHEETS": "5"}
    config = load_config(home=home, env=env)
    assert config.max_concurrent_sheets == 5
    assert config.monitor_interval_seconds == 7  # keys the environment leaves alone stay

    flagged = load_config(home=home, env=env, overrides={"max_concurrent_sheets": 6})
    assert flagged.max_concurrent_sheets == 6
    # A flag that was not given (None) leaves the layers below it in place.
    unset = load_config(home=home, env=env, overrides={"max_concurrent_sheets": None})
    assert unset.max_concurrent_sheets == 5


def test_lists_in_the_environment_split_on_the_path_separator(tmp_path: Path) -> None:
    roots = [tmp_path / "a", tmp_path / "b c", tmp_path / "d"]
    env = {"PODIUM_ALLOWED_ROOTS": os.pathsep.join(map(str, roots)) + os.pathsep}
    config = load_config(home=tmp_path / "home", env=env)
    assert [Path(r) for r in config.allowed_roots] == roots
    # `--allow-root` adds to them rather than replacing them.
    extra = tmp_path / "e"
    flagged = load_config(
        home=tmp_path / "home", env=env, overrides={"allowed_roots": [str(extra)]}
    )
    assert [Path(r) for r in flagged.allowed_roots] == [*roots, extra]


def test_an_error_names_the_key_why_and_where_its_value_was_set(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_config(home, "max_concurrent_sheets: 0\nkill_grace_second: 3\n")
    env = {"PODIUM_LEASE_SECONDS": "soon"}
    with pytest.raises(ConfigError) as caught:
        load_config(home=home, env=env, overrides={"log_max_bytes": -1})
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid configuration:"
    by_key = {line.split(":", 1)[0]: line for line in lines[1:]}
    assert sorted(by_key) == [
        "kill_grace_second",
        "lease_seconds",
        "log_max_bytes",
        "max_concurrent_sheets",
    ], lines
    config_file = str(home / "config.yaml")
    assert "greater than or equal to 1" in by_key["max_concurrent_sheets"]
    assert f"set in {config_file}" in by_key["max_concurrent_sheets"]
    assert "did you mean 'kill_grace_seconds'" in by_key["kill_grace_second"]
    assert f"set in {config_file}" in by_key["kill_grace_second"]
    assert "set in environment variable PODIUM_LEASE_SECONDS" in by_key["lease_seconds"]
    assert (
        "soon" not in by_key["lease_seconds"]
    )  # values are not echoed (a store_url has a password)
    assert "set in the command line" in by_key["log_max_bytes"]


def test_the_environment_overriding_a_bad_config_yaml_value_names_the_environment(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    write_config(home, "max_concurrent_jobs: 2\n")
    with pytest.raises(ConfigError) as caught:
        load_config(home=home, env={"PODIUM_MAX_CONCURRENT_JOBS": "many"})
    message = str(caught.value)
    assert "environment variable PODIUM_MAX_CONCURRENT_JOBS" in message
    assert "config.yaml" not in message

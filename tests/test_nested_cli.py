"""A sheet that runs `podium` talks to the conductor running it (issue 17's chaining, issue 8's
one conductor per home): its environment carries that conductor's home."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import wait_for_job
from test_transports import PODIUM, make_home, podium_cli, server_env

from podium.core.conductor import Conductor
from podium.core.models import JobStatus

pytestmark = pytest.mark.anyio


async def test_a_sheet_sees_its_conductors_home_and_a_spec_env_overrides_it(
    conductor: Conductor, home: Path, tmp_path: Path
) -> None:
    spec = {
        "name": "home-env",
        "sheets": [
            {"name": "plain", "prompt": 'printf %s "$PODIUM_HOME" > plain.txt'},
            {
                "name": "overridden",
                "instrument_config": {"env": {"PODIUM_HOME": str(tmp_path / "elsewhere")}},
                "prompt": 'printf %s "$PODIUM_HOME" > overridden.txt',
            },
        ],
    }
    submitted = await conductor.submit_job(spec=spec)
    done = await wait_for_job(conductor, submitted.job_id)
    assert done.status is JobStatus.COMPLETED
    workspace = Path(done.workspace)
    # The home came from the config, not from this process's environment.
    assert (workspace / "plain.txt").read_text() == str(home)
    assert (workspace / "overridden.txt").read_text() == str(tmp_path / "elsewhere")


def test_a_sheet_running_podium_run_attaches_to_the_conductor(tmp_path: Path) -> None:
    """`podium run outer.yaml`: outer's sheet runs `podium run inner.yaml`, which attaches to
    the conductor already running outer (no "home already in use") and follows inner to its
    end; both jobs complete on the one conductor."""
    home = make_home(tmp_path)
    specs = tmp_path / "specs"
    specs.mkdir()
    inner = specs / "inner.yaml"
    inner.write_text(yaml.safe_dump({"name": "inner", "sheets": [{"prompt": "echo inner"}]}))
    outer = specs / "outer.yaml"
    outer.write_text(
        yaml.safe_dump(
            {
                "name": "outer",
                "sheets": [{"prompt": f"{PODIUM} run {inner} && echo chained > chained.txt"}],
                "retry": {"max_retries": 0},
            }
        )
    )
    ran = subprocess.run(
        [PODIUM, "run", str(outer)],
        env=server_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    listed = json.loads(podium_cli(home, "list", "--json").stdout)["jobs"]
    assert sorted((j["name"], j["status"]) for j in listed) == [
        ("inner", "completed"),
        ("outer", "completed"),
    ]
    outer_job = next(j for j in listed if j["name"] == "outer")
    status = json.loads(podium_cli(home, "status", outer_job["job_id"], "--json").stdout)
    assert (Path(status["workspace"]) / "chained.txt").read_text() == "chained\n"

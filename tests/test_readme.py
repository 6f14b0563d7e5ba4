"""The README's quick start is two commands that must keep working: hold them to reality."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_quick_start_has_two_commands_matching_ci() -> None:
    install_and_run, run_tests = quick_start_commands()
    assert "pip install -e '.[dev]'" in install_and_run
    assert install_and_run.endswith("podium run examples/hello.yaml")
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == run_tests  # .ci/run ends with exactly the README's test command


def test_quick_start_example_runs_on_a_fresh_home(tmp_path: Path) -> None:
    env = {**os.environ, "PODIUM_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "podium.server.cli", "run", "examples/hello.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"job hello-\S+ completed", done.stdout)
    assert (tmp_path / "home" / "podium.db").is_file()


def test_examples_all_validate(tmp_path: Path) -> None:
    from podium.core.spec.loader import load_spec

    for spec in sorted((ROOT / "examples").glob("*.yaml")):
        loaded = load_spec(path=spec)
        assert loaded.sheets, spec

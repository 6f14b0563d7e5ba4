"""The repository stands alone (SPEC §2): nothing it or its CI needs lives outside it, the
conformance check fetches its own tools and skips cleanly without a registry, and every
baselined conformance failure carries a reason."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = ("../" + "shared", "/work/" + "shared")  # spelt apart so this file does not match


def repository_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def test_nothing_refers_outside_the_repository() -> None:
    offenders = []
    for path in repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(ROOT)}: {o}" for o in OUTSIDE if o in text]
    assert not offenders, offenders


def test_the_layout_the_readme_names_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    for folder in ("core", "server", "examples", "docs", "tests"):
        assert (ROOT / folder).is_dir(), folder
    for link in re.findall(r"\]\(((?:docs|examples)/[^)#]+)", readme):
        assert (ROOT / link).exists(), f"README links to missing {link}"


def unreachable_registry_env(tmp_path: Path) -> dict[str, str]:
    # An empty cache and a registry on a closed loopback port: nothing can be fetched.
    return {
        **os.environ,
        "PODIUM_NODE_CACHE": str(tmp_path / "node-cache"),
        "npm_config_registry": "http://127.0.0.1:9/",
        "npm_config_fetch_retries": "0",
    }


def test_node_tools_say_when_the_registry_is_unreachable(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(ROOT / ".ci" / "node-tools"), "install"],
        env=unreachable_registry_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 77, done.stdout + done.stderr
    assert "npm registry is unreachable" in done.stderr


def test_conformance_check_skips_with_a_message_without_a_registry(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "tests" / "mcp_conformance.sh")],
        env=unreachable_registry_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SKIPPED, the npm registry is unreachable" in done.stdout


def test_conformance_baseline_lists_checks_with_reasons() -> None:
    path = ROOT / "tests" / "conformance-baseline.yml"
    entries = yaml.safe_load(path.read_text())["server"]
    assert entries and all(re.fullmatch(r"[a-z0-9-]+:[a-z0-9-]+", e) for e in entries), entries
    assert len(entries) == len(set(entries))
    # Entries come in groups, each opened by a comment that says why; only fixture- or
    # capability-shaped reasons are allowed.
    allowed = ("test server", "fixture", "does not declare", "declares none")
    listed = []
    for block in path.read_text().split("\n\n")[1:]:
        lines = block.strip().splitlines()
        assert lines[0].lstrip().startswith("#"), f"group without a reason: {lines[0]}"
        comment = " ".join(x for x in lines if x.lstrip().startswith("#"))
        assert any(word in comment for word in allowed), comment
        listed += [x.strip()[2:] for x in lines if x.strip().startswith("- ")]
    assert listed == entries
    script = (ROOT / "tests" / "mcp_conformance.sh").read_text()
    assert "--suite all" in script and "--expected-failures" in script
    assert '-e "PODIUM_HOME=' in script

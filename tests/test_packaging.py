"""What an installed (not editable) Podium holds: every package and data file of the source
tree, so a wheel works like the clone it was built from."""

from __future__ import annotations

import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setuptools() -> dict[str, object]:
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert isinstance(table, dict)
    return table


def _source_packages() -> dict[str, Path]:
    found = {}
    for prefix, folder in (("podium.core", "core"), ("podium.server", "server")):
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(ROOT / folder)
            name = ".".join([prefix, *relative.parts])
            found[name] = init.parent
    return found


def test_every_package_of_the_source_tree_is_declared() -> None:
    declared = set(_setuptools()["packages"])  # type: ignore[arg-type]
    assert set(_source_packages()) == declared


def test_every_data_file_is_declared() -> None:
    """Files other than Python in a package ship only when package-data names them."""
    data: dict[str, list[str]] = _setuptools()["package-data"]  # type: ignore[assignment]
    by_folder = {folder: name for name, folder in _source_packages().items()}
    for folder, name in by_folder.items():
        for path in folder.rglob("*"):
            if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            owner = next(p for p in path.parents if p in by_folder)  # its nearest package
            if owner != folder:
                continue
            relative = path.relative_to(folder)
            patterns = data.get(name, [])
            assert any(relative.match(p) for p in patterns), (name, str(relative), patterns)


def test_a_built_wheel_holds_the_importer_and_the_data(tmp_path: Path) -> None:
    """Built as `pip install .` builds it (in an isolated build environment, from the same
    package index the install used), without its dependencies."""
    import subprocess
    import sys

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in (
        "podium/core/importer/score.py",
        "podium/core/store/sqlite/queries.sql",
        "podium/core/store/postgres/migrations/0001_initial.sql",
        "podium/core/instruments/builtin/shell.yaml",
        "podium/server/static/dashboard.html",
    ):
        assert must in names, must

"""Podium's installed version, in a module of its own: the CLI names itself to the conductor
with it, and importing the conductor for that would cost every CLI call the engine's imports."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version


def podium_version() -> str:
    try:
        return package_version("podium")
    except PackageNotFoundError:
        return "0+unknown"

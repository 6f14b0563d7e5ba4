"""Podium's installed version, in a module of its own: the CLI names itself to the conductor
with it, and importing the conductor for that would cost every CLI call the engine's imports."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version


@functools.cache
def podium_version() -> str:
    """Read once: the package metadata is a file parse, and `status` reports it per call."""
    try:
        return package_version("podium")
    except PackageNotFoundError:
        return "0+unknown"

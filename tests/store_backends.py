"""The store implementations the contract suite runs against.

A second store (PostgreSQL) joins the suite by adding one entry to `BACKENDS`: a factory
that opens any number of stores on one shared location (the suite opens two at once to play
two conductors, and reopens to check durability).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from podium.core.config import load_config
from podium.core.store.base import Store
from podium.core.store.open import open_store

Opener = Callable[[], Awaitable[Store]]


def sqlite_backend(tmp_path: Path) -> Opener:
    config = load_config(home=tmp_path / "sqlite-home", env={})

    async def open_one() -> Store:
        return await open_store(config)

    return open_one


BACKENDS: dict[str, Callable[[Path], Opener]] = {"sqlite": sqlite_backend}

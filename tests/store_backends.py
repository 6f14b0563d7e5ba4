"""The store implementations the contract suite runs against.

Each entry of `BACKENDS` is a factory that, given the test's temporary folder and its
pytest request, returns an opener: a function that opens any number of stores on one shared
location (the suite opens two at once to play two conductors, and reopens to check
durability). PostgreSQL joins when a server answers (tests/pg.py) and skips, saying why,
when none does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pg import fresh_schema

from podium.core.config import load_config
from podium.core.store.base import Store
from podium.core.store.open import open_store

Opener = Callable[[], Awaitable[Store]]


def sqlite_backend(tmp_path: Path, request: pytest.FixtureRequest) -> Opener:
    config = load_config(home=tmp_path / "sqlite-home", env={})

    async def open_one() -> Store:
        return await open_store(config)

    return open_one


def postgres_backend(tmp_path: Path, request: pytest.FixtureRequest) -> Opener:
    schema = fresh_schema("contract")
    url = schema.__enter__()
    request.addfinalizer(lambda: schema.__exit__(None, None, None))
    config = load_config(home=tmp_path / "pg-home", overrides={"store_url": url}, env={})

    async def open_one() -> Store:
        return await open_store(config)

    return open_one


BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], Opener]] = {
    "sqlite": sqlite_backend,
    "postgres": postgres_backend,
}

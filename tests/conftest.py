"""Shared fixtures: a fresh Podium home per test and a started conductor on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig, load_config


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def make_config(home: Path) -> Callable[..., PodiumConfig]:
    def make(**overrides: Any) -> PodiumConfig:
        overrides.setdefault("kill_grace_seconds", 1)
        return load_config(home=home, overrides=overrides, env={})

    return make


@pytest.fixture
async def conductor(make_config: Callable[..., PodiumConfig]) -> AsyncIterator[Conductor]:
    c = Conductor(make_config())
    await c.start()
    try:
        yield c
    finally:
        await c.stop()

"""Shared fixtures: a fresh Podium home per test and a started conductor on it."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil
import pytest

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig, load_config


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the long variants of the hardening suites (more fuzzing, more points)",
    )


@pytest.fixture
def long_run(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--long"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# PODIUM_TEST_STORE=postgres runs every test that uses the `home` fixture against a
# PostgreSQL schema of its own (written into the home's config.yaml, so conductors the test
# starts as processes use it too). .ci/run runs the engine tests that way as well.
TEST_STORE = os.environ.get("PODIUM_TEST_STORE", "sqlite")


@pytest.fixture
def pg_store_url() -> Iterator[str]:
    from pg import fresh_schema

    with fresh_schema() as url:
        yield url


@pytest.fixture
def home(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    if TEST_STORE == "postgres":
        url = request.getfixturevalue("pg_store_url")
        (path / "config.yaml").write_text(json.dumps({"store_url": url}) + "\n")
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


@pytest.fixture(autouse=True)
def _patient_protocol_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK client's `server/discover` probe settles for the legacy protocol after 10 s;
    a first `podium serve` starts the conductor before it answers, which takes longer than
    that on a machine running several suites at once. The protocol is what the tests check,
    not the machine's speed (a server that answers needs no more than it needs)."""
    import mcp.client.session as sdk_session

    monkeypatch.setattr(sdk_session, "DISCOVER_TIMEOUT_SECONDS", 60.0)


@pytest.fixture(autouse=True)
def _stop_leftover_conductors(request: pytest.FixtureRequest) -> Iterator[None]:
    """A CLI command or `podium serve` starts a detached conductor when none runs; whatever a
    test left running in its temp homes is stopped (gracefully, then killed) afterwards."""
    yield
    tmp_path = getattr(request.node, "funcargs", {}).get("tmp_path")
    if not isinstance(tmp_path, Path):
        return
    for info in [*tmp_path.glob("conductor.json"), *tmp_path.glob("*/conductor.json")]:
        with suppress(OSError, ValueError, KeyError, psutil.Error):
            proc = psutil.Process(int(json.loads(info.read_text())["pid"]))
            os.kill(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                if time.monotonic() > deadline:
                    proc.kill()
                    break
                time.sleep(0.05)

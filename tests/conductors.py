"""Real conductors for tests of several conductors on one PostgreSQL store: each is a
`podium start` process with a home of its own (its own logs, lock and conductor.json), all
on one schema, driven through the MCP surface like any client, and read through a store of
the test's own. Each process leads its own session, so a test can kill -9 it and its sheets
together (a host that dies takes its processes with it) or freeze it (SIGSTOP)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psutil

from podium.core.config import PodiumConfig, load_config
from podium.core.store.base import Store
from podium.core.store.open import open_store
from podium.server.daemon import find_conductor
from podium.server.remote import Remote, connect

PODIUM = str(Path(sys.executable).with_name("podium"))
START_TIMEOUT = 60.0


@dataclass
class ConductorProcess:
    name: str
    home: Path
    proc: subprocess.Popen[bytes]
    config: PodiumConfig
    remote: Remote | None = None
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        assert self.remote is not None
        return await self.remote.call(tool, arguments)

    def group(self) -> list[psutil.Process]:
        """The conductor and every process under it (its sheets' groups included)."""
        try:
            me = psutil.Process(self.pid)
            return [me, *me.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill_host(self) -> None:
        """kill -9 of the conductor and of every process it started, at once."""
        for p in self.group():
            with suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.killed = True

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def log_text(self) -> str:
        path = self.home / "logs" / "conductor.log"
        return path.read_text() if path.exists() else ""


def write_config(home: Path, **values: Any) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.yaml").write_text(json.dumps(values, default=str) + "\n")


async def _ready(c: ConductorProcess) -> None:
    with anyio.fail_after(START_TIMEOUT):
        while find_conductor(c.config) is None:
            if c.proc.poll() is not None:
                raise AssertionError(f"conductor {c.name} exited: {c.log_text()[-3000:]}")
            await anyio.sleep(0.05)


@asynccontextmanager
async def conductors(
    tmp_path: Path,
    store_url: str,
    names: Sequence[str],
    *,
    lease_seconds: float = 1.5,
    labels: dict[str, list[str]] | None = None,
    **settings: Any,
) -> AsyncIterator[list[ConductorProcess]]:
    """Start one conductor per name (side by side), all on `store_url`; stop them after."""
    started: list[ConductorProcess] = []
    clients = AsyncExitStack()
    try:
        for name in names:
            home = tmp_path / f"home-{name}"
            write_config(
                home,
                store_url=store_url,
                conductor_id=name,
                lease_seconds=lease_seconds,
                host_labels=(labels or {}).get(name, []),
                allowed_roots=[str(tmp_path)],
                kill_grace_seconds=settings.pop("kill_grace_seconds", 1),
                **settings,
            )
            config = load_config(home=home, env={})
            env = {**os.environ, "PODIUM_HOME": str(home)}
            env.pop("PODIUM_STORE_URL", None)
            proc = subprocess.Popen(
                [PODIUM, "start"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            started.append(ConductorProcess(name, home, proc, config))
        async with anyio.create_task_group() as tg:
            for c in started:
                tg.start_soon(_ready, c)
        for c in started:
            # Entered (and left) in this task: an MCP client's scopes belong to one task.
            info = find_conductor(c.config)
            assert info is not None
            c.remote = await clients.enter_async_context(connect(info))
        yield started
    finally:
        await clients.aclose()
        for c in started:
            if c.proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.kill(c.pid, signal.SIGCONT)
                    c.proc.terminate()
        for c in started:
            try:
                c.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                for p in c.group():
                    with suppress(psutil.NoSuchProcess):
                        p.kill()
                c.proc.wait(timeout=10)


@asynccontextmanager
async def reading(store_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    """The test's own view of the shared store (read only, by convention)."""
    config = load_config(home=tmp_path / "reader", overrides={"store_url": store_url}, env={})
    store = await open_store(config)
    try:
        yield store
    finally:
        await store.close()


async def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """Wait until the async `predicate` is true, re-checking briefly (the state lives in
    other processes; there is nothing local to wait on)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.05)

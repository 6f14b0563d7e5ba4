"""A real conductor (`podium start --detach`) in a temp home for the dashboard tests, an MCP
client of it, and job specs whose sheets wait for a file the test creates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from cli_zygote import run_podium
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent

PODIUM = str(Path(sys.executable).parent / "podium")


def podium_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    env.update(PODIUM_HOME=str(home), PODIUM_KILL_GRACE_SECONDS="1")
    return env


def podium(home: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """A `podium` command as a process of its own (forked from tests/cli_zygote.py)."""
    return run_podium(list(args), podium_env(home), timeout=timeout)


@dataclass
class RunningConductor:
    home: Path
    url: str  # .../mcp
    token: str | None

    @property
    def base(self) -> str:
        return self.url.removesuffix("/mcp")

    @property
    def host(self) -> str:
        return self.base.removeprefix("http://")

    def login_url(self) -> str:
        done = podium(self.home, "dashboard")
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(streamable_http_client(self.url, http_client=http)) as client,
        ):
            yield client


def start_conductor(home: Path) -> RunningConductor:
    home.mkdir(parents=True, exist_ok=True)
    done = podium(home, "start", "--detach")
    assert done.returncode == 0, done.stderr
    info = json.loads((home / "conductor.json").read_text())
    return RunningConductor(home=home, url=info["url"], token=info["token"])


def stop_conductor(conductor: RunningConductor) -> None:
    podium(conductor.home, "stop", "--force")


async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    text = "\n".join(b.text for b in result.content if isinstance(b, TextContent))
    assert not result.is_error, text
    assert result.structured_content is not None
    return result.structured_content


def gated(name: str, gate: str = "go") -> dict[str, Any]:
    """A sheet that runs until the file `gate` appears in the workspace."""
    wait = f"while [ ! -e {{{{ workspace }}}}/{gate} ]; do sleep 0.05; done"
    return {"name": name, "prompt": f"{wait}; echo {name} done"}


def gated_job(name: str) -> dict[str, Any]:
    """Two sheets: `work` runs until the gate file appears, then `after` runs."""
    return {
        "name": name,
        "sheets": [gated("work"), {"name": "after", "depends_on": ["work"], "prompt": "echo ok"}],
    }


def thirty_sheets() -> dict[str, Any]:
    """Six layers of five: layer k depends on one or two sheets of layer k-1. One sheet fails
    (its dependents are skipped), one fails once and then passes (two attempts), one is held
    by the gate file so the DAG has a running sheet."""
    sheets: list[dict[str, Any]] = []
    for layer in range(6):
        for i in range(5):
            num = layer * 5 + i + 1
            sheet: dict[str, Any] = {"name": f"s{num}", "prompt": "sleep 0.1"}
            if layer:
                above = (layer - 1) * 5 + 1
                sheet["depends_on"] = sorted({above + i, above + (i + 1) % 5})
            sheets.append(sheet)
    sheets[6]["prompt"] = "echo broken >&2; exit 1"  # s7 fails: its dependents are skipped
    sheets[8]["prompt"] = (  # s9 fails its first attempt only
        "if [ -e {{ workspace }}/s9 ]; then echo second try; else touch {{ workspace }}/s9; "
        "exit 1; fi"
    )
    sheets[14] = {**gated("s15"), "depends_on": sheets[14]["depends_on"]}
    return {
        "name": "thirty",
        "sheets": sheets,
        "on_failure": "continue",
        "retry": {"max_retries": 1, "base_delay_seconds": 0.2, "jitter": False},
        "concurrency": {"max_parallel_sheets": 4},
    }

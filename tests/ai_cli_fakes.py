"""Fake AI CLIs for the engine tests of the built-in profiles: each prints what the real CLI
prints (in its real stream and format) for an outcome a test picks, and the MCP calls those
tests make."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from cli_streams import (
    claude_init,
    claude_result,
    claude_run,
    codex_failure,
    codex_success,
    gemini_failure,
    jl,
    write_fake_cli,
)
from helpers import wait_until
from mcp import Client
from mcp_types import TextContent

from podium.core.conductor import Conductor
from podium.core.instruments.catalog import builtin_profiles
from podium.core.models import (
    SheetStatus,
)
from podium.server.app import PodiumServer

TASK = "Count the directories in listing.txt and write the number to count.txt"
LISBON = ZoneInfo("Europe/Lisbon")
NEW_YORK = ZoneInfo("America/New_York")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
TOKYO = ZoneInfo("Asia/Tokyo")
SANTIAGO = ZoneInfo("America/Santiago")
SIX_HOURS = timedelta(seconds=21600)  # max_rate_limit_wait_seconds by default


class Fakes:
    """User profiles that are the built-ins with a fake executable, and per-job scripts."""

    def __init__(self, home: Path, tmp_path: Path) -> None:
        self.home = home
        self.tmp = tmp_path
        self.script = write_fake_cli(tmp_path / "fake-cli")
        (home / "instruments").mkdir(exist_ok=True)
        self._builtins = builtin_profiles()

    def install(self, name: str, base: str | None = None, **update: Any) -> None:
        profile = self._builtins[base or name].model_copy(
            update={"name": name, "executable": str(self.script), **update}
        )
        data = profile.model_dump(mode="json", exclude_none=True)
        (self.home / "instruments" / f"{name}.yaml").write_text(yaml.safe_dump(data))

    def env(self, tag: str, *attempts: dict[str, Any]) -> dict[str, str]:
        """The environment a sheet needs to replay `attempts` (one per call)."""
        scenario = self.tmp / f"{tag}.scenario.json"
        scenario.write_text(json.dumps(list(attempts)))
        record = self.tmp / f"{tag}.record.jsonl"
        record.write_text("")
        return {"FAKE_SCENARIO": str(scenario), "FAKE_RECORD": str(record)}

    def calls(self, tag: str) -> list[dict[str, Any]]:
        lines = (self.tmp / f"{tag}.record.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def spec(
        self, tag: str, instrument: str, *attempts: dict[str, Any], **fields: Any
    ) -> dict[str, Any]:
        sheet = {"prompt": TASK, **fields.pop("sheet", {})}
        config = {"env": self.env(tag, *attempts), **fields.pop("config", {})}
        return {
            "name": tag,
            "instrument": instrument,
            "instrument_config": config,
            "retry": {"max_retries": 0, "base_delay_seconds": 0.05, "jitter": False},
            "sheets": [sheet],
            **fields,
        }


@pytest.fixture
def fakes(home: Path, tmp_path: Path) -> Fakes:
    return Fakes(home, tmp_path)


def frozen(now: datetime) -> Callable[[], datetime]:
    return lambda: now


async def sheet_waiting(conductor: Conductor, job_id: str) -> None:
    async def waiting() -> bool:
        sheet = (await conductor.get_job(job_id)).sheets[0]
        return sheet.status is SheetStatus.WAITING

    await wait_until(waiting)


@dataclass(frozen=True)
class Wording:
    """One reported wording, as the CLI prints it, and the wait it must give."""

    id: str
    base: str
    attempt: dict[str, Any]
    now: datetime
    zone: tzinfo
    until: datetime


def claude_says(text: str, *, extra: list[str] | None = None) -> dict[str, Any]:
    return {"stdout": claude_run(text, extra=extra), "exit": 1}


def codex_says(text: str) -> dict[str, Any]:
    return {"stdout": codex_failure(text), "exit": 1}


@asynccontextmanager
async def mcp_client(conductor: Conductor) -> AsyncIterator[Client]:
    server = PodiumServer(conductor)
    async with server.running(), Client(server.mcp) as client:
        yield client


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def refused(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    return "\n".join(b.text for b in result.content if isinstance(b, TextContent))


async def history_of(client: Client, job_id: str) -> list[dict[str, Any]]:
    result = await client.read_resource(f"podium://jobs/{job_id}/history")
    text = getattr(result.contents[0], "text", None)
    assert isinstance(text, str)
    entries: list[dict[str, Any]] = json.loads(text)["entries"]
    return entries


T = datetime(2030, 3, 12, 10, 30, tzinfo=UTC)  # a Tuesday, after US DST began, before EU's
IN_2H = int((T + timedelta(hours=2)).timestamp())

SUCCESS = {
    "claude-code": {"stdout": [claude_init(), claude_result("7")]},
    "codex-cli": {"stdout": codex_success("7")},
    "gemini-cli": {"stdout": [gemini_failure("x", "y")[0],
                              jl(type="message", role="assistant", content="7", delta=True),
                              jl(type="result", status="success", stats={})]},
}  # fmt: skip

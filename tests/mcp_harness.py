"""The MCP test harness: a real in-memory MCP client over a conductor, in both protocol eras
(`auto`: 2026-07-28 with `subscriptions/listen`; `legacy`: a real 2025-11-25 handshake with
`resources/subscribe`), the field names SPEC §7 makes public, and the calls the tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import CallToolResult, ResourceUpdatedNotification, TextContent

from podium.core.conductor import Conductor
from podium.server.app import PodiumServer

TOOLS = {
    "submit_job",
    "validate_spec",
    "list_jobs",
    "status",
    "pause",
    "resume",
    "cancel",
    "clear",
    "clear_rate_limits",
    "snapshots",
    "logs",
    "diagnose",
    "estimate",
    "show_job",
    "show_jobs",
    "approve",
    "run_job",
}
READ_ONLY = {
    "status", "list_jobs", "logs", "snapshots", "validate_spec", "diagnose", "estimate",
    "show_job", "show_jobs",
}  # fmt: skip
DESTRUCTIVE = {"cancel", "clear"}
MUST_BE_IDEMPOTENT = {"pause", "resume", "cancel", "approve"} | READ_ONLY

SUMMARY_FIELDS = {
    "job_id",
    "name",
    "status",
    "total_sheets",
    "completed_sheets",
    "failed_sheets",
    "submitted_at",
    "started_at",
    "completed_at",
    "pause_reason",
    "error",
    "labels",
}
DETAIL_FIELDS = SUMMARY_FIELDS | {"workspace", "priority", "sheets_total_matching", "sheets"}
SHEET_FIELDS = {
    "sheet_num",
    "name",
    "status",
    "attempts",
    "depends_on",
    "instrument",
    "started_at",
    "completed_at",
    "duration_seconds",
    "last_error",
    "error_category",
    "waiting_reason",
    "waiting_until",
    "output_tail",
    "log_uri",
}
CONDUCTOR_FIELDS = {
    "version",
    "pid",
    "uptime_seconds",
    "home",
    "jobs_by_status",
    "running_sheets",
    "pressure_level",
    "memory_mb",
    "rate_limits",
    "ready",
    "instruments",
    "instrument_errors",
}
SNAPSHOT_FIELDS = {"snapshot_id", "job_id", "created_at", "path", "files", "size_bytes"}
LOG_FIELDS = {"text", "sheet_num", "attempt", "truncated", "next_offset"}
HISTORY_FIELDS = {
    "sheet_num",
    "attempt",
    "started_at",
    "ended_at",
    "exit_code",
    "duration_seconds",
    "outcome",
    "error_category",
    "validations",
    "log_path",
    "log_truncated",
}
TEMPLATES = {
    "podium://jobs/{job_id}/checkpoint",
    "podium://jobs/{job_id}/history",
    "podium://jobs/{job_id}/logs",
    "podium://jobs/{job_id}/sheets/{sheet_num}/log",
    "podium://snapshots/{job_id}/{snapshot_id}",
}
TERMINAL = {"completed", "failed", "cancelled"}
SDK_PREFIX = "Error executing tool"
TIME_FIELDS = ("submitted_at", "started_at", "completed_at")

TWO_SHEETS: dict[str, Any] = {
    "name": "two",
    "labels": ["mcp-test"],
    "instrument_config": {"env": {"SECRET": "hunter2"}},
    "sheets": [
        {"name": "first", "prompt": "echo alpha"},
        {"name": "second", "depends_on": ["first"], "prompt": "echo beta"},
    ],
}
QUICK: dict[str, Any] = {"name": "quick", "sheets": [{"prompt": "echo quick"}]}
SLEEPY: dict[str, Any] = {"name": "sleepy", "sheets": [{"prompt": "sleep 30"}]}
FAILING: dict[str, Any] = {
    "name": "failing",
    "retry": {"max_retries": 0},
    "sheets": [{"prompt": "echo doomed; exit 3"}],
}


@dataclass
class Harness:
    client: Client
    conductor: Conductor
    home: Path
    mode: str
    updates: list[str] = field(default_factory=list)  # legacy resource-updated URIs


@pytest.fixture(params=["auto", "legacy"])
async def mcp(request: pytest.FixtureRequest, conductor: Conductor) -> AsyncIterator[Harness]:
    mode: str = request.param
    updates: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updates.append(str(message.params.uri))

    server = PodiumServer(conductor)
    async with (
        server.running(),
        Client(server.mcp, mode=mode, message_handler=on_message) as client,
    ):
        if mode == "legacy":
            assert client.protocol_version == "2025-11-25"
        yield Harness(client, conductor, conductor.config.home, mode, updates)


# ----- helpers --------------------------------------------------------------------------------


def text_of(result: CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, TextContent))


async def ok(h: Harness, tool: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    result = await h.client.call_tool(tool, args or {})
    assert not result.is_error, text_of(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None, f"{tool} gave no structured output"
    return content


async def fails(h: Harness, tool: str, args: dict[str, Any]) -> str:
    """The call is a tool error with a readable message; returns the message."""
    result = await h.client.call_tool(tool, args)
    message = text_of(result)
    assert result.is_error, f"{tool}({args}) succeeded: {result.structured_content}"
    assert message.strip(), f"{tool}({args}) failed with an empty message"
    assert "Traceback" not in message and 'File "' not in message, message
    assert SDK_PREFIX not in message, message
    return message


async def wait_status(
    h: Harness, job_id: str, wanted: set[str] = TERMINAL, timeout: float = 20
) -> dict[str, Any]:
    """Follow a job with the long-poll (the way an agent should) until it reaches `wanted`
    or ends."""
    with anyio.fail_after(timeout):
        while True:
            detail = await ok(h, "status", {"job_id": job_id, "sheet_limit": 1000})
            if detail["status"] in wanted | TERMINAL:
                return detail
            # A long-poll wakes on a change after it began; a change that landed between the
            # read above and the poll is seen by the next read, so waits for a status that
            # does not last (e.g. `running`) poll often.
            wait = 2.0 if wanted <= TERMINAL else 0.1
            await ok(h, "status", {"job_id": job_id, "wait_seconds": wait})


async def wait_sheet_running(h: Harness, job_id: str) -> None:
    with anyio.fail_after(10):
        while (await ok(h, "status", {"job_id": job_id}))["sheets"][0]["status"] != "running":
            await anyio.sleep(0.05)


async def finished_job(h: Harness, spec: dict[str, Any] = TWO_SHEETS) -> dict[str, Any]:
    job = await ok(h, "submit_job", {"spec": spec})
    return await wait_status(h, job["job_id"])


def assert_times(record: dict[str, Any], *names: str) -> None:
    for name in names:
        value = record[name]
        if value is not None:
            assert isinstance(value, str) and value.endswith("Z"), f"{name}={value!r}"


def assert_summary(summary: dict[str, Any]) -> None:
    missing = SUMMARY_FIELDS - summary.keys()
    assert not missing, f"job summary lacks {sorted(missing)}"
    assert_times(summary, *TIME_FIELDS)
    assert summary["submitted_at"] is not None


def sheet_spec(prompts: list[str], name: str = "many", **extra: Any) -> dict[str, Any]:
    return {"name": name, "sheets": [{"prompt": p} for p in prompts], **extra}


async def read_text(h: Harness, uri: str, mime: str = "application/json") -> str:
    result = await h.client.read_resource(uri)
    (content,) = result.contents
    assert content.mime_type == mime, f"{uri}: {content.mime_type}"
    text = getattr(content, "text", None)
    assert isinstance(text, str), uri
    return text

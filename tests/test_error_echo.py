"""Errors echo at most the first 80 characters of a user's value, saying how long it was:
a 100 KB job_id, taskId, URI or tool name never comes back whole (one helper,
`core.errors.quoted`, used by every such message)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import TextContent
from task_client import TasksClient, request

from podium.core.conductor import Conductor
from podium.core.errors import quoted
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio

HUGE = "j" * 100_000
SHOWN = f"'{'j' * 80}'… (100000 characters)"
# The message around the value stays; only the value is cut.
MAX_MESSAGE = 400


@pytest.fixture
async def client(conductor: Conductor) -> AsyncIterator[Client]:
    server = PodiumServer(conductor)
    async with server.running(), Client(server.mcp, extensions=[TasksClient()]) as c:
        yield c


def test_quoted_cuts_long_values_only() -> None:
    assert quoted("job-1") == "'job-1'"
    assert quoted("x" * 80) == repr("x" * 80)
    assert quoted("é" * 81) == f"'{'é' * 80}'… (81 characters)"
    assert quoted(HUGE) == SHOWN
    assert quoted(7) == "7"


@pytest.mark.parametrize(
    ("tool", "arguments", "starts"),
    [
        ("status", {"job_id": HUGE}, "job_id: job "),
        ("pause", {"job_id": HUGE}, "job_id: job "),
        ("cancel", {"job_id": HUGE}, "job_id: job "),
        ("logs", {"job_id": HUGE}, "job_id: job "),
        ("approve", {"job_id": HUGE, "sheet": 1, "decision": "approve"}, "job_id: job "),
        (
            "submit_job",
            {"spec": {"name": "n", "sheets": [{"prompt": "x"}]}, "job_id": HUGE},
            "job_id: ",
        ),
        ("clear_rate_limits", {"instrument": HUGE}, "instrument: unknown instrument "),
    ],
)
async def test_a_huge_value_is_cut_in_tool_errors(
    client: Client, tool: str, arguments: dict[str, object], starts: str
) -> None:
    result = await client.call_tool(tool, arguments)
    assert result.is_error
    text = "".join(b.text for b in result.content if isinstance(b, TextContent))
    assert text.startswith(starts + SHOWN), text[:300]
    assert len(text) < MAX_MESSAGE, text[:300]


async def test_a_huge_task_id_is_cut_in_the_invalid_params_error(client: Client) -> None:
    for method in ("tasks/get", "tasks/cancel"):
        with pytest.raises(MCPError) as caught:
            await request(client, method, {"taskId": HUGE})
        assert caught.value.error.code == -32602
        message = caught.value.error.message
        assert f"taskId: task {SHOWN} not found" in message, message[:300]
        assert len(message) < MAX_MESSAGE


async def test_huge_uris_and_names_are_cut(client: Client) -> None:
    # Under the SDK's URI limit the job is looked up (and not found); over it, refused.
    for job_id, shown in (("k" * 60_000, f"'{'k' * 80}'… (60000 characters)"), (HUGE, None)):
        with pytest.raises(MCPError) as caught:
            await client.read_resource(f"podium://jobs/{job_id}/checkpoint")
        message = caught.value.error.message
        assert len(message) < MAX_MESSAGE, message[:300]
        if shown is not None:
            assert f"job {shown} not found" in message, message[:300]
        else:
            assert message.startswith("uri: 'podium://jobs/jjj") and "is too long" in message
    with pytest.raises(MCPError) as caught:
        await client.call_tool("t" * 100_000, {})
    message = caught.value.error.message
    assert message.startswith(f"tool '{'t' * 80}'… (100000 characters) not found")
    assert len(message) < 2000  # it lists the tools there are

"""The private SDK access of `server/sdk_seams.py` against the installed SDK: these fail
loudly, naming what changed, on an SDK upgrade that moves what Podium reaches into."""

from __future__ import annotations

import warnings

import pytest
from mcp import Client
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import EmptyResult, SubscribeRequestParams

from podium.core.conductor import Conductor
from podium.server import sdk_seams
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio


def test_the_low_level_server_is_where_the_seam_expects_it() -> None:
    mcp: MCPServer[None] = MCPServer("seam-check")
    server = sdk_seams.lowlevel_server(mcp)
    assert isinstance(server, Server)
    assert server.get_request_handler("resources/subscribe") is None  # the SDK does not serve it


def test_a_changed_sdk_fails_loudly() -> None:
    mcp: MCPServer[None] = MCPServer("seam-check")
    delattr(mcp, sdk_seams.LOWLEVEL_ATTRIBUTE)
    with pytest.raises(sdk_seams.SdkSeamError, match=r"sdk_seams\.py needs updating"):
        sdk_seams.lowlevel_server(mcp)


async def test_a_registered_handler_is_served_and_advertised() -> None:
    mcp: MCPServer[None] = MCPServer("seam-check")
    seen: list[str] = []

    async def subscribe(ctx: object, params: SubscribeRequestParams) -> EmptyResult:
        seen.append(str(params.uri))
        return EmptyResult()

    sdk_seams.add_request_handler(mcp, "resources/subscribe", SubscribeRequestParams, subscribe)

    @mcp.resource("seam://thing")
    def thing() -> str:
        return "x"

    async with Client(mcp, mode="legacy") as client:
        caps = client.server_capabilities
        assert caps is not None and caps.resources is not None
        assert caps.resources.subscribe is True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.subscribe_resource("seam://thing")
    assert seen == ["seam://thing"]


async def test_podium_advertises_legacy_subscriptions(conductor: Conductor) -> None:
    server = PodiumServer(conductor)
    async with server.running(), Client(server.mcp, mode="legacy") as client:
        caps = client.server_capabilities
        assert caps is not None and caps.resources is not None and caps.resources.subscribe
        assert caps.prompts is not None  # the spec_from_task prompt


def test_a_server_session_can_send_an_extension_notification() -> None:
    """`notifications/tasks` goes out through `ServerSession.send_notification`, which dumps
    whatever model it is given (server/sdk_seams.py: send_extension_notification)."""
    import inspect

    from mcp.server.session import ServerSession

    source = inspect.getsource(ServerSession._notify)
    assert "model_dump" in source and 'notify(data["method"]' in source


def test_the_sdk_still_parses_text_arguments_and_the_seam_keeps_them() -> None:
    """When the SDK stops turning `"null"` for a `str | None` parameter into None, the
    override in sdk_seams.keep_text_arguments is no longer needed."""
    from mcp.server.mcpserver.tools import Tool

    async def tool(job_id: str | None = None, ids: list[int] | None = None) -> str:
        return ""

    plain = Tool.from_function(tool)
    assert plain.fn_metadata.validate_arguments({"job_id": "null"})["job_id"] is None
    kept = Tool.from_function(tool)
    sdk_seams.keep_text_arguments(kept)
    assert kept.fn_metadata.validate_arguments({"job_id": "null", "ids": "[1]"}) == {
        "job_id": "null",
        "ids": [1],  # not text: the SDK's pre-parse still applies
    }

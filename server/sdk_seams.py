"""The one place Podium reaches past the MCP SDK's public API.

`MCPServer` has no public way to register a request handler for a method it does not serve
itself, and a session is typed to send only core notifications (the tasks extension's
`notifications/tasks` is not one). Podium needs `resources/subscribe` and
`resources/unsubscribe` for 2025-11-25 clients (2026-07-28 clients use `subscriptions/listen`,
which the SDK serves). The low-level `Server`
it wraps has a public `add_request_handler`, but the wrapper keeps it in a private attribute.
Everything private is read here, checked, and fails loudly naming the SDK version when the
SDK changes; `tests/test_sdk_seams.py` holds these checks to the installed SDK.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel

LOWLEVEL_ATTRIBUTE = "_lowlevel_server"


class SdkSeamError(RuntimeError):
    """The installed MCP SDK no longer has what this module relies on."""


def lowlevel_server(mcp: MCPServer[Any]) -> Server[Any]:
    server = getattr(mcp, LOWLEVEL_ATTRIBUTE, None)
    if not isinstance(server, Server):
        raise SdkSeamError(
            f"mcp {version('mcp')}: MCPServer.{LOWLEVEL_ATTRIBUTE} is "
            f"{type(server).__name__}, not the low-level Server; server/sdk_seams.py needs "
            "updating for this SDK"
        )
    return server


def add_request_handler(
    mcp: MCPServer[Any], method: str, params_type: type[BaseModel], handler: Any
) -> None:
    """Serve `method` with `handler(ctx, params)`; the SDK derives capabilities (e.g.
    `resources.subscribe`) from the methods registered."""
    server = lowlevel_server(mcp)
    server.add_request_handler(method, params_type, handler)
    if server.get_request_handler(method) is None:
        raise SdkSeamError(f"mcp {version('mcp')}: registering {method} had no effect")


class _ExtensionNotification(BaseModel):
    """Shaped like the SDK's typed notifications (`method`, `params`): the session sends
    whatever it dumps."""

    method: str
    params: dict[str, Any] | None = None


async def send_extension_notification(
    session: Any, method: str, params: dict[str, Any], *, related_request_id: Any
) -> None:
    """Send a notification of an extension's own method (e.g. `notifications/tasks`) on the
    stream of request `related_request_id`. `ServerSession.send_notification` is typed for
    core notifications only but sends any model with `method` and `params`."""
    send = getattr(session, "send_notification", None)
    if send is None:
        raise SdkSeamError(
            f"mcp {version('mcp')}: the server session has no send_notification; "
            "server/sdk_seams.py needs updating for this SDK"
        )
    note = _ExtensionNotification(method=method, params=params)
    await send(note, related_request_id=related_request_id)

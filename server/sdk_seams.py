"""The one place Podium reaches past the MCP SDK's public API.

`MCPServer` has no public way to register a request handler for a method it does not serve
itself, and a session is typed to send only core notifications (the tasks extension's
`notifications/tasks` is not one). Podium needs `resources/subscribe` and
`resources/unsubscribe` for 2025-11-25 clients (2026-07-28 clients use `subscriptions/listen`,
which the SDK serves). The low-level `Server`
it wraps has a public `add_request_handler`, but the wrapper keeps it in a private attribute.
And the SDK parses a tool's string argument as JSON before validating it whenever the
parameter is not exactly `str` (`str | None` included), so a spec given as JSON text reached
`spec_yaml` as a dict and `job_id="null"` became "no job id"; `keep_text_arguments` overrides
the public `FuncMetadata.pre_parse_json`, relying on `validate_arguments` calling it.
Everything private is read here, checked, and fails loudly naming the SDK version when the
SDK changes; `tests/test_sdk_seams.py` holds these checks to the installed SDK.
"""

from __future__ import annotations

from importlib.metadata import version
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata
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


def connection_of(session: Any) -> object:
    """The client connection a request's session speaks on. The SDK builds a new
    `ServerSession` for every request, so a session does not name its client twice: a
    legacy unsubscribe matched no subscription, and each subscribe added another."""
    connection = getattr(session, "_connection", None)
    if connection is None:
        raise SdkSeamError(
            f"mcp {version('mcp')}: ServerSession has no _connection; "
            "server/sdk_seams.py needs updating for this SDK"
        )
    return connection


def _admits_text(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _admits_text(get_args(annotation)[0])
    if origin is Union or origin is UnionType:
        return any(_admits_text(arg) for arg in get_args(annotation))
    return annotation is str


class _TextKeepingMetadata(FuncMetadata):
    """The SDK's argument handling, except that a string given for a parameter that takes
    text stays that text (the SDK's JSON pre-parse still applies to the others: a list or
    mapping sent as JSON text)."""

    def pre_parse_json(self, data: dict[str, Any]) -> dict[str, Any]:
        parsed = super().pre_parse_json(data)
        for name, field in self.arg_model.model_fields.items():
            if not _admits_text(field.annotation):
                continue
            for key in {name, field.alias or name}:
                if isinstance(data.get(key), str):
                    parsed[key] = data[key]
        return parsed


def keep_text_arguments(tool: Tool) -> None:
    """Make `tool` pass every text parameter exactly the string the client sent."""
    current = tool.fn_metadata
    if not callable(getattr(FuncMetadata, "pre_parse_json", None)) or not callable(
        getattr(FuncMetadata, "validate_arguments", None)
    ):
        raise SdkSeamError(
            f"mcp {version('mcp')}: FuncMetadata has no pre_parse_json/validate_arguments; "
            "server/sdk_seams.py needs updating for this SDK"
        )
    # Every field as it is, so what the caller set (output schema, model) is kept.
    fields = {name: getattr(current, name) for name in type(current).model_fields}
    tool.fn_metadata = _TextKeepingMetadata(**fields)

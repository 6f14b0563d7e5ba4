"""A request that comes before any session over stdio is answered at the transport, the same
way by both stdio servers (the bridge and `--embedded`).

Left to them, the two disagreed and neither said what to do: the embedded SDK server answers
"Invalid request parameters" (-32602), the bridge passes the request to the conductor, whose
HTTP transport answers "Bad Request: Missing session ID". A session exists once the client
has sent `initialize` (2025-11-25) or a request carrying the 2026-07-28 per-request envelope;
until then a request gets -32600 saying so, and a `ping` (the one request MCP allows before
the handshake) is answered here, since there is no session yet to send it through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcp_types import (
    INVALID_REQUEST,
    PROTOCOL_VERSION_META_KEY,
    ErrorData,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCRequest,
    JSONRPCResponse,
)

NO_SESSION = (
    "Invalid request: no session yet: send initialize first, then this request (a "
    "2026-07-28 client instead puts its protocol version and capabilities in each "
    "request's params._meta)"
)


def has_envelope(params: dict[str, Any] | None) -> bool:
    """Whether a request carries the 2026-07-28 per-request protocol version (the key is
    reserved to that envelope: handshake-era traffic never sends it)."""
    meta = (params or {}).get("_meta")
    return isinstance(meta, dict) and PROTOCOL_VERSION_META_KEY in meta


@dataclass
class SessionGate:
    """Watches what the client sends and answers what it sent before any session."""

    opened: bool = False

    def answer(self, message: JSONRPCMessage) -> JSONRPCResponse | JSONRPCError | None:
        """The reply to give in the server's place, or None to pass `message` on."""
        if self.opened or not isinstance(message, JSONRPCRequest):
            return None
        if message.method == "initialize" or has_envelope(message.params):
            self.opened = True
            return None
        if message.method == "ping":
            return JSONRPCResponse(jsonrpc="2.0", id=message.id, result={})
        error = ErrorData(code=INVALID_REQUEST, message=NO_SESSION)
        return JSONRPCError(jsonrpc="2.0", id=message.id, error=error)

"""What a stdio client may send when, decided in one place for both stdio servers (the bridge
and `--embedded`), at the transport, before either sees the message.

Left to them, the two disagreed wherever the session itself was in question, because they
are two different servers behind the same stdin: the embedded SDK server keeps one
connection, in one protocol era, while the bridge sends each message to the conductor's
HTTP endpoint, where every POST may start afresh. So a request before any session got
"Invalid request parameters" from one and "Missing session ID" from the other; an
`initialize` after a 2026-07-28 request was refused by one and served by the other; what
followed a failed `initialize` was served by one (the SDK accepts requests once
`notifications/initialized` came, session or not) and refused by the other.

A connection is in one era, decided by the first request that opens a session:
- `initialize` (the 2025-11-25 handshake) opens a handshake session, if its params are
  valid: one that is not is answered here (-32602, naming the fields), and leaves things as
  they were: no session (what follows is refused, naming that `initialize`, until one
  succeeds), or the session there was (a client may initialize again; the SDK keeps the
  session when that fails). On a handshake session, a request carrying the 2026-07-28
  envelope is refused (-32600).
- a request carrying the 2026-07-28 per-request envelope opens a 2026-07-28 session, on
  which `initialize` is refused (-32022). Whether a request's envelope is complete is for
  the server to say (the SDK, the same in both).
Before a session, a `ping` (the one request MCP allows before the handshake) is answered
here, and notifications are dropped: there is nothing yet to deliver them to.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from mcp_types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PROTOCOL_VERSION_META_KEY,
    UNSUPPORTED_PROTOCOL_VERSION,
    ErrorData,
    InitializeRequestParams,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
    UnsupportedProtocolVersionErrorData,
)
from mcp_types import methods as sdk_methods
from mcp_types.version import LATEST_HANDSHAKE_VERSION, MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

NO_SESSION = (
    "Invalid request: no session yet: send initialize first, then this request (a "
    "2026-07-28 client instead puts its protocol version and capabilities in each "
    "request's params._meta)"
)
INITIALIZE_TAKES = (
    "initialize takes params.protocolVersion (a version string such as "
    f'"{LATEST_HANDSHAKE_VERSION}"), params.capabilities (an object) and params.clientInfo '
    '(an object with "name" and "version")'
)
ENVELOPE_ON_HANDSHAKE = (
    "Invalid request: this connection began with initialize (the 2025-11-25 handshake), so "
    'its requests carry no 2026-07-28 envelope (params._meta["'
    f'{PROTOCOL_VERSION_META_KEY}"]); send the request without it, or use a new connection '
    "for 2026-07-28"
)
INITIALIZE_ON_MODERN = (
    "Unsupported protocol version: this connection began with a 2026-07-28 request (its "
    "params._meta carried the envelope), and 2026-07-28 has no initialize handshake; go on "
    "putting the envelope in each request, or use a new connection for the handshake"
)


def refused_after(initialize: RequestId, failure: ErrorData) -> str:
    """Why a request that came after a failed `initialize` (and before another) is not
    served: there is no session for it."""
    return (
        f"Invalid request: no session: this request came after initialize (id "
        f"{_shown(initialize)}), which failed ({failure.code}: {failure.message}); send "
        "initialize again, then this request"
    )


def _shown(request_id: RequestId) -> str:
    return f'"{request_id}"' if isinstance(request_id, str) else str(request_id)


def has_envelope(params: dict[str, Any] | None) -> bool:
    """Whether a request carries the 2026-07-28 per-request protocol version (the key is
    reserved to that envelope: handshake-era traffic never sends it)."""
    meta = (params or {}).get("_meta")
    return isinstance(meta, dict) and PROTOCOL_VERSION_META_KEY in meta


def initialize_problem(params: dict[str, Any] | None) -> str | None:
    """Why the SDK would refuse these `initialize` params, or None. The same two checks the
    SDK makes (its surface model, then `InitializeRequestParams`), the same for every
    handshake version; a protocol version it does not know is no failure (the server
    answers with the one it speaks)."""
    try:
        sdk_methods.validate_client_request("initialize", LATEST_HANDSHAKE_VERSION, params)
        InitializeRequestParams.model_validate(params or {}, by_name=False)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            path = ".".join(loc if loc[:1] == ["params"] else ["params", *loc])
            problems.append(f"{path}: {error['msg']}")
        return f"Invalid params: {'; '.join(problems)} ({INITIALIZE_TAKES})"
    return None


class Era(enum.Enum):
    HANDSHAKE = "2025-11-25"
    MODERN = "2026-07-28"


@dataclass(frozen=True)
class Drop:
    """A message nothing can take yet: dropped (logged), never answered."""

    why: str


Verdict = JSONRPCResponse | JSONRPCError | Drop | None


@dataclass
class SessionGate:
    """Watches what the client sends; answers, or drops, what no session can take."""

    era: Era | None = None
    # The last initialize refused while there was no session (named in refusals).
    failed: tuple[RequestId, ErrorData] | None = None

    @property
    def opened(self) -> bool:
        return self.era is not None

    def answer(self, message: JSONRPCMessage) -> Verdict:
        """The reply to give in the server's place, a `Drop`, or None to pass `message` on."""
        if isinstance(message, JSONRPCNotification):
            return None if self.opened else Drop("a notification before any session")
        if not isinstance(message, JSONRPCRequest):
            return None  # a response to a server request: there is a session
        if message.method == "initialize":
            return self._initialize(message)
        if self.era is None:
            if has_envelope(message.params):
                self.era, self.failed = Era.MODERN, None
                return None
            if message.method == "ping":
                return JSONRPCResponse(jsonrpc="2.0", id=message.id, result={})
            why = NO_SESSION if self.failed is None else refused_after(*self.failed)
            return _error(message.id, INVALID_REQUEST, why)
        if self.era is Era.HANDSHAKE and has_envelope(message.params):
            return _error(message.id, INVALID_REQUEST, ENVELOPE_ON_HANDSHAKE)
        return None

    def _initialize(self, message: JSONRPCRequest) -> Verdict:
        if self.era is Era.MODERN:
            requested = (message.params or {}).get("protocolVersion")
            data: dict[str, Any] = {"supported": list(MODERN_PROTOCOL_VERSIONS)}
            if isinstance(requested, str):
                data = UnsupportedProtocolVersionErrorData(
                    supported=list(MODERN_PROTOCOL_VERSIONS), requested=requested
                ).model_dump(mode="json")
            return _error(message.id, UNSUPPORTED_PROTOCOL_VERSION, INITIALIZE_ON_MODERN, data)
        problem = initialize_problem(message.params)
        if problem is None:
            self.era, self.failed = Era.HANDSHAKE, None
            return None
        reply = _error(message.id, INVALID_PARAMS, problem)
        if self.era is None:
            self.failed = (message.id, reply.error)
        return reply


def _error(
    request_id: RequestId, code: int, message: str, data: dict[str, Any] | None = None
) -> JSONRPCError:
    # `data` only when there is some: a field left unset is not written (no `"data": null`).
    if data is None:
        error = ErrorData(code=code, message=message)
    else:
        error = ErrorData(code=code, message=message, data=data)
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=error)

"""`podium serve` over stdio: a bridge to the home's conductor (streamable HTTP on loopback).

It forwards JSON-RPC messages both ways at the transport level, so every method, notification
and subscription passes without per-tool code. What it adds to a plain copy:
- per-message HTTP headers for 2026-07-28 clients, derived from each message body
  (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`, `Mcp-Param-*` learned from tools/list);
  the negotiated version header for 2025-11-25 clients;
- a table of the client's requests in flight: when the conductor is lost, each one gets a
  JSON-RPC error instead of silence;
- the hold behind `initialize`: a 2025-11-25 session exists once the conductor has answered
  `initialize` (its `Mcp-Session-Id` comes back on that answer and the HTTP transport stamps
  every later POST with it), and hosts pipeline: they write `initialize`,
  `notifications/initialized` and their first requests without waiting. Sent at once, those
  would go out without a session id ("Missing session ID"). So what the client sends after an
  `initialize` waits, in order, until that initialize is answered. If the conductor failed
  it (one whose params are invalid never gets here: the stdio transport answers it, for
  `--embedded` too, `stdio_session.SessionGate`) there is no session for what followed it:
  each request held behind it gets an error that says so, its notifications are dropped,
  and the next `initialize` (the client trying again) goes out;
- reconnection: the client's next message starts the conductor again (recovery reconciles
  what the dead one left) and reattaches; a 2025-11-25 session is re-established by
  replaying the client's `initialize` and its resource subscriptions, so the host never
  notices beyond the failed requests.
The bridge never runs an engine and never opens the database.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import structlog
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT, MCP_DEFAULT_TIMEOUT
from mcp.shared._stream_protocols import WriteStream
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
    find_invalid_x_mcp_header,
    mcp_param_headers,
    x_mcp_header_map,
)
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import (
    CONNECTION_CLOSED,
    INVALID_REQUEST,
    PROTOCOL_VERSION_META_KEY,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from podium.core.config import PodiumConfig
from podium.core.errors import PodiumError
from podium.core.home import ConductorInfo
from podium.server.daemon import TokenRefusedError, alive, ensure_conductor, reap
from podium.server.stdio_guard import guarded_stdio_server
from podium.server.stdio_session import refused_after

log = structlog.get_logger("podium.bridge")

ClientRead = ObjectReceiveStream[SessionMessage | Exception]
ClientWrite = ObjectSendStream[SessionMessage]
WATCH_SECONDS = 0.25
# How long a lost conductor may take to go before the bridge looks for a conductor again.
LOST_GRACE_SECONDS = 3.0
REPLAY_TIMEOUT_SECONDS = 30.0
# After stdin closes, how long answers to requests already sent may take to arrive (a
# script that pipes its requests in closes stdin at once and still reads the answers);
# below the ~2-4 s after which SDK clients kill a server that has not exited.
EOF_DRAIN_SECONDS = 2.0
# The tasks extension routes its requests by task id (`Mcp-Name`), which the SDK's header
# table does not list.
TASK_NAME_KEYS = {"tasks/get": "taskId", "tasks/update": "taskId", "tasks/cancel": "taskId"}
# Client messages read but not yet sent (held behind an unanswered `initialize`, or waiting on
# the HTTP transport); past this the bridge stops reading stdin until there is room.
OUTBOX_SIZE = 1024
# Client requests read and not yet answered; past this the bridge stops reading stdin until
# an answer goes back. Each request sent holds an HTTP connection to the conductor until it
# is answered, and the connection pool has room for every one of them: a request that
# waited on a full pool (httpx's default holds 100) failed after 30 s with a PoolTimeout,
# which took the whole connection down as if the conductor had died, failing every request
# in flight. Every request ends (the longest, `status`/`run_job` waits, within 50 s) and the
# bridge never waits on the client to answer one, so this cannot wedge.
MAX_IN_FLIGHT = 128
# The event stream (GET) and the requests of a session replay, beside the client's.
POOL_SIZE = MAX_IN_FLIGHT + 8
LOST_MESSAGE = (
    "the Podium conductor stopped while this request was in flight; send it again "
    "(the next request starts the conductor again)"
)
UNANSWERED_MESSAGE = (
    "stdin closed before the conductor answered this request (the bridge waits "
    f"{EOF_DRAIN_SECONDS:.0f} s for answers after stdin closes)"
)


class UpstreamLost(Exception):
    """The conductor went away (its process ended or its HTTP endpoint failed)."""


@dataclass
class Pending:
    method: str
    params: dict[str, Any] | None


@dataclass
class SessionState:
    """What the bridge remembers about the client's session, to stamp headers and to
    re-establish a handshake-era session on a new conductor."""

    pending: dict[RequestId, Pending] = field(default_factory=dict)
    initialize: JSONRPCRequest | None = None
    initialized: bool = False
    legacy_version: str | None = None
    subscriptions: set[str] = field(default_factory=set)
    param_maps: dict[str, dict[tuple[str, ...], str]] = field(default_factory=dict)
    # Set once no request is in flight (the drain after stdin closes waits on it).
    answered: anyio.Event | None = None
    # Set when a request stops being in flight (a reader that found no room waits on it).
    freed: anyio.Event | None = None

    async def room(self) -> None:
        """Wait until one more request may be read (`MAX_IN_FLIGHT`)."""
        while len(self.pending) >= MAX_IN_FLIGHT:
            self.freed = self.freed or anyio.Event()
            await self.freed.wait()

    def expect(self, message: SessionMessage) -> None:
        """A request read from the client is owed an answer from here on, sent or not yet."""
        m = message.message
        if isinstance(m, JSONRPCRequest):
            self.pending[m.id] = Pending(m.method, m.params)

    def settled(self) -> None:
        if self.freed is not None:
            self.freed.set()
            self.freed = None
        if not self.pending and self.answered is not None:
            self.answered.set()

    def outbound(self, message: SessionMessage) -> SessionMessage:
        """Record a client message and give it the HTTP headers its body implies."""
        m = message.message
        if isinstance(m, JSONRPCRequest):
            self.pending[m.id] = Pending(m.method, m.params)
            if m.method == "initialize":
                self.initialize, self.initialized, self.legacy_version = m, False, None
        elif isinstance(m, JSONRPCNotification):
            if m.method == "notifications/initialized":
                self.initialized = True
            elif m.method == "notifications/cancelled" and isinstance(m.params, dict):
                cancelled = m.params.get("requestId")
                if isinstance(cancelled, int | str):
                    self.pending.pop(cancelled, None)
                    self.settled()
        if not isinstance(m, JSONRPCRequest | JSONRPCNotification):
            return message  # a response to a server request: the transport's cached version
        headers = self.headers_for(m)
        return SessionMessage(m, ClientMessageMetadata(headers=headers)) if headers else message

    def headers_for(self, m: JSONRPCRequest | JSONRPCNotification) -> dict[str, str]:
        params: dict[str, Any] = m.params or {}
        meta = params.get("_meta")
        version = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
        headers: dict[str, str] = {}
        # The 2026-07-28 per-request envelope. Never on `initialize`, which that version does
        # not have: the handshake is the handshake even with an envelope stamped on it (the
        # SDK's stdio server serves it so; headers would make the conductor route it as a
        # 2026-07-28 request, which has no such method).
        if isinstance(version, str) and m.method != "initialize":
            headers[MCP_PROTOCOL_VERSION_HEADER] = version
            headers[MCP_METHOD_HEADER] = m.method
            key = NAME_BEARING_METHODS.get(m.method) or TASK_NAME_KEYS.get(m.method)
            if key is not None and isinstance(name := params.get(key), str):
                headers[MCP_NAME_HEADER] = encode_header_value(name)
            if m.method == "tools/call" and isinstance(tool := params.get("name"), str):
                arguments = params.get("arguments") or {}
                headers.update(mcp_param_headers(self.param_maps.get(tool, {}), arguments))
        elif m.method != "initialize" and self.legacy_version is not None:
            headers[MCP_PROTOCOL_VERSION_HEADER] = self.legacy_version
        return headers

    def delivered(self, m: JSONRPCResponse | JSONRPCError) -> None:
        """A response reached the client: its request is no longer in flight."""
        request = self.pending.pop(m.id, None) if m.id is not None else None
        self.settled()
        if request is None or not isinstance(m, JSONRPCResponse):
            return
        result = m.result
        if request.method == "initialize":
            version = result.get("protocolVersion")
            modern = version in MODERN_PROTOCOL_VERSIONS
            self.legacy_version = version if isinstance(version, str) and not modern else None
        elif request.method == "tools/list":
            for tool in result.get("tools", []):
                schema = tool.get("inputSchema")
                if isinstance(tool.get("name"), str) and find_invalid_x_mcp_header(schema) is None:
                    self.param_maps[tool["name"]] = x_mcp_header_map(schema)
        elif request.method in ("resources/subscribe", "resources/unsubscribe"):
            uri = (request.params or {}).get("uri")
            if isinstance(uri, str):
                if request.method == "resources/subscribe":
                    self.subscriptions.add(uri)
                else:
                    self.subscriptions.discard(uri)


@dataclass
class Opening:
    """The client's `initialize` on its way: what the client sends next waits for its answer."""

    request_id: RequestId
    answer: JSONRPCResponse | JSONRPCError | None = None
    answered: anyio.Event = field(default_factory=anyio.Event)

    def settle(self, m: JSONRPCResponse | JSONRPCError) -> None:
        if m.id == self.request_id:
            self.answer = m
            self.answered.set()

    async def failure(self) -> ErrorData | None:
        await self.answered.wait()
        return self.answer.error if isinstance(self.answer, JSONRPCError) else None


class Bridge:
    def __init__(self, config: PodiumConfig) -> None:
        self.config = config
        self.state = SessionState()
        self._ids = itertools.count(1)
        # Responses to requests the bridge itself sent (handshake replay): never forwarded.
        self._own: dict[RequestId, anyio.Event] = {}
        # A client message read but not sent because the conductor had just died.
        self._carry: SessionMessage | None = None

    async def run(self) -> int:
        info, started = await ensure_conductor(self.config)
        log.info("attached", pid=info.pid, url=info.url, started=started)
        async with (
            guarded_stdio_server() as (client_read, client_write),
            client_read,
            client_write,
        ):
            carry: SessionMessage | None = None
            reconnect = False
            while True:
                try:
                    await self._attach(info, client_read, client_write, carry, reconnect)
                    # The client closed stdin: what is still unanswered says so, not silence.
                    await self._fail_pending(client_write, UNANSWERED_MESSAGE)
                    return 0
                except UpstreamLost as exc:
                    log.warning("conductor lost", pid=info.pid, reason=str(exc))
                await self._fail_pending(client_write)
                carry, self._carry = self._carry, None
                if carry is None:
                    carry = await self._next_message(client_read)
                if carry is None:
                    return 0
                reconnect = True
                await _let_go(info.pid)
                while True:
                    try:
                        info, started = await ensure_conductor(self.config)
                        log.info("reattached", pid=info.pid, started=started)
                        break
                    except PodiumError as exc:
                        await self._refuse(client_write, carry, str(exc))
                        carry = await self._next_message(client_read)
                        if carry is None:
                            return 0

    async def _next_message(self, client_read: ClientRead) -> SessionMessage | None:
        async for item in client_read:
            if isinstance(item, SessionMessage):
                return item
            log.warning("unparseable line from the client", error=str(item))
        return None

    async def _refuse(self, client_write: ClientWrite, message: SessionMessage, why: str) -> None:
        m = message.message
        if isinstance(m, JSONRPCRequest):
            error = ErrorData(code=CONNECTION_CLOSED, message=why)
            await client_write.send(
                SessionMessage(JSONRPCError(jsonrpc="2.0", id=m.id, error=error))
            )

    async def _refuse_held(
        self,
        client_write: ClientWrite,
        request_id: RequestId,
        initialize: RequestId,
        failure: ErrorData,
    ) -> None:
        """Refuse a request held behind an `initialize` that failed."""
        error = ErrorData(code=INVALID_REQUEST, message=refused_after(initialize, failure))
        reply = JSONRPCError(jsonrpc="2.0", id=request_id, error=error)
        await client_write.send(SessionMessage(reply))
        self.state.delivered(reply)

    async def _fail_pending(self, client_write: ClientWrite, why: str = LOST_MESSAGE) -> None:
        for request_id in list(self.state.pending):
            self.state.pending.pop(request_id, None)
            error = ErrorData(code=CONNECTION_CLOSED, message=why)
            reply = JSONRPCError(jsonrpc="2.0", id=request_id, error=error)
            await client_write.send(SessionMessage(reply))
        self.state.settled()

    async def _attach(
        self,
        info: ConductorInfo,
        client_read: ClientRead,
        client_write: ClientWrite,
        carry: SessionMessage | None,
        reconnect: bool,
    ) -> None:
        """Pump until the client closes stdin (returns) or the conductor is lost (raises)."""
        assert info.url is not None
        headers = {"Authorization": f"Bearer {info.token}"} if info.token else None
        http = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(MCP_DEFAULT_TIMEOUT, read=MCP_DEFAULT_SSE_READ_TIMEOUT),
            limits=httpx2.Limits(max_connections=POOL_SIZE, max_keepalive_connections=32),
        )
        refused = False

        async def note_refusal(response: httpx2.Response) -> None:
            nonlocal refused
            refused = refused or response.status_code == 401

        # The SDK answers a request the conductor refused with 401 as "Server returned an
        # error response"; the client is told why instead.
        http.event_hooks["response"].append(note_refusal)
        lost: str | None = None
        outbox_in, outbox = anyio.create_memory_object_stream[SessionMessage](OUTBOX_SIZE)
        opening: Opening | None = None
        try:
            async with (
                outbox_in,
                outbox,
                http,
                streamable_http_client(info.url, http_client=http) as (up_read, up_write),
                anyio.create_task_group() as tg,
            ):

                async def downstream() -> None:
                    nonlocal lost
                    async for item in up_read:
                        if isinstance(item, Exception):
                            log.warning("conductor transport error", error=repr(item))
                            continue
                        m = item.message
                        if isinstance(m, JSONRPCResponse | JSONRPCError) and m.id in self._own:
                            self._own.pop(m.id).set()
                            continue
                        if isinstance(m, JSONRPCError) and refused:
                            why = ErrorData(code=m.error.code, message=str(TokenRefusedError(info)))
                            m = JSONRPCError(jsonrpc="2.0", id=m.id, error=why)
                        await client_write.send(SessionMessage(m))
                        if isinstance(m, JSONRPCResponse | JSONRPCError):
                            self.state.delivered(m)  # only once delivered
                            # After `delivered`: what was held goes out with the negotiated
                            # version's header.
                            if opening is not None:
                                opening.settle(m)
                    lost = lost or "the conductor's HTTP stream closed"
                    tg.cancel_scope.cancel()

                async def sender() -> None:
                    """The one writer to the conductor, in the order the client wrote."""
                    nonlocal opening
                    if reconnect:
                        await self._replay(up_write)
                    failed: tuple[RequestId, ErrorData] | None = None
                    async for item in outbox:
                        m = item.message
                        init = m if isinstance(m, JSONRPCRequest) else None
                        if init is not None and init.method != "initialize":
                            init = None
                        if failed is not None and init is None:
                            if isinstance(m, JSONRPCRequest):
                                await self._refuse_held(client_write, m.id, *failed)
                            else:
                                log.info("dropped after a failed initialize", message=repr(m))
                            continue
                        started = opening = Opening(init.id) if init is not None else None
                        await up_write.send(self.state.outbound(item))
                        if started is not None:
                            failure = await started.failure()
                            failed = None if failure is None else (started.request_id, failure)

                async def reader() -> None:
                    """Stdin into the outbox. Never waits on the conductor (only on a full
                    outbox), so stdin closing is seen even while it does not answer."""
                    nonlocal lost
                    if carry is not None:
                        self.state.expect(carry)
                        await outbox_in.send(carry)
                    async for item in client_read:
                        if isinstance(item, Exception):
                            log.warning("unparseable line from the client", error=str(item))
                            continue
                        if isinstance(item.message, JSONRPCRequest):
                            await self.state.room()
                            if not alive(info.pid):
                                # Sent to a dead conductor it would fail; the next one gets it.
                                self._carry = item
                                lost = f"conductor pid {info.pid} exited"
                                tg.cancel_scope.cancel()
                                return
                        self.state.expect(item)
                        await outbox_in.send(item)
                    # stdin EOF. Answers to what was read (sent or still held) get a moment
                    # to arrive; then cancel rather than close the write stream, which would
                    # make the transport close its read side while responses may still
                    # arrive.
                    if self.state.pending:
                        self.state.answered = anyio.Event()
                        with anyio.move_on_after(EOF_DRAIN_SECONDS):
                            await self.state.answered.wait()
                    tg.cancel_scope.cancel()

                async def watch() -> None:
                    nonlocal lost
                    while alive(info.pid):
                        reap(info.pid)
                        await anyio.sleep(WATCH_SECONDS)
                    reap(info.pid)
                    lost = f"conductor pid {info.pid} exited"
                    tg.cancel_scope.cancel()

                tg.start_soon(downstream)
                tg.start_soon(sender)
                tg.start_soon(reader)
                tg.start_soon(watch)
        except* (httpx2.HTTPError, OSError) as group:
            lost = lost or f"the conductor's HTTP endpoint failed: {group.exceptions[0]!r}"
        if lost is not None:
            raise UpstreamLost(lost)

    async def _replay(self, up_write: WriteStream[SessionMessage]) -> None:
        """Re-establish a handshake-era session on a new conductor: its initialize, the
        initialized notification, and the resource subscriptions it had."""
        state = self.state
        if state.initialize is None or state.legacy_version is None:
            return  # 2026-07-28 traffic carries everything in each request
        init = state.initialize
        done = anyio.Event()
        own_id = f"podium-bridge-{next(self._ids)}"
        self._own[own_id] = done
        request = JSONRPCRequest(jsonrpc="2.0", id=own_id, method=init.method, params=init.params)
        await up_write.send(SessionMessage(request))
        with anyio.fail_after(REPLAY_TIMEOUT_SECONDS):
            await done.wait()
        if state.initialized:
            note = JSONRPCNotification(jsonrpc="2.0", method="notifications/initialized")
            await up_write.send(self._stamped(note))
        for uri in sorted(state.subscriptions):
            sub_id = f"podium-bridge-{next(self._ids)}"
            self._own[sub_id] = anyio.Event()
            sub = JSONRPCRequest(
                jsonrpc="2.0", id=sub_id, method="resources/subscribe", params={"uri": uri}
            )
            await up_write.send(self._stamped(sub))
        log.info("session re-established", subscriptions=len(state.subscriptions))

    def _stamped(self, m: JSONRPCRequest | JSONRPCNotification) -> SessionMessage:
        headers = self.state.headers_for(m)
        return SessionMessage(m, ClientMessageMetadata(headers=headers or None))


async def run_bridge(config: PodiumConfig) -> int:
    return await Bridge(config).run()


async def _let_go(pid: int) -> None:
    """Wait (a while) for a lost conductor's process to be gone. A SIGKILLed process closes
    its sockets before its pid goes, and conductor.json and the lock file still name it: a
    bridge that looked at once would attach to the dying conductor again, and the request it
    carried would fail as if it had been in flight. A conductor still alive after the grace
    (only its connection broke) is attached to again."""
    with anyio.move_on_after(LOST_GRACE_SECONDS):
        while alive(pid):
            reap(pid)
            await anyio.sleep(0.02)
    reap(pid)

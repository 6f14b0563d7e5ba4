"""A request sent over stdio before any session (no `initialize` yet, no 2026-07-28 envelope)
gets the same answer from the bridge and from `--embedded`: a -32600 that says to send
`initialize` first. Before, the bridge passed on the conductor's "Bad Request: Missing
session ID" and the embedded server said "Invalid request parameters". Real `podium serve`
processes driven by raw lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_stdio_unreadable import INIT, raw_serve, status_call

from podium.server.stdio_session import NO_SESSION

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


def rpc(request_id: int | str, method: str, params: dict[str, Any] | None = None) -> str:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return json.dumps(message)


@pytest.mark.parametrize("mode", ["bridge", "embedded"])
async def test_a_request_before_initialize_is_told_to_initialize(home: Path, mode: str) -> None:
    args = ["--embedded"] if mode == "embedded" else []
    async with raw_serve(home, *args, handshake=False) as raw:
        for line in (
            rpc("list", "tools/list"),
            status_call("status", {}),
            rpc("read", "resources/read", {"uri": "podium://jobs"}),
            rpc("unknown", "no/such/method"),
        ):
            await raw.send(line)
            answer = await raw.receive(30)
            assert answer["error"] == {"code": -32600, "message": NO_SESSION}, answer
        assert "send initialize first" in NO_SESSION
        # A ping is the one request allowed before the handshake: answered, in both.
        await raw.send(rpc("ping", "ping"))
        assert await raw.receive() == {"jsonrpc": "2.0", "id": "ping", "result": {}}
        # The client does as told, and is served.
        await raw.send_json(INIT)
        init = await raw.receive(30)
        assert init["id"] == 1 and "result" in init, init
        await raw.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
        await raw.send(status_call("after", {}))
        answer = await raw.receive(30)
        assert answer["id"] == "after", answer
        assert answer["result"]["structuredContent"]["pid"] > 0, answer


@pytest.mark.parametrize("mode", ["bridge", "embedded"])
async def test_a_2026_client_needs_no_initialize(home: Path, mode: str) -> None:
    """A request with the 2026-07-28 envelope opens the session by itself: never gated."""
    args = ["--embedded"] if mode == "embedded" else []
    async with raw_serve(home, *args, handshake=False) as raw:
        params = {"name": "status", "arguments": {}, "_meta": ENVELOPE}
        await raw.send(rpc(7, "tools/call", params))
        answer = await raw.receive(30)
        assert answer["id"] == 7 and answer["result"]["structuredContent"]["pid"] > 0, answer

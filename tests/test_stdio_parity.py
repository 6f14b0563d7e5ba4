"""The two stdio servers, `podium serve` (the bridge, attached to a running conductor) and
`podium serve --embedded`, give the same answers (the same JSON-RPC error codes, messages and
data; results of the same shape) to the same sequence of messages, wherever the session is in
question: an `initialize` that fails (in several ways), requests before any `initialize`, a
request with the 2026-07-28 envelope followed by `initialize`, the reverse, a second
`initialize`. Before, after a failed `initialize` the bridge refused what followed while
`--embedded` served it once `notifications/initialized` had come, and an `initialize` after
an enveloped request (or an enveloped request after `initialize`) was refused by
`--embedded` and served by the bridge. Real processes, each sequence written in one write
(as hosts pipeline) on a fresh connection."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_bridge_pipelining import (
    INITIALIZED,
    PODIUM,
    bridge,
    initialize,
    request,
    serve_env,
    started_conductor,
    tool,
)

from podium.server.stdio_session import (
    ENVELOPE_ON_HANDSHAKE,
    INITIALIZE_ON_MODERN,
    NO_SESSION,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "parity", "version": "0"},
}
CLIENT = {"name": "parity", "version": "0"}
# What each answer must be, besides equal in both: "ok" (a result), or an error code.
OK = "ok"


def enveloped(request_id: int | str, method: str, **params: Any) -> dict[str, Any]:
    return request(request_id, method, **params, _meta=ENVELOPE)


@dataclass
class Sequence:
    messages: list[dict[str, Any]]
    expected: dict[int | str, str | int]
    # Substrings each answer's error message must hold (beyond being the same in both).
    says: dict[int | str, str] = field(default_factory=dict)


SEQUENCES: dict[str, Sequence] = {
    "initialize-without-params": Sequence(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "initialize"},
            INITIALIZED,
            request(2, "tools/list"),
            request(3, "ping"),
            initialize(4),
            INITIALIZED,
            request(5, "tools/list"),
        ],
        {1: -32602, 2: -32600, 3: OK, 4: OK, 5: OK},
        {1: "params: Field required", 2: "came after initialize (id 1), which failed (-32602"},
    ),
    "initialize-with-wrong-types": Sequence(
        [
            initialize("bad", protocolVersion=5, capabilities=[], clientInfo={"name": "parity"}),
            INITIALIZED,
            tool(2, "status"),
            initialize(3, protocolVersion="2025-11-25", capabilities={}),
            tool(4, "status"),
            initialize(5),
            tool(6, "status"),
        ],
        {"bad": -32602, 2: -32600, 3: -32602, 4: -32600, 5: OK, 6: OK},
        {
            "bad": "params.protocolVersion: Input should be a valid string",
            2: 'initialize (id "bad")',
            3: "params.clientInfo: Field required",
            4: "initialize (id 3)",
        },
    ),
    "initialize-with-unsupported-versions": Sequence(
        [
            initialize(1, protocolVersion="1999-01-01", capabilities={}, clientInfo=CLIENT),
            INITIALIZED,
            request(2, "tools/list"),
            initialize(3, protocolVersion="2026-07-28", capabilities={}, clientInfo=CLIENT),
            request(4, "tools/list"),
        ],
        {1: OK, 2: OK, 3: OK, 4: OK},
    ),
    "requests-before-initialize": Sequence(
        [
            request(1, "tools/list"),
            tool(2, "status"),
            request(3, "resources/read", uri="podium://jobs"),
            request(4, "no/such/method"),
            request(5, "ping"),
            INITIALIZED,
            request(6, "tools/list"),
            initialize(7),
            INITIALIZED,
            request(8, "tools/list"),
        ],
        {1: -32600, 2: -32600, 3: -32600, 4: -32600, 5: OK, 6: -32600, 7: OK, 8: OK},
        {1: NO_SESSION, 6: NO_SESSION},
    ),
    "envelope-then-initialize": Sequence(
        [
            enveloped(1, "tools/list"),
            initialize(2),
            INITIALIZED,
            request(3, "tools/list"),
            enveloped(4, "tools/call", name="status", arguments={}),
            initialize(5, _meta=ENVELOPE, **initialize(0)["params"]),
        ],
        {1: OK, 2: -32022, 3: -32602, 4: OK, 5: -32022},
        {2: INITIALIZE_ON_MODERN, 5: INITIALIZE_ON_MODERN},
    ),
    "initialize-then-envelope": Sequence(
        [
            initialize(1),
            INITIALIZED,
            enveloped(2, "tools/list"),
            enveloped(3, "tools/call", name="status", arguments={}),
            request(4, "tools/list"),
        ],
        {1: OK, 2: -32600, 3: -32600, 4: OK},
        {2: ENVELOPE_ON_HANDSHAKE},
    ),
    "initialize-carrying-the-envelope": Sequence(
        [
            initialize(1, _meta=ENVELOPE, **initialize(0)["params"]),
            INITIALIZED,
            request(2, "tools/list"),
        ],
        {1: OK, 2: OK},
    ),
    "second-initialize": Sequence(
        [
            initialize(1),
            INITIALIZED,
            initialize(2),
            request(3, "ping"),
            INITIALIZED,
            request(4, "tools/list"),
            # A failed one on an established session leaves that session.
            initialize(5, capabilities={}),
            tool(6, "status"),
        ],
        {1: OK, 2: OK, 3: OK, 4: OK, 5: -32602, 6: OK},
    ),
    "failed-initialize-then-envelope": Sequence(
        [
            initialize(1, clientInfo=CLIENT),
            enveloped(2, "tools/list"),
            initialize(3),
        ],
        {1: -32602, 2: OK, 3: -32022},
    ),
}


def shape(answer: dict[str, Any]) -> Any:
    """What must be the same in both: an error whole; of a result, what does not depend on
    the process (its keys, the negotiated version, the tools listed)."""
    if "error" in answer:
        return {"error": answer["error"]}
    result = answer["result"]
    seen: dict[str, Any] = {"keys": sorted(result)}
    if "protocolVersion" in result:
        seen["protocolVersion"] = result["protocolVersion"]
    if "tools" in result:
        seen["tools"] = sorted(t["name"] for t in result["tools"])
    if "structuredContent" in result:
        seen["structured"] = sorted(result["structuredContent"])
    return seen


async def answers(home: Path, sequence: Sequence, *args: str) -> dict[int | str, Any]:
    async with bridge(home, *args) as serve:
        await serve.write(*sequence.messages)
        got = await serve.answers_for(*sequence.expected)
        await serve.finish()
    assert set(serve.answers) == set(sequence.expected), serve.answers
    return got


@pytest.fixture(scope="module")
def conducted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home with a running conductor, for every sequence's bridge (one start, not one per
    sequence: each bridge is a fresh connection to it all the same)."""
    home = tmp_path_factory.mktemp("bridged") / "home"
    home.mkdir()
    started_conductor(home)
    try:
        yield home
    finally:
        done = subprocess.run(
            [PODIUM, "stop", "--force"], env=serve_env(home), capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr.decode()


@pytest.mark.parametrize("name", sorted(SEQUENCES))
async def test_both_stdio_servers_answer_alike(conducted: Path, home: Path, name: str) -> None:
    sequence = SEQUENCES[name]
    bridged = await answers(conducted, sequence)
    embedded = await answers(home, sequence, "--embedded")
    for request_id, expected in sequence.expected.items():
        seen = {"bridge": bridged[request_id], "embedded": embedded[request_id]}
        assert shape(seen["bridge"]) == shape(seen["embedded"]), (request_id, seen)
        answer = seen["bridge"]
        if expected == OK:
            assert "result" in answer, (request_id, answer)
            assert answer["result"].get("isError") is not True, (request_id, answer)
        else:
            assert answer.get("error", {}).get("code") == expected, (request_id, answer)
        if request_id in sequence.says:
            assert sequence.says[request_id] in answer["error"]["message"], (request_id, answer)

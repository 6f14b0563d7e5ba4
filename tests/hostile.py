"""Helpers for the hardening suites: a server with several in-memory clients and an HTTP
app, and a prober that measures how long another client waits while something hostile runs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp_types import CallToolResult, TextContent

from podium.core.conductor import Conductor
from podium.server.app import PodiumServer
from podium.server.serve import HttpOptions, build_http_app


def text_of(result: CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, TextContent))


@dataclass
class Served:
    server: PodiumServer
    clients: list[Client]
    http: httpx2.AsyncClient

    async def call(self, tool: str, args: dict[str, Any], client: int = 0) -> CallToolResult:
        return await self.clients[client].call_tool(tool, args)

    async def ok(self, tool: str, args: dict[str, Any], client: int = 0) -> dict[str, Any]:
        result = await self.call(tool, args, client)
        assert not result.is_error, text_of(result)
        assert result.structured_content is not None
        return result.structured_content


@asynccontextmanager
async def served(conductor: Conductor, clients: int = 2) -> AsyncIterator[Served]:
    """The conductor behind one MCP server, `clients` in-memory clients and the HTTP app
    (for /healthz) on an ASGI transport."""
    server = PodiumServer(conductor)
    app = build_http_app(server, "streamable-http", HttpOptions())
    async with server.running():
        opened: list[Client] = []
        try:
            for _ in range(clients):
                client = Client(server.mcp)
                await client.__aenter__()
                opened.append(client)
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(
                transport=transport, base_url="http://127.0.0.1:8765"
            ) as http:
                yield Served(server, opened, http)
        finally:
            for client in reversed(opened):
                await client.__aexit__(None, None, None)


@dataclass
class Latencies:
    seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def p99(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0

    def worst(self) -> float:
        return max(self.seconds, default=0.0)


async def probe(
    served_: Served,
    stop: anyio.Event,
    client: int = 1,
    interval: float = 0.02,
    out: Latencies | None = None,
) -> Latencies:
    """Call `status` and GET /healthz from another client until `stop`, timing each (into
    `out` when given, which the caller can watch fill)."""
    out = Latencies() if out is None else out
    while not stop.is_set():
        t0 = time.monotonic()
        result = await served_.call("status", {}, client)
        if result.is_error:
            out.errors.append(text_of(result))
        out.seconds.append(time.monotonic() - t0)
        t0 = time.monotonic()
        response = await served_.http.get("/healthz")
        if response.status_code not in (200, 503):
            out.errors.append(f"/healthz {response.status_code}")
        out.seconds.append(time.monotonic() - t0)
        await anyio.sleep(interval)
    return out


# Enough probes that a 99th percentile is one: of three rounds' 50-odd samples it was the
# worst sample, and one stall of the whole process under load failed the test. A loop that
# the hostile work blocked puts far more than 1% of the samples above any bound.
PROBES = 200


async def probe_rounds(
    served_: Served,
    one_round: Callable[[], Awaitable[None]],
    min_rounds: int = 3,
    give_up_seconds: float = 20,
) -> tuple[Latencies, int]:
    """Run `one_round` at least `min_rounds` times and until another client has been probed
    PROBES times (or `give_up_seconds` passed); returns the latencies and the rounds run."""
    stop = anyio.Event()
    latencies = Latencies()
    rounds = 0
    async with anyio.create_task_group() as tg:

        async def measure() -> None:
            await probe(served_, stop, interval=0.005, out=latencies)

        tg.start_soon(measure)
        give_up = time.monotonic() + give_up_seconds
        while rounds < min_rounds or (
            len(latencies.seconds) < PROBES and time.monotonic() < give_up
        ):
            await one_round()
            rounds += 1
        stop.set()
    return latencies, rounds

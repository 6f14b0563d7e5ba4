"""An HTTP front for a stdio MCP server, so the conformance suite (HTTP only) can run
through `podium serve`, the stdio bridge, as an agent host uses it.

Usage: python tests/stdio_relay.py PORT COMMAND [ARGS...]

Each POST to /mcp carries one JSON-RPC message of the 2026-07-28 (stateless) protocol: a
request is written to the child's stdin under a fresh id, and its response comes back as
`application/json`; frames the child sends for that request before its response (a
`subscriptions/listen` stream) come back as one `text/event-stream`. A notification is
written and answered 202. HTTP headers stop here: the bridge derives its own from the body,
as it does for a stdio host.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import uvicorn
from anyio.streams.memory import MemoryObjectSendStream
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"


class Relay:
    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.ids = itertools.count(1)
        self.waiting: dict[str, MemoryObjectSendStream[dict[str, Any]]] = {}
        self.proc: anyio.abc.Process | None = None
        self.write_lock = anyio.Lock()

    async def run(self, port: int) -> None:
        app = Starlette(routes=[Route("/mcp", self.handle, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        async with await anyio.open_process(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None
        ) as proc:
            self.proc = proc
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.read_child)
                await uvicorn.Server(config).serve()
                tg.cancel_scope.cancel()
            proc.terminate()

    async def read_child(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        buffer = b""
        async for chunk in self.proc.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    self.route(json.loads(line))

    def route(self, message: dict[str, Any]) -> None:
        key = message.get("id")
        if key is None and "method" in message:
            meta = (message.get("params") or {}).get("_meta") or {}
            key = meta.get(SUBSCRIPTION_ID)
        stream = self.waiting.get(str(key)) if key is not None else None
        if stream is not None:
            stream.send_nowait(message)

    async def send(self, message: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        async with self.write_lock:
            await self.proc.stdin.send(json.dumps(message).encode() + b"\n")

    async def handle(self, request: Request) -> Response:
        body = await request.json()
        if "id" not in body:
            await self.send(body)
            return Response(status_code=202)
        original = body["id"]
        inner = f"relay-{next(self.ids)}"
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](1000)
        self.waiting[inner] = send
        await self.send({**body, "id": inner})
        first = await receive.receive()
        if "id" in first and first["id"] == inner:
            del self.waiting[inner]
            return JSONResponse({**first, "id": original})

        async def frames() -> AsyncIterator[bytes]:
            message: dict[str, Any] | None = first
            try:
                while message is not None:
                    done = message.get("id") == inner
                    if done:
                        message = {**message, "id": original}
                    else:
                        meta = (message.get("params") or {}).get("_meta") or {}
                        if SUBSCRIPTION_ID in meta:
                            meta[SUBSCRIPTION_ID] = original
                    yield f"event: message\ndata: {json.dumps(message)}\n\n".encode()
                    message = None if done else await receive.receive()
            finally:
                self.waiting.pop(inner, None)

        return StreamingResponse(frames(), media_type="text/event-stream")


if __name__ == "__main__":
    anyio.run(Relay(sys.argv[2:]).run, int(sys.argv[1]))

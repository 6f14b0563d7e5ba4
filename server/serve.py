"""`podium serve`: one conductor per process, shared by every MCP connection, over stdio, SSE or
streamable HTTP."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import structlog
import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.errors import PodiumError
from podium.server.app import PodiumServer
from podium.server.event_store import RETRY_INTERVAL_MS, BoundedEventStore

log = structlog.get_logger("podium.serve")

Transport = Literal["stdio", "sse", "streamable-http"]
# A request body larger than this is refused (HTTP 413) before it is parsed.
MAX_REQUEST_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class HttpOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    allowed_hosts: list[str] = field(default_factory=list)
    allowed_origins: list[str] = field(default_factory=list)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def transport_security(options: HttpOptions) -> TransportSecuritySettings:
    """DNS-rebinding protection stays on for every bind; a non-loopback bind must list the
    hosts it answers to (default: exactly the bind host:port)."""
    if options.allowed_hosts:
        hosts = list(options.allowed_hosts)
    elif is_loopback(options.host):
        hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    else:
        hosts = [f"{options.host}:{options.port}"]
    origins = list(options.allowed_origins) or [f"http://{h}" for h in hosts] + [
        f"https://{h}" for h in hosts
    ]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


def check_http_options(options: HttpOptions) -> None:
    if not is_loopback(options.host) and not options.token:
        raise PodiumError(
            f"refusing to bind {options.host}: a non-loopback host needs a bearer token "
            "(--token or PODIUM_TOKEN)"
        )


def build_http_app(server: PodiumServer, transport: Transport, options: HttpOptions) -> Starlette:
    security = transport_security(options)

    async def healthz(request: Request) -> JSONResponse:
        status = await server.conductor.status()
        body = {
            "alive": True,
            "ready": status.ready,
            "pid": status.pid,
            "uptime_seconds": status.uptime_seconds,
            "version": status.version,
        }
        return JSONResponse(body, status_code=200 if status.ready else 503)

    server.mcp.custom_route("/healthz", methods=["GET"])(healthz)

    if transport == "sse":
        return server.mcp.sse_app(
            transport_security=security,
            host=options.host,
            max_request_body_size=MAX_REQUEST_BODY_BYTES,
        )
    return server.mcp.streamable_http_app(
        transport_security=security,
        host=options.host,
        max_request_body_size=MAX_REQUEST_BODY_BYTES,
        event_store=BoundedEventStore(),
        retry_interval=RETRY_INTERVAL_MS,
    )


async def serve(
    config: PodiumConfig,
    transport: Transport,
    options: HttpOptions,
    overrides: dict[str, Any] | None = None,
) -> None:
    if transport != "stdio":
        check_http_options(options)
    conductor = Conductor(config, overrides=overrides)
    await conductor.start()
    try:
        issuer = f"http://{options.host}:{options.port}"
        server = PodiumServer(
            conductor, token=options.token if transport != "stdio" else None, issuer_url=issuer
        )
        async with server.running(), anyio.create_task_group() as signals:
            signals.start_soon(_reload_on_sighup, conductor)
            if transport == "stdio":
                await _serve_stdio(server)
            else:
                app = build_http_app(server, transport, options)
                uv_config = uvicorn.Config(
                    app,
                    host=options.host,
                    port=options.port,
                    log_level="warning",
                    lifespan="on",
                )
                log.info("serving", transport=transport, host=options.host, port=options.port)
                # The app's own lifespan runs the streamable-HTTP session manager.
                uv = _UvicornServer(uv_config)
                signals.start_soon(_exit_on_signal, uv)
                await uv.serve()
            signals.cancel_scope.cancel()
    finally:
        await conductor.stop()


async def _serve_stdio(server: PodiumServer) -> None:
    """Serve until the host closes stdin or a SIGTERM/SIGINT arrives; then the conductor stops
    gracefully (running sheets are ended and their jobs paused with reason `shutdown`)."""
    async with anyio.create_task_group() as tg:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                async for _ in sigs:
                    tg.cancel_scope.cancel()
                    return

        async def run() -> None:
            await server.mcp.run_stdio_async()
            tg.cancel_scope.cancel()

        tg.start_soon(stop_on_signal)
        tg.start_soon(run)


async def _reload_on_sighup(conductor: Conductor) -> None:
    """SIGHUP (sent by `podium reload`) re-reads config.yaml and applies it live."""
    with anyio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            try:
                result = await conductor.reload()
                log.info("reloaded", applied=result.applied, not_applied=result.not_applied)
            except PodiumError as exc:
                log.error("reload failed; the previous configuration stays", error=str(exc))


class _UvicornServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT once `serve()` returns, which would kill the process
    before the conductor's graceful stop; Podium handles those signals itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _exit_on_signal(uv: uvicorn.Server) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            uv.should_exit = True
            return

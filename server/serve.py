"""`podium serve`: one conductor per process, shared by every MCP connection, over stdio, SSE or
streamable HTTP."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import math
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator
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
from podium.core.home import ConductorInfo, remove_conductor_info, write_conductor_info
from podium.core.models import utcnow
from podium.core.runner.descriptors import DescriptorLimit, describe, raise_descriptor_limit
from podium.core.runner.escapees import become_subreaper
from podium.core.store.urls import store_identity
from podium.core.version import podium_version
from podium.server.activity import ActivityTracker, wait_until_idle
from podium.server.app import PodiumServer
from podium.server.cli_routes import add_cli_routes
from podium.server.dashboard import Dashboard
from podium.server.event_store import RETRY_INTERVAL_MS, BoundedEventStore
from podium.server.exhaustion import surviving_exhaustion
from podium.server.stdio_guard import guarded_stdio_server

log = structlog.get_logger("podium.serve")

Transport = Literal["stdio", "sse", "streamable-http"]
# A request body larger than this is refused (HTTP 413) before it is parsed.
MAX_REQUEST_BODY_BYTES = 4 * 1024 * 1024
# On stop, requests still open after this long are cut. Some never end by themselves: a
# 2025-11-25 client's GET stream lasts as long as it is connected, a `subscriptions/listen`
# until the client leaves; waiting for them held `podium stop` up until it gave up. Cut
# clients reconnect to the next conductor, as after a crash.
GRACEFUL_SHUTDOWN_SECONDS = 3


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


def host_allowed(host: str, patterns: list[str]) -> bool:
    """The Host header against DNS-rebinding patterns (`127.0.0.1:*` allows any port)."""
    for pattern in patterns:
        if pattern.endswith(":*"):
            name = pattern[:-2]
            if host == name or (host.startswith(name + ":") and host[len(name) + 1 :].isdigit()):
                return True
        elif host == pattern:
            return True
    return False


def trusted(request: Request, security: TransportSecuritySettings, token: str | None) -> bool:
    if not host_allowed(request.headers.get("host", ""), list(security.allowed_hosts)):
        return False
    if not token:
        return True
    given = request.headers.get("authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def check_http_options(options: HttpOptions) -> None:
    if not is_loopback(options.host) and not options.token:
        raise PodiumError(
            f"refusing to bind {options.host}: a non-loopback host needs a bearer token "
            "(--token or PODIUM_TOKEN)"
        )


def build_http_app(server: PodiumServer, transport: Transport, options: HttpOptions) -> Starlette:
    security = transport_security(options)

    async def healthz(request: Request) -> JSONResponse:
        # Liveness for anyone (a supervisor's probe); what this process is and whether it is
        # ready only for a request /mcp itself would let in: an allowed Host, and the bearer
        # token when one is set.
        if not trusted(request, security, options.token):
            return JSONResponse({"alive": True})
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
    *,
    idle_exit_minutes: float | None = None,
) -> None:
    """Run the engine and serve MCP in this process until stdin closes (stdio), a SIGTERM or
    SIGINT arrives, or (with `idle_exit_minutes`) nothing has used it for that long.

    The signal receiver stays open through the graceful stop: a second SIGTERM while running
    sheets are being ended (the SDK's stdio client sends one 2 s after closing stdin) is
    logged and ignored instead of killing the process in the middle of its kill sequence."""
    if transport != "stdio":
        check_http_options(options)
    limit = _raise_descriptor_limit()
    conductor = Conductor(config, overrides=overrides)
    # This process exists to run the engine: orphans of its sheets become its children (not
    # init's), so it stays their reaper and can end them (SPEC §9 trap 15).
    become_subreaper()
    stop = anyio.Event()
    failure: PodiumError | None = None
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        # The signal task encloses the conductor's own task group, so the conductor can be
        # stopped (LIFO) while signals are still being received.
        async with anyio.create_task_group() as outer:
            outer.start_soon(_handle_signals, signals, conductor, stop)
            try:
                await conductor.start()
            except PodiumError as exc:
                failure = exc
            else:
                try:
                    if transport == "stdio":
                        await _serve_stdio(conductor, stop)
                    else:
                        await _serve_http(
                            conductor, transport, options, stop, idle_exit_minutes, limit
                        )
                finally:
                    # Not under a shield: stop() closes the conductor's task group, whose scope
                    # must be the current one; it shields its own graceful shutdown.
                    await conductor.stop()
                    remove_conductor_info(config.conductor_file, os.getpid())
            outer.cancel_scope.cancel()
    if failure is not None:
        raise failure


def _raise_descriptor_limit() -> DescriptorLimit:
    """Room for every client's connections (core/runner/descriptors.py says why, and what
    the processes the engine starts get)."""
    limit = raise_descriptor_limit()
    if limit.error is not None:
        log.warning("descriptor limit could not be raised", **describe(limit))
    elif limit.raised:
        log.info("descriptor limit raised", **describe(limit))
    else:
        log.info("descriptor limit kept", **describe(limit))
    return limit


async def _handle_signals(
    signals: AsyncIterator[int], conductor: Conductor, stop: anyio.Event
) -> None:
    async for signum in signals:
        if signum == signal.SIGHUP:
            await _reload(conductor)
        elif stop.is_set():
            log.warning("already stopping; waiting for running sheets to end", signal=signum)
        else:
            log.info("stopping", signal=signal.Signals(signum).name)
            stop.set()


async def _reload(conductor: Conductor) -> None:
    """SIGHUP (sent by `podium reload`) re-reads config.yaml and applies it live."""
    try:
        result = await conductor.reload()
        log.info("reloaded", applied=result.applied, not_applied=result.not_applied)
    except PodiumError as exc:
        log.error("reload failed; the previous configuration stays", error=str(exc))


def _publish(conductor: Conductor, url: str | None, token: str | None) -> None:
    info = ConductorInfo(
        pid=os.getpid(),
        url=url,
        token=token,
        version=podium_version(),
        started_at=utcnow(),
        store=store_identity(conductor.config.store_url),
        store_source=conductor.store_source,
    )
    write_conductor_info(conductor.config.conductor_file, info)


async def _serve_stdio(conductor: Conductor, stop: anyio.Event) -> None:
    """The embedded engine over stdio, until the host closes stdin or a stop signal comes; then
    the conductor stops gracefully (running sheets are ended, their jobs paused `shutdown`).
    conductor.json names this process with no URL: nothing can attach to it."""
    server = PodiumServer(conductor)
    _publish(conductor, None, None)
    lowlevel = server.mcp._lowlevel_server
    async with server.running(), anyio.create_task_group() as tg:

        async def protocol() -> None:
            async with guarded_stdio_server() as (read, write):
                await lowlevel.run(read, write, lowlevel.create_initialization_options())
            tg.cancel_scope.cancel()

        async def on_stop() -> None:
            await stop.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(protocol)
        tg.start_soon(on_stop)


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.set_inheritable(True)
    return sock


def local_url(host: str, port: int) -> str:
    """The URL a process on this machine uses to reach a server bound to host:port."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/mcp"


async def _serve_http(
    conductor: Conductor,
    transport: Transport,
    options: HttpOptions,
    stop: anyio.Event,
    idle_exit_minutes: float | None,
    limit: DescriptorLimit,
) -> None:
    sock = _bind(options.host, options.port)
    port: int = sock.getsockname()[1]
    bound = HttpOptions(
        host=options.host,
        port=port,
        token=options.token,
        allowed_hosts=options.allowed_hosts,
        allowed_origins=options.allowed_origins,
    )
    server = PodiumServer(
        conductor, token=options.token, issuer_url=f"http://{options.host}:{port}"
    )
    if options.token:
        add_cli_routes(server.mcp, conductor, options.token)
    dashboard = Dashboard(server, transport_security(bound), options.token)
    dashboard.install()
    app = build_http_app(server, transport, bound)
    tracker = ActivityTracker(app)
    uv_config = uvicorn.Config(
        tracker,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    uv = _UvicornServer(uv_config)
    async with server.running(), dashboard.running(), anyio.create_task_group() as tg:

        async def run() -> None:
            # Out of descriptors, accepting pauses and is tried again (server/exhaustion.py).
            with surviving_exhaustion(limit):
                await uv.serve(sockets=[sock])
            tg.cancel_scope.cancel()

        async def announce() -> None:
            await uv.ready.wait()
            # Only a streamable-HTTP conductor can be attached to (bridge and CLI speak it).
            url = local_url(options.host, port) if transport == "streamable-http" else None
            _publish(conductor, url, options.token)
            log.info("serving", transport=transport, host=options.host, port=port, url=url)

        async def on_stop() -> None:
            with anyio.move_on_after(_minutes(idle_exit_minutes)):
                await stop.wait()
            if not stop.is_set():
                await wait_until_idle(conductor, tracker, _minutes(idle_exit_minutes))
            # Long-polls answer and open dashboard event streams end first; uvicorn then
            # waits for open responses (at most GRACEFUL_SHUTDOWN_SECONDS).
            conductor.begin_stop()
            dashboard.close()
            uv.should_exit = True

        tg.start_soon(run)
        tg.start_soon(announce)
        tg.start_soon(on_stop)
    sock.close()


def _minutes(value: float | None) -> float:
    return math.inf if value is None else value * 60


class _UvicornServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT once `serve()` returns, which would kill the process
    before the conductor's graceful stop; Podium handles those signals itself."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()

"""`podium start`, `stop`, `restart`, `serve`, `reload` and `top`: the conductor itself."""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path
from typing import Any

import click

from podium.core.config import PodiumConfig
from podium.core.errors import HomeLockedError, PodiumError
from podium.core.home import ConductorInfo, ensure_home
from podium.server.cli_base import (
    ACTIVE,
    EXIT_FAILED,
    Context,
    err,
    out,
    pass_ctx,
    run_async,
    say,
    started_note,
)
from podium.server.logging_setup import configure_logging

# ----- the conductor --------------------------------------------------------------------------


@click.command()
@click.option("--detach", is_flag=True, help="Run in the background; return once it is ready.")
@click.option("--child", is_flag=True, hidden=True)
@click.option("--log-level", default="INFO", help="Log level of conductor.log and stderr.")
@pass_ctx
@run_async
async def start(ctx: Context, detach: bool, child: bool, log_level: str) -> int:
    """Run the home's conductor: the engine plus MCP over streamable HTTP on 127.0.0.1
    (random port and bearer token, written to <home>/conductor.json)."""
    from podium.server.daemon import LOCKED_EXIT_CODE, ensure_conductor, find_conductor

    config = ctx.config()
    # The child's parent looked already; the lock decides a race (it exits LOCKED_EXIT_CODE).
    running = None if child else find_conductor(config)
    if running is not None:
        say(f"the conductor of {config.home} is already running (pid {running.pid}, {running.url})")
        return 0
    if detach:
        info, _ = await ensure_conductor(config)
        say(
            f"conductor pid {info.pid} serving {info.url} for {config.home}\n"
            f"log: {config.logs_dir / 'conductor.log'}; stop it with `podium stop`"
        )
        return 0
    # Only the process that runs the engine pays for importing it (and the MCP server).
    from podium.server.serve import HttpOptions, serve

    # A home that cannot be made (a read-only disk, a file in its path) is a clear error
    # here, not a traceback from creating the log folder below.
    ensure_home(config)
    if child:
        os.chdir(config.home)  # hold no caller's directory open
    # A detached child's stderr is conductor.log already.
    configure_logging(config.logs_dir, level=log_level, stderr=not child)
    options = HttpOptions(host="127.0.0.1", port=0, token=secrets.token_urlsafe(32))
    try:
        await serve(config, "streamable-http", options, idle_exit_minutes=config.idle_exit_minutes)
    except HomeLockedError as exc:
        err.print(f"podium: {exc}", markup=False)
        return LOCKED_EXIT_CODE
    return 0


async def _active_jobs(info: ConductorInfo) -> tuple[list[dict[str, Any]], list[str]]:
    """Active jobs, and the other conductors alive on a shared store (who run them on), as
    the conductor sees them on its own store (whatever store this command is set to)."""
    from podium.server.remote import connect

    async with connect(info) as caller:
        listed = await caller.call("list_jobs", {"status": ACTIVE, "limit": 500})
        status = await caller.call("status", {})
    jobs: list[dict[str, Any]] = listed["jobs"]
    me = status.get("conductor_id")
    others = [c["conductor_id"] for c in status.get("conductors") or [] if c["conductor_id"] != me]
    return jobs, others


async def _stop(config: PodiumConfig, force: bool, wait_seconds: float) -> int:
    from podium.server.daemon import TokenRefusedError, find_conductor, stop_conductor

    # Stopping acts on no store of this command's: it works whichever store that names.
    info = find_conductor(config, same_store=False)
    if info is None:
        say(f"no conductor is running on {config.home}")
        return 0
    try:
        active, others = await _active_jobs(info)
    except TokenRefusedError:
        if not force:
            raise
        # It cannot be asked for its jobs; SIGTERM still stops it gracefully.
        active, others = [], []
    if others:
        # The store is shared and other conductors run: the jobs go on with them, and the
        # sheets this one runs go back to pending for them.
        say(f"other conductors run on with the active jobs: {', '.join(others)}")
        active = []
    if active and not force:
        names = ", ".join(f"{j['job_id']} ({j['status']})" for j in active)
        err.print(
            f"podium: not stopping the conductor of {config.home}: {len(active)} active "
            f"job(s): {names}\nwait for them, pause them (podium pause JOB), or stop anyway "
            "with `podium stop --force` (running jobs become paused, reason shutdown; "
            "`podium resume JOB` continues them)",
            markup=False,
        )
        return EXIT_FAILED
    # The stop waits out the kill sequence of the sheets it ends (see `stop_seconds`).
    wait = wait_seconds if wait_seconds > 0 else 2 * config.kill_grace_seconds + 30
    if not await stop_conductor(info, wait):
        err.print(f"podium: the conductor (pid {info.pid}) is still stopping after {wait:.0f}s")
        return EXIT_FAILED
    paused = ", ".join(j["job_id"] for j in active if j["status"] == "running")
    say(
        f"stopped the conductor of {config.home} (pid {info.pid})"
        + (f"; paused (shutdown): {paused}" if paused else "")
    )
    return 0


@click.command()
@click.option("--force", is_flag=True, help="Stop even with active jobs (they are paused).")
@click.option(
    "--wait",
    "wait_seconds",
    default=0.0,
    help="Seconds to wait (0: twice kill_grace_seconds + 30).",
)
@pass_ctx
@run_async
async def stop(ctx: Context, force: bool, wait_seconds: float) -> int:
    """Stop the conductor gracefully. Refuses while jobs are queued or running, naming them,
    unless --force: then running sheets are ended and their jobs paused (shutdown)."""
    return await _stop(ctx.config_to_stop(), force, wait_seconds)


@click.command()
@click.option("--force", is_flag=True, help="Restart even with active jobs (they are paused).")
@pass_ctx
@run_async
async def restart(ctx: Context, force: bool) -> int:
    """Stop the conductor (as `podium stop`) and start it again, detached."""
    from podium.server.daemon import ensure_conductor

    config = ctx.config()
    code = await _stop(config, force, 0)
    if code != 0:
        return code
    info, _ = await ensure_conductor(config)
    say(f"conductor pid {info.pid} serving {info.url}")
    return 0


@click.command()
@click.option("--embedded", is_flag=True, help="Run the engine in this process (stdio only).")
@click.option(
    "--transport",
    type=click.Choice(["stdio", "sse", "streamable-http"]),
    default="stdio",
    help="stdio attaches to the conductor; sse and streamable-http run the engine here.",
)
@click.option("--host", default="127.0.0.1", help="Address to bind (HTTP transports).")
@click.option("--port", default=8765, help="Port to bind (HTTP transports; 0: any free one).")
@click.option("--token", envvar="PODIUM_TOKEN", help="Bearer token required on HTTP.")
@click.option("--allowed-host", multiple=True, help="Host header to accept (repeat).")
@click.option("--allow-root", multiple=True, help="Extra allowed workspace root (repeat).")
@click.option("--log-level", default="INFO", help="Log level.")
@pass_ctx
@run_async
async def serve(
    ctx: Context,
    embedded: bool,
    transport: str,
    host: str,
    port: int,
    token: str | None,
    allowed_host: tuple[str, ...],
    allow_root: tuple[str, ...],
    log_level: str,
) -> int:
    """Serve MCP. Over stdio (what mcp.json launches) this attaches to the home's conductor,
    starting it when none runs; the host exiting ends only this connection, never a job."""
    from podium.server.serve import HttpOptions
    from podium.server.serve import serve as serve_engine

    overrides: dict[str, Any] = {}
    if allow_root:
        overrides["allowed_roots"] = [Path(p) for p in allow_root]
    config = ctx.config(**overrides)
    if transport == "stdio" and not embedded:
        from podium.server.bridge import run_bridge

        # The bridge logs to stderr only: conductor.log belongs to the conductor.
        configure_logging(None, level=log_level)
        if allow_root:
            raise PodiumError(
                "--allow-root applies to the engine: set allowed_roots in config.yaml (the "
                "conductor reads it) or use --embedded"
            )
        return await run_bridge(config)
    ensure_home(config)  # as in `start`: a clear error, before the log folder is made
    configure_logging(config.logs_dir, level=log_level)
    if embedded and transport != "stdio":
        raise PodiumError("--embedded is for stdio; sse and streamable-http always embed")
    options = HttpOptions(
        host=host, port=port, token=token or None, allowed_hosts=list(allowed_host)
    )
    await serve_engine(config, transport, options, overrides=overrides)  # type: ignore[arg-type]
    return 0


@click.command()
@pass_ctx
@run_async
async def reload(ctx: Context) -> int:
    """Make the running conductor re-read config.yaml (SIGHUP)."""
    from podium.core.config import setting_source
    from podium.core.home import lock_owner_alive, read_conductor_info
    from podium.core.store.urls import store_identity

    config = ctx.config()
    info = read_conductor_info(config)
    pid = info.pid if info is not None else lock_owner_alive(config)
    if pid is None:
        raise PodiumError(f"no conductor is running on {config.home}; nothing to reload")
    os.kill(pid, signal.SIGHUP)
    say(f"asked the conductor (pid {pid}) of {config.home} to reload its configuration")
    mine = store_identity(config.store_url)
    if info is not None and info.store is not None and info.store != mine:
        err.print(
            f"note: the conductor runs on the store {info.store}, and this command's "
            f"store_url names {mine} ({setting_source(config, 'store_url')}): a reload keeps "
            "the store the conductor started with; `podium restart` starts it on this one",
            markup=False,
        )
    return 0


@click.command()
@click.option(
    "--interval", default=1.0, type=click.FloatRange(0.2, 60), help="Seconds between refreshes."
)
@pass_ctx
@run_async
async def top(ctx: Context, interval: float) -> int:
    """A live view of running jobs and sheets, waits, pressure and rate limits (q quits)."""
    from podium.server.remote import controller
    from podium.server.top import run_top

    config = ctx.config()
    async with controller(config) as (remote, started):
        started_note(config, started, remote.info.pid)
        return await run_top(remote, out, interval)

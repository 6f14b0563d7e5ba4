"""The `podium` command line (click): the same conductor as the MCP tools, for people.

Every command that changes something talks to the home's conductor over MCP, starting one
(detached) when none runs. Pure reads (`list`, `status`, `logs`, `snapshots`) go through the
running conductor too; when none runs they read the store directly, read-only, and say so.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click
import httpx2
from rich.console import Console

from podium.core.config import PodiumConfig, load_config
from podium.core.errors import HomeLockedError, PodiumError, SpecError
from podium.core.models import JobStatus
from podium.server.logging_setup import configure_logging

T = TypeVar("T")
EXIT_FAILED = 1
EXIT_USAGE = 2
ACTIVE = ["queued", "running"]
FINISHED = ["completed", "failed", "cancelled"]

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class Context:
    def __init__(self, home: str | None) -> None:
        self.home = Path(home).expanduser() if home else None

    def config(self, **overrides: Any) -> PodiumConfig:
        return load_config(home=self.home, overrides=overrides)


def run_async(fn: Callable[..., Coroutine[Any, Any, int]]) -> Callable[..., None]:
    """Run an async command; its int is the exit code. Errors are printed in CLI words."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = anyio.run(lambda: fn(*args, **kwargs))
        except KeyboardInterrupt:
            code = 128 + signal.SIGINT
        except BaseException as exc:
            code = _report(exc)
        sys.exit(code)

    return wrapper


def _report(exc: BaseException) -> int:
    """Print an error the user can act on; anything else is a bug and keeps its traceback."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, SpecError):
        err.print(f"podium: invalid job spec ({len(exc.errors)} problem(s)):", markup=False)
        for error in exc.errors:
            err.print(f"  {error}", markup=False)
        return EXIT_USAGE
    if isinstance(exc, PodiumError):
        from podium.server.remote import cli_words

        err.print(f"podium: {cli_words(str(exc))}", markup=False)
        return EXIT_USAGE
    if isinstance(exc, httpx2.HTTPError):
        err.print(f"podium: cannot reach the conductor: {exc!r}", markup=False)
        return EXIT_USAGE
    raise exc


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def say(text: str) -> None:
    out.print(text, markup=False, soft_wrap=True)


def json_option(fn: Callable[..., T]) -> Callable[..., T]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(fn)


pass_ctx = click.make_pass_decorator(Context)


@click.group(
    invoke_without_command=True,
    context_settings={"show_default": True, "help_option_names": ["-h", "--help"]},
)
@click.option(
    "--home",
    envvar="PODIUM_HOME",
    show_envvar=True,
    help="Podium home (state directory).  [default: ~/.podium]",
    show_default=False,
)
@click.version_option(package_name="podium")
@click.pass_context
def main(ctx: click.Context, home: str | None) -> None:
    """Durable job orchestration for AI agents: one conductor per home runs the jobs; MCP
    sessions (`podium serve`) and these commands attach to it."""
    ctx.obj = Context(home)
    if ctx.invoked_subcommand not in ("start", "serve"):
        # Commands other than the engine's own log warnings only, to stderr.
        configure_logging(None, level="WARNING")
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(0)


# ----- the conductor --------------------------------------------------------------------------


@main.command()
@click.option("--detach", is_flag=True, help="Run in the background; return once it is ready.")
@click.option("--child", is_flag=True, hidden=True)
@click.option("--log-level", default="INFO", help="Log level of conductor.log and stderr.")
@pass_ctx
@run_async
async def start(ctx: Context, detach: bool, child: bool, log_level: str) -> int:
    """Run the home's conductor: the engine plus MCP over streamable HTTP on 127.0.0.1
    (random port and bearer token, written to <home>/conductor.json)."""
    from podium.server.daemon import LOCKED_EXIT_CODE, ensure_conductor, find_conductor
    from podium.server.serve import HttpOptions, serve

    config = ctx.config()
    running = find_conductor(config)
    if running is not None and not child:
        say(f"the conductor of {config.home} is already running (pid {running.pid}, {running.url})")
        return 0
    if detach:
        info, _ = await ensure_conductor(config)
        say(
            f"conductor pid {info.pid} serving {info.url} for {config.home}\n"
            f"log: {config.logs_dir / 'conductor.log'}; stop it with `podium stop`"
        )
        return 0
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


async def _active_jobs(config: PodiumConfig) -> list[dict[str, Any]]:
    from podium.server.remote import reader

    async with reader(config) as (caller, _):
        listed = await caller.call("list_jobs", {"status": ACTIVE, "limit": 500})
    jobs: list[dict[str, Any]] = listed["jobs"]
    return jobs


async def _stop(config: PodiumConfig, force: bool, wait_seconds: float) -> int:
    from podium.server.daemon import find_conductor, stop_conductor

    info = find_conductor(config)
    if info is None:
        say(f"no conductor is running on {config.home}")
        return 0
    active = await _active_jobs(config)
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
    wait = wait_seconds if wait_seconds > 0 else config.kill_grace_seconds + 30
    if not await stop_conductor(info, wait):
        err.print(f"podium: the conductor (pid {info.pid}) is still stopping after {wait:.0f}s")
        return EXIT_FAILED
    paused = ", ".join(j["job_id"] for j in active if j["status"] == "running")
    say(
        f"stopped the conductor of {config.home} (pid {info.pid})"
        + (f"; paused (shutdown): {paused}" if paused else "")
    )
    return 0


@main.command()
@click.option("--force", is_flag=True, help="Stop even with active jobs (they are paused).")
@click.option(
    "--wait", "wait_seconds", default=0.0, help="Seconds to wait (0: kill_grace_seconds + 30)."
)
@pass_ctx
@run_async
async def stop(ctx: Context, force: bool, wait_seconds: float) -> int:
    """Stop the conductor gracefully. Refuses while jobs are queued or running, naming them,
    unless --force: then running sheets are ended and their jobs paused (shutdown)."""
    return await _stop(ctx.config(), force, wait_seconds)


@main.command()
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


@main.command()
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
    configure_logging(config.logs_dir, level=log_level)
    if embedded and transport != "stdio":
        raise PodiumError("--embedded is for stdio; sse and streamable-http always embed")
    options = HttpOptions(
        host=host, port=port, token=token or None, allowed_hosts=list(allowed_host)
    )
    await serve_engine(config, transport, options, overrides=overrides)  # type: ignore[arg-type]
    return 0


@main.command()
@pass_ctx
@run_async
async def reload(ctx: Context) -> int:
    """Make the running conductor re-read config.yaml (SIGHUP)."""
    from podium.core.home import lock_owner_alive, read_conductor_info

    config = ctx.config()
    info = read_conductor_info(config)
    pid = info.pid if info is not None else lock_owner_alive(config)
    if pid is None:
        raise PodiumError(f"no conductor is running on {config.home}; nothing to reload")
    os.kill(pid, signal.SIGHUP)
    say(f"asked the conductor (pid {pid}) of {config.home} to reload its configuration")
    return 0


# ----- jobs -----------------------------------------------------------------------------------


def _started_note(config: PodiumConfig, started: bool, pid: int) -> None:
    if started:
        err.print(
            f"started the conductor of {config.home} (pid {pid}; `podium stop` stops it)",
            markup=False,
        )


@main.command()
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.option("--job-id", help="Job id.  [default: <name>-<timestamp>-<hex>]", show_default=False)
@click.option("--follow", is_flag=True, help="Also print each sheet's output as it settles.")
@click.option("--cancel-on-interrupt", is_flag=True, help="Ctrl-C cancels the job instead.")
@pass_ctx
@run_async
async def run(
    ctx: Context, spec: str, job_id: str | None, follow: bool, cancel_on_interrupt: bool
) -> int:
    """Submit SPEC to the conductor and follow it: exit 0 when the job completes, 1 when it
    fails or is cancelled. Ctrl-C (or SIGTERM) detaches; the job goes on."""
    from podium.server.follow import Follower
    from podium.server.remote import controller

    config = ctx.config()
    path = Path(spec).expanduser().resolve()
    # Signals are received from the start, so one that arrives while submitting still detaches
    # (after the submit answered) instead of killing the process with the job unreported.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with controller(config) as (remote, started):
            _started_note(config, started, remote.info.pid)
            submitted = await remote.submit_path(path, job_id)
            job = submitted["job_id"]
            sheets, workspace = submitted["total_sheets"], submitted["workspace"]
            say(f"job {job} ({sheets} sheets), workspace {workspace}")
            interrupted: int | None = None
            detail: dict[str, Any] | None = None
            async with anyio.create_task_group() as tg:

                async def on_signal() -> None:
                    nonlocal interrupted
                    async for signum in signals:
                        interrupted = signum
                        tg.cancel_scope.cancel()
                        return

                async def follow_job() -> None:
                    nonlocal detail
                    detail = await Follower(remote, job, out, show_output=follow).run()
                    tg.cancel_scope.cancel()

                tg.start_soon(on_signal)
                tg.start_soon(follow_job)
            return await _after_follow(remote, job, interrupted, detail, cancel_on_interrupt)


async def _after_follow(
    remote: Any,
    job: str,
    interrupted: int | None,
    detail: dict[str, Any] | None,
    cancel_on_interrupt: bool,
) -> int:
    if interrupted is not None:
        if cancel_on_interrupt:
            cancelled = await remote.call("cancel", {"job_id": job})
            say(f"\njob {job} {cancelled['status']}")
        else:
            say(
                f"\ndetached; job {job} goes on in the conductor.\n"
                f"  follow it:  podium status {job} --follow\n"
                f"  cancel it:  podium cancel {job}"
            )
        return 128 + interrupted
    assert detail is not None
    return 0 if detail["status"] == "completed" else EXIT_FAILED


@main.command(name="list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in JobStatus]),
    help="Only jobs in this status (repeat).",
)
@click.option("--name", help="Only jobs with this spec name.")
@click.option("--label", help="Only jobs carrying this label.")
@click.option("--limit", default=50, type=click.IntRange(1, 500), help="Jobs per page.")
@click.option("--cursor", help="Next page, from the previous page's last line.")
@json_option
@pass_ctx
@run_async
async def list_command(
    ctx: Context,
    statuses: tuple[str, ...],
    name: str | None,
    label: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> int:
    """List jobs, newest first."""
    from podium.server.remote import reader

    config = ctx.config()
    arguments: dict[str, Any] = {"limit": limit}
    for key, value in (("status", list(statuses)), ("name", name), ("label", label)):
        if value:
            arguments[key] = value
    if cursor:
        arguments["cursor"] = cursor
    async with reader(config) as (caller, info):
        listed = await caller.call("list_jobs", arguments)
    if as_json:
        emit_json(listed)
        return 0
    jobs = listed["jobs"]
    if not jobs:
        say("no jobs")
    else:
        rows = [("JOB", "STATUS", "SHEETS", "SUBMITTED", "COMPLETED")]
        for j in jobs:
            status = j["status"] + (f" ({j['pause_reason']})" if j.get("pause_reason") else "")
            sheets = f"{j['completed_sheets']}/{j['total_sheets']}"
            if j["failed_sheets"]:
                sheets += f" ({j['failed_sheets']} failed)"
            rows.append(
                (j["job_id"], status, sheets, _local(j["submitted_at"]), _local(j["completed_at"]))
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            say("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if listed.get("next_cursor"):
        say(f"more: podium list --cursor {listed['next_cursor']}")
    if info is None:
        err.print(f"(no conductor is running on {config.home}; read from the store)")
    return 0


def _local(value: str | None) -> str:
    """A stored UTC time as local time, to the second."""
    from podium.server.follow import parse_time

    when = parse_time(value)
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S") if when else "-"


@main.command()
@click.argument("job", required=False)
@click.option("--follow", is_flag=True, help="Follow the job live until it ends.")
@click.option("--sheet-limit", default=1000, type=click.IntRange(1, 1000), help="Sheets shown.")
@json_option
@pass_ctx
@run_async
async def status(
    ctx: Context, job: str | None, follow: bool, sheet_limit: int, as_json: bool
) -> int:
    """A job's status and sheets, or without JOB the conductor's."""
    from podium.server.follow import Follower, job_state, sheet_line
    from podium.server.remote import controller, reader

    config = ctx.config()
    if follow:
        if job is None:
            raise PodiumError("--follow needs a JOB (podium status JOB --follow)")
        async with controller(config) as (remote, started):
            _started_note(config, started, remote.info.pid)
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:

                    async def on_signal() -> None:
                        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
                            async for _ in sigs:
                                scope.cancel()
                                return

                    tg.start_soon(on_signal)
                    detail = await Follower(remote, job, out, show_output=False).run()
                    tg.cancel_scope.cancel()
            if scope.cancelled_caught:
                say(f"\ndetached; job {job} goes on")
                return 128 + signal.SIGINT
            return 0 if detail["status"] == "completed" else EXIT_FAILED
    async with reader(config) as (caller, info):
        if job is None:
            s = await caller.call("status", {})
            if as_json:
                emit_json({**s, "conductor_running": info is not None})
                return 0
            jobs = ", ".join(f"{k} {v}" for k, v in sorted(s["jobs_by_status"].items()))
            head = (
                f"conductor pid {s['pid']} ({info.url}), podium {s['version']}, up "
                f"{s['uptime_seconds']:.0f}s"
                if info is not None
                else "no conductor is running"
            )
            say(
                f"{head}\nhome: {s['home']}\njobs: {jobs or 'none'}\n"
                f"running sheets: {s['running_sheets']}\npressure: {s['pressure_level']}\n"
                "instruments: "
                + ", ".join(
                    i["name"] + ("" if i["available"] else " (not installed)")
                    for i in s["instruments"]
                )
            )
            return 0
        d = await caller.call(
            "status", {"job_id": job, "sheet_limit": sheet_limit, "include_spec": as_json}
        )
    if as_json:
        emit_json(d)
        return 0
    lines = [
        f"{d['job_id']}: {job_state(d)}",
        f"  {d['completed_sheets']}/{d['total_sheets']} sheets completed, workspace "
        f"{d['workspace']}",
    ]
    if d.get("error"):
        lines.append(f"  error: {d['error']}")
    lines += [sheet_line(s) for s in d["sheets"]]
    say("\n".join(lines))
    return 0


@main.command()
@click.argument("job")
@click.option(
    "--sheet",
    type=click.IntRange(min=1),
    help="Sheet number.  [default: every sheet]",
    show_default=False,
)
@click.option(
    "--attempt", type=click.IntRange(min=1), help="Attempt.  [default: latest]", show_default=False
)
@click.option("--tail", default=200, type=click.IntRange(1, 10_000), help="Lines from the end.")
@click.option("--follow", is_flag=True, help="Keep printing new output until the sheet ends.")
@json_option
@pass_ctx
@run_async
async def logs(
    ctx: Context,
    job: str,
    sheet: int | None,
    attempt: int | None,
    tail: int,
    follow: bool,
    as_json: bool,
) -> int:
    """A job's sheet logs: the latest attempt's tail, or every sheet's without --sheet."""
    from podium.server.remote import reader

    config = ctx.config()
    if follow and sheet is None:
        raise PodiumError("--follow needs --sheet N (one sheet's log grows at a time)")
    arguments: dict[str, Any] = {"job_id": job, "tail_lines": tail}
    if sheet is not None:
        arguments["sheet"] = sheet
    if attempt is not None:
        arguments["attempt"] = attempt
    async with reader(config) as (caller, _):
        chunk = await caller.call("logs", arguments)
        if as_json:
            emit_json(chunk)
            return 0
        if sheet is not None and chunk.get("attempt") is None and not follow:
            say(f"sheet {sheet} of {job} has not run yet: no attempt, no log")
            return 0
        sys.stdout.write(chunk["text"])
        sys.stdout.flush()
        if not follow:
            return 0
        offset = chunk.get("next_offset") or 0
        current = chunk.get("attempt")
        while True:
            detail = await caller.call(
                "status",
                {
                    "job_id": job,
                    "sheet_offset": (sheet or 1) - 1,
                    "sheet_limit": 1,
                    "wait_seconds": 1,
                },
            )
            page: dict[str, Any] = {"job_id": job, "sheet": sheet, "offset": offset}
            if current is not None:
                page["attempt"] = current
            chunk = await caller.call("logs", page)
            if chunk.get("attempt") != current and chunk.get("attempt") is not None:
                current, offset = chunk["attempt"], 0
                continue
            sys.stdout.write(chunk["text"])
            sys.stdout.flush()
            offset = chunk.get("next_offset") or offset
            ended = detail["sheets"] and detail["sheets"][0]["status"] in (
                "completed",
                "failed",
                "skipped",
                "cancelled",
            )
            if ended and not chunk["text"] and not chunk.get("truncated"):
                return 0


def _summary_text(summary: dict[str, Any]) -> str:
    state = summary["status"] + (
        f" ({summary['pause_reason']})" if summary.get("pause_reason") else ""
    )
    return f"{summary['job_id']}: {state}"


async def _control(ctx: Context, tool: str, arguments: dict[str, Any], as_json: bool) -> int:
    from podium.server.remote import controller

    config = ctx.config()
    async with controller(config) as (remote, started):
        _started_note(config, started, remote.info.pid)
        summary = await remote.call(tool, arguments)
    if as_json:
        emit_json(summary)
    else:
        say(_summary_text(summary))
    return 0


@main.command()
@click.argument("job")
@click.option("--immediate", is_flag=True, help="Freeze running sheets now (SIGSTOP).")
@json_option
@pass_ctx
@run_async
async def pause(ctx: Context, job: str, immediate: bool, as_json: bool) -> int:
    """Pause a job: no new sheets start; running ones finish (or freeze, --immediate)."""
    return await _control(ctx, "pause", {"job_id": job, "immediate": immediate}, as_json)


@main.command()
@click.argument("job")
@click.option("--spec", type=click.Path(exists=True, dir_okay=False), help="A changed spec file.")
@click.option("--no-retry-failed", is_flag=True, help="Do not re-run failed or skipped sheets.")
@json_option
@pass_ctx
@run_async
async def resume(
    ctx: Context, job: str, spec: str | None, no_retry_failed: bool, as_json: bool
) -> int:
    """Resume a paused, failed or cancelled job (completed sheets never re-run)."""
    arguments: dict[str, Any] = {"job_id": job, "retry_failed": not no_retry_failed}
    if spec is not None:
        arguments["spec_yaml"] = Path(spec).read_text()
    return await _control(ctx, "resume", arguments, as_json)


@main.command()
@click.argument("job")
@json_option
@pass_ctx
@run_async
async def cancel(ctx: Context, job: str, as_json: bool) -> int:
    """Cancel a job: running sheets and every process they started are ended."""
    return await _control(ctx, "cancel", {"job_id": job}, as_json)


@main.command()
@click.argument("jobs", nargs=-1)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(FINISHED),
    help="Only jobs in this status (repeat).",
)
@click.option("--older-than-hours", type=float, help="Only jobs finished this long ago.")
@click.option("--all", "all_jobs", is_flag=True, help="Every finished job.")
@click.option("--rate-limits", is_flag=True, help="Lift active rate limits instead.")
@click.option("--instrument", help="With --rate-limits: only this instrument.")
@json_option
@pass_ctx
@run_async
async def clear(
    ctx: Context,
    jobs: tuple[str, ...],
    statuses: tuple[str, ...],
    older_than_hours: float | None,
    all_jobs: bool,
    rate_limits: bool,
    instrument: str | None,
    as_json: bool,
) -> int:
    """Delete finished jobs with their logs and snapshots (never active jobs, never
    workspaces), or lift rate limits."""
    from podium.server.remote import controller

    config = ctx.config()
    async with controller(config) as (remote, started):
        _started_note(config, started, remote.info.pid)
        if rate_limits:
            args = {"instrument": instrument} if instrument else {}
            result = await remote.call("clear_rate_limits", args)
            if as_json:
                emit_json(result)
            else:
                say("lifted rate limits: " + (", ".join(result["cleared"]) or "none were active"))
            return 0
        arguments: dict[str, Any] = {"all": all_jobs}
        if jobs:
            arguments["job_ids"] = list(jobs)
        if statuses:
            arguments["statuses"] = list(statuses)
        if older_than_hours is not None:
            arguments["older_than_hours"] = older_than_hours
        result = await remote.call("clear", arguments)
    if as_json:
        emit_json(result)
        return 0
    text = f"deleted {result['deleted']} job(s)"
    if result.get("skipped_active"):
        text += f"; kept active: {', '.join(result['skipped_active'])}"
    if result.get("not_found"):
        text += f"; not found: {', '.join(result['not_found'])}"
    say(text)
    return 0


@main.command()
@click.argument("job", required=False)
@json_option
@pass_ctx
@run_async
async def snapshots(ctx: Context, job: str | None, as_json: bool) -> int:
    """Snapshots of finished jobs, newest first."""
    from podium.server.remote import reader

    async with reader(ctx.config()) as (caller, _):
        result = await caller.call("snapshots", {"job_id": job} if job else {})
    if as_json:
        emit_json(result)
        return 0
    snaps = result["snapshots"]
    if not snaps:
        say("no snapshots")
    for s in snaps:
        say(
            f"{s['job_id']}  {s['snapshot_id']}  {_local(s['created_at'])}  "
            f"{s['size_bytes']}B  {s['path']}"
        )
    return 0


@main.command()
@json_option
@pass_ctx
@run_async
async def instruments(ctx: Context, as_json: bool) -> int:
    """Instruments and whether each is installed (as the conductor sees them)."""
    from podium.core.instruments.catalog import InstrumentCatalog
    from podium.server.remote import reader

    config = ctx.config()
    async with reader(config) as (caller, info):
        if info is not None:
            rows = (await caller.call("status", {}))["instruments"]
            errors: list[str] = []
        else:
            catalog = await anyio.to_thread.run_sync(InstrumentCatalog.load, config.instruments_dir)
            rows = [
                {"name": i.name, "available": i.available, "version": i.version, "source": i.source}
                for i in catalog.all()
            ]
            errors = [str(e) for e in catalog.load_errors]
    if as_json:
        emit_json({"instruments": rows})
    else:
        for r in rows:
            version = f" ({r['version']})" if r.get("version") else ""
            state = "available" if r["available"] else "not installed"
            say(f"{r['name']:12} {state}{version}  [{r.get('source') or '?'}]")
    for error in errors:
        err.print(f"error: {error}", markup=False)
    return 0


@main.command()
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
        _started_note(config, started, remote.info.pid)
        return await run_top(remote, out, interval)


if __name__ == "__main__":
    main()

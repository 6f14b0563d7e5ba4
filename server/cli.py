"""The `podium` command line: the same core as the MCP tools, for people."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig, load_config
from podium.core.errors import PodiumError, SpecError
from podium.core.models import JobStatus, SheetState, SheetStatus
from podium.server.logging_setup import configure_logging


def _config(args: argparse.Namespace) -> PodiumConfig:
    return load_config(home=Path(args.home) if args.home else None, overrides=_overrides(args))


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if getattr(args, "allow_root", None):
        overrides["allowed_roots"] = [Path(p) for p in args.allow_root]
    for key in ("max_concurrent_sheets", "max_concurrent_jobs", "kill_grace_seconds"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    return overrides


@asynccontextmanager
async def _open(args: argparse.Namespace, *, read_only: bool) -> AsyncIterator[Conductor]:
    """Read commands read the store beside any running server; control commands need the
    home's lock (a running server owns it and the command says so, naming its pid)."""
    config = _config(args)
    configure_logging(config.logs_dir, level="WARNING")
    conductor = Conductor(config, dispatch=False, read_only=read_only)
    await conductor.start()
    try:
        yield conductor
    finally:
        await conductor.stop()


def _emit(args: argparse.Namespace, value: BaseModel | dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        print(json.dumps(data, indent=2))
    else:
        print(text)


def _sheet_line(sheet: SheetState) -> str:
    label = f"sheet {sheet.sheet_num}" + (f" ({sheet.name})" if sheet.name else "")
    status = sheet.status.value
    if sheet.status is SheetStatus.WAITING and sheet.waiting_reason is not None:
        status = f"waiting ({sheet.waiting_reason.value})"
    duration = f" in {sheet.duration_seconds:.1f}s" if sheet.duration_seconds is not None else ""
    attempts = f", {sheet.attempts} attempt(s)" if sheet.attempts else ""
    error = ""
    if sheet.last_error and sheet.status is not SheetStatus.COMPLETED:
        error = f": {sheet.last_error}"
    return f"  {label}: {status}{duration}{attempts}{error}"


# ----- run ------------------------------------------------------------------------------------


async def _run(args: argparse.Namespace) -> int:
    spec_path = Path(args.spec).expanduser().resolve()
    config = _config(args)
    configure_logging(config.logs_dir, level="WARNING")
    conductor = Conductor(config)
    await conductor.start()
    try:
        async with conductor.events.subscribe() as events:
            submitted = await conductor.submit_job(
                path=spec_path, job_id=args.job_id, extra_roots=[spec_path.parent]
            )
            job_id = submitted.job_id
            print(
                f"job {job_id} ({submitted.total_sheets} sheets), workspace {submitted.workspace}"
            )
            reported: dict[int, tuple[str, int]] = {}
            while True:
                detail = await conductor.get_job(job_id, sheet_limit=10_000)
                for sheet in detail.sheets:
                    key = (sheet.status.value, sheet.attempts)
                    settled = sheet.status.is_terminal or sheet.status is SheetStatus.WAITING
                    if settled and reported.get(sheet.sheet_num) != key:
                        reported[sheet.sheet_num] = key
                        print(_sheet_line(sheet), flush=True)
                        if args.follow and sheet.output_tail:
                            print("    | " + sheet.output_tail.rstrip().replace("\n", "\n    | "))
                if detail.status.is_terminal:
                    extra = f": {detail.error}" if detail.error else ""
                    print(f"job {job_id} {detail.status.value}{extra}")
                    return 0 if detail.status is JobStatus.COMPLETED else 1
                with anyio.move_on_after(2):
                    async for event in events:
                        if event.job_id == job_id:
                            break
    finally:
        await conductor.stop()


# ----- serve ----------------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> int:
    from podium.server.serve import HttpOptions, serve

    config = _config(args)
    configure_logging(config.logs_dir, level=args.log_level)
    options = HttpOptions(
        host=args.host,
        port=args.port,
        token=args.token or os.environ.get("PODIUM_TOKEN") or None,
        allowed_hosts=args.allowed_host or [],
    )
    await serve(config, args.transport, options, overrides=_overrides(args))
    return 0


async def _reload(args: argparse.Namespace) -> int:
    """Ask the conductor that owns the home to re-read its configuration (SIGHUP)."""
    from podium.core.home import HomeLock, read_lock_owner

    config = _config(args)
    lock = HomeLock(config.lock_path)
    try:
        lock.acquire()
    except PodiumError:
        pid = read_lock_owner(config.lock_path)
        if pid is None:
            raise PodiumError(f"cannot tell which process owns {config.home}") from None
        os.kill(pid, signal.SIGHUP)
        print(f"asked the conductor (pid {pid}) of {config.home} to reload its configuration")
        return 0
    lock.release()
    raise PodiumError(f"no conductor is running on {config.home}; nothing to reload")


# ----- read commands --------------------------------------------------------------------------


async def _list(args: argparse.Namespace) -> int:
    async with _open(args, read_only=True) as c:
        statuses = [JobStatus(s) for s in args.status or []]
        jobs, cursor = await c.list_jobs(
            statuses=statuses,
            name=args.name,
            label=args.label,
            limit=args.limit,
            cursor=args.cursor,
        )
        lines = [
            f"{j.job_id:48} {j.status.value:10} {j.completed_sheets}/{j.total_sheets}"
            f"{' failed=' + str(j.failed_sheets) if j.failed_sheets else ''}"
            for j in jobs
        ] or ["no jobs"]
        if cursor:
            lines.append(f"more: podium list --cursor {cursor}")
        _emit(
            args,
            {"jobs": [j.model_dump(mode="json") for j in jobs], "next_cursor": cursor},
            "\n".join(lines),
        )
    return 0


async def _status(args: argparse.Namespace) -> int:
    async with _open(args, read_only=True) as c:
        if args.job is None:
            s = await c.status()
            text = (
                f"podium {s.version} home {s.home}\njobs: "
                + (", ".join(f"{k}={v}" for k, v in sorted(s.jobs_by_status.items())) or "none")
                + f"\nrunning sheets: {s.running_sheets}\ninstruments: "
                + ", ".join(f"{i.name}{'' if i.available else ' (missing)'}" for i in s.instruments)
            )
            _emit(args, s, text)
            return 0
        d = await c.get_job(args.job, sheet_limit=args.sheet_limit, include_spec=args.json)
        head = f"{d.job_id}: {d.status.value}" + (
            f" ({d.pause_reason.value})" if d.pause_reason else ""
        )
        lines = [
            head,
            f"  {d.completed_sheets}/{d.total_sheets} sheets completed, workspace {d.workspace}",
        ]
        if d.error:
            lines.append(f"  error: {d.error}")
        lines += [_sheet_line(s) for s in d.sheets]
        _emit(args, d, "\n".join(lines))
    return 0


async def _logs(args: argparse.Namespace) -> int:
    async with _open(args, read_only=True) as c:
        chunk = await c.read_logs(
            args.job, sheet=args.sheet, attempt=args.attempt, tail_lines=args.tail
        )
        sys.stdout.write(chunk.text)
        if not args.follow or args.sheet is None:
            return 0
        offset = chunk.next_offset or 0
        while True:
            await anyio.sleep(0.5)
            chunk = await c.read_logs(
                args.job, sheet=args.sheet, attempt=chunk.attempt, offset=offset
            )
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            offset = chunk.next_offset or offset
            detail = await c.get_job(args.job, sheet_limit=1, sheet_offset=args.sheet - 1)
            if detail.sheets and detail.sheets[0].status.is_terminal and not chunk.text:
                return 0


async def _snapshots(args: argparse.Namespace) -> int:
    async with _open(args, read_only=True) as c:
        snaps = await c.list_snapshots(args.job)
        text = "\n".join(f"{s.job_id} {s.snapshot_id} {s.size_bytes}B {s.path}" for s in snaps)
        _emit(
            args, {"snapshots": [s.model_dump(mode="json") for s in snaps]}, text or "no snapshots"
        )
    return 0


async def _instruments(args: argparse.Namespace) -> int:
    from podium.core.instruments.catalog import InstrumentCatalog
    from podium.core.views import InstrumentView

    config = _config(args)
    catalog = await anyio.to_thread.run_sync(InstrumentCatalog.load, config.instruments_dir)
    rows = [InstrumentView.from_info(i).model_dump(mode="json") for i in catalog.all()]
    match = {True: "matches", False: "DIFFERS", None: "unknown"}
    text = "\n".join(
        f"{r['name']:12} {'available' if r['available'] else 'not installed'}"
        f"{' (' + str(r['version']) + ')' if r['version'] else ''}  [{r['source']}]"
        f"\n{'':12} written for {r['written_for'] or '?'}: {match[r['version_matches']]}"
        for r in rows
    )
    _emit(args, {"instruments": rows}, text)
    for error in catalog.load_errors:
        print(f"error: {error}", file=sys.stderr)
    return 0


# ----- control commands -----------------------------------------------------------------------


async def _control(args: argparse.Namespace) -> int:
    async with _open(args, read_only=False) as c:
        if args.command == "pause":
            summary = await c.pause_job(args.job, immediate=args.immediate)
        elif args.command == "resume":
            summary = await c.resume_job(
                args.job, path=args.spec, retry_failed=not args.no_retry_failed
            )
        else:
            summary = await c.cancel_job(args.job)
        note = ""
        if args.command == "resume" and not summary.status.is_terminal:
            note = "\n(no server is running on this home: the job runs when `podium serve` starts)"
        _emit(args, summary, f"{summary.job_id}: {summary.status.value}{note}")
    return 0


async def _clear(args: argparse.Namespace) -> int:
    async with _open(args, read_only=False) as c:
        if args.rate_limits:
            cleared = await c.clear_rate_limits(args.instrument)
            _emit(args, {"cleared": cleared}, "cleared: " + (", ".join(cleared) or "none"))
            return 0
        result = await c.clear_jobs(
            job_ids=args.jobs or None,
            statuses=[JobStatus(s) for s in args.status or []] or None,
            older_than_hours=args.older_than_hours,
            all_jobs=args.all,
        )
        text = f"deleted {result.deleted} job(s)" + (
            f"; kept active: {', '.join(result.skipped_active)}" if result.skipped_active else ""
        )
        _emit(args, result, text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="podium", description="Durable job orchestration for AI agents (MCP server + CLI)"
    )
    parser.add_argument("--home", help="Podium home (default $PODIUM_HOME or ~/.podium)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    serve.add_argument("--transport", choices=["stdio", "sse", "streamable-http"], default="stdio")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--token", help="bearer token required on HTTP (or PODIUM_TOKEN)")
    serve.add_argument("--allowed-host", action="append", help="Host header to accept (repeat)")
    serve.add_argument("--allow-root", action="append", help="extra allowed workspace root")
    serve.add_argument("--log-level", default="INFO")
    serve.set_defaults(handler=_serve)

    run = sub.add_parser("run", help="run a job spec in this process; exit 0 if it completes")
    run.add_argument("spec", help="path to a job spec (YAML or JSON)")
    run.add_argument("--job-id", help="job id (default <name>-<timestamp>-<hex>)")
    run.add_argument("--follow", action="store_true", help="also print each sheet's output")
    run.add_argument("--allow-root", action="append", help="extra allowed workspace root")
    run.add_argument("--max-concurrent-sheets", type=int)
    run.set_defaults(handler=_run)

    listing = sub.add_parser("list", help="list jobs, newest first")
    listing.add_argument("--status", action="append", choices=[s.value for s in JobStatus])
    listing.add_argument("--name")
    listing.add_argument("--label")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--cursor")
    listing.set_defaults(handler=_list)

    status = sub.add_parser("status", help="a job's status, or the conductor's")
    status.add_argument("job", nargs="?")
    status.add_argument("--sheet-limit", type=int, default=1000)
    status.set_defaults(handler=_status)

    logs = sub.add_parser("logs", help="a job's sheet logs")
    logs.add_argument("job")
    logs.add_argument("--sheet", type=int)
    logs.add_argument("--attempt", type=int)
    logs.add_argument("--tail", type=int, default=200)
    logs.add_argument("--follow", action="store_true", help="keep printing (needs --sheet)")
    logs.set_defaults(handler=_logs)

    for name, help_text in (
        ("pause", "pause a job"),
        ("resume", "resume a paused, failed or cancelled job"),
        ("cancel", "cancel a job"),
    ):
        control = sub.add_parser(name, help=help_text)
        control.add_argument("job")
        if name == "pause":
            control.add_argument("--immediate", action="store_true")
        if name == "resume":
            control.add_argument("--spec", help="a changed spec file")
            control.add_argument("--no-retry-failed", action="store_true")
        control.set_defaults(handler=_control)

    clear = sub.add_parser("clear", help="delete finished jobs, or lift rate limits")
    clear.add_argument("jobs", nargs="*")
    clear.add_argument("--status", action="append", choices=["completed", "failed", "cancelled"])
    clear.add_argument("--older-than-hours", type=float)
    clear.add_argument("--all", action="store_true")
    clear.add_argument("--rate-limits", action="store_true", help="lift rate limits instead")
    clear.add_argument("--instrument", help="with --rate-limits: only this instrument")
    clear.set_defaults(handler=_clear)

    snapshots = sub.add_parser("snapshots", help="list snapshots")
    snapshots.add_argument("job", nargs="?")
    snapshots.set_defaults(handler=_snapshots)

    reload = sub.add_parser("reload", help="make the running conductor re-read config.yaml")
    reload.set_defaults(handler=_reload)

    instruments = sub.add_parser("instruments", help="list instruments and their availability")
    instruments.set_defaults(handler=_instruments)

    for command in (
        listing,
        status,
        logs,
        snapshots,
        instruments,
        clear,
        *[sub.choices[n] for n in ("pause", "resume", "cancel")],
    ):
        command.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = anyio.run(args.handler, args)
        return code
    except SpecError as exc:
        print(f"podium: invalid job spec ({len(exc.errors)} problem(s)):", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return 2
    except PodiumError as exc:
        print(f"podium: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())

"""`podium run`, `list`, `status` and `logs`: submitting and following jobs, through the
home's conductor (changing them is cli_control's)."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import click

from podium.core.errors import PodiumError, SpecError
from podium.core.models import JobStatus
from podium.server.cli_base import (
    EXIT_FAILED,
    Context,
    connection_lost,
    emit_json,
    err,
    json_option,
    local_time,
    lost_while_following,
    out,
    pass_ctx,
    run_async,
    say,
    started_note,
)

# ----- jobs -----------------------------------------------------------------------------------


@click.command()
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
    job: str | None = None
    try:
        # Signals are received from the start, so one that arrives while submitting still
        # detaches (after the submit answered) instead of killing the process with the job
        # unreported.
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with controller(config) as (remote, started):
                started_note(config, started, remote.info.pid)
                submitted = await _submit(remote, path, job_id)
                job = submitted["job_id"]
                sheets, workspace = submitted["total_sheets"], submitted["workspace"]
                noun = "sheet" if sheets == 1 else "sheets"
                say(f"job {job} ({sheets} {noun}), workspace {workspace}")
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
                        assert job is not None
                        detail = await Follower(remote, job, out, show_output=follow).run()
                        tg.cancel_scope.cancel()

                    tg.start_soon(on_signal)
                    tg.start_soon(follow_job)
                return await _after_follow(remote, job, interrupted, detail, cancel_on_interrupt)
    except BaseException as exc:
        if job is not None and connection_lost(exc):
            return lost_while_following(job)
        raise


async def _submit(remote: Any, path: Path, job_id: str | None) -> dict[str, Any]:
    try:
        submitted: dict[str, Any] = await remote.submit_path(path, job_id)
    except SpecError:
        raise
    except PodiumError as exc:
        # The conductor names its argument, job_id, which here is the option --job-id (not
        # the JOB of the other commands).
        if not str(exc).startswith("job_id:"):
            raise
        raise PodiumError(re.sub(r"\bjob_id\b", "--job-id", str(exc))) from exc
    return submitted


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


@click.command(name="list")
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
    from podium.server.remote import LocalReader, reader

    config = ctx.config()
    arguments: dict[str, Any] = {"limit": limit}
    for key, value in (("status", list(statuses)), ("name", name), ("label", label)):
        if value:
            arguments[key] = value
    if cursor:
        arguments["cursor"] = cursor
    async with reader(config) as (caller, _):
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
                (
                    j["job_id"],
                    status,
                    sheets,
                    local_time(j["submitted_at"]),
                    local_time(j["completed_at"]),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            say("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if listed.get("next_cursor"):
        say(f"more: podium list --cursor {listed['next_cursor']}")
    if isinstance(caller, LocalReader):
        err.print(f"({caller.note(config.home)})", markup=False)
    return 0


@click.command()
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
    from podium.server.follow import Follower, follow_up_line, job_state, sheet_line, usage_line
    from podium.server.remote import controller, reader

    config = ctx.config()
    if follow:
        if job is None:
            raise PodiumError("--follow needs a JOB (podium status JOB --follow)")
        try:
            async with controller(config) as (remote, started):
                started_note(config, started, remote.info.pid)
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
        except BaseException as exc:
            if connection_lost(exc):
                return lost_while_following(job)
            raise
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
            peers = s.get("conductors") or []
            if peers:
                head += "\nconductors on the shared store: " + ", ".join(
                    p["conductor_id"]
                    + (" (this one)" if p["conductor_id"] == s.get("conductor_id") else "")
                    + (f" [{' '.join(p['labels'])}]" if p["labels"] else "")
                    + f" on {p['host']}"
                    for p in peers
                )
            say(
                f"{head}\nhome: {s['home']}\n"
                + (f"store: {s['store']}\n" if s.get("store") else "")
                + f"jobs: {jobs or 'none'}\n"
                f"running sheets: {s['running_sheets']}\npressure: {s['pressure_level']}\n"
                "instruments: "
                + ", ".join(
                    i["name"] + ("" if i["available"] else " (not installed)")
                    for i in s["instruments"]
                )
                + "".join(
                    f"\nprofile not used: {e['path']}: {e['message']}"
                    for e in s.get("instrument_errors") or []
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
    if d.get("waiting_for_host"):
        lines.append(f"  waiting for a host: {d['waiting_for_host']}")
    if d.get("chained_from"):
        lines.append(f"  chained from: {d['chained_from']} (depth {d.get('chain_depth', 0)})")
    if follow_up := d.get("follow_up"):
        lines.append(f"  {follow_up_line(follow_up)}")
    if usage := usage_line(d):
        lines.append(f"  {usage}")
    lines += [sheet_line(s) for s in d["sheets"]]
    say("\n".join(lines))
    return 0


@click.command()
@click.argument("job")
@click.option(
    "--sheet",
    help="Sheet number or name.  [default: every sheet]",
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
    sheet: str | None,
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
        # As `approve`: ASCII digits are a number (the tool checks its range), else a name.
        arguments["sheet"] = int(sheet) if sheet.isascii() and sheet.isdigit() else sheet
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
        # The number the tool resolved a name to: status pages sheets by number.
        num: int = chunk["sheet_num"]
        while True:
            detail = await caller.call(
                "status",
                {
                    "job_id": job,
                    "sheet_offset": num - 1,
                    "sheet_limit": 1,
                    "wait_seconds": 1,
                },
            )
            page: dict[str, Any] = {"job_id": job, "sheet": num, "offset": offset}
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

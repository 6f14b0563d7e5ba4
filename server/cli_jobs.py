"""`podium run`, `list`, `status`, `logs`, `pause`, `resume`, `cancel`, `approve`, `clear`,
`snapshots` and `instruments`: jobs, through the home's conductor."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import click

from podium.core.errors import PodiumError
from podium.core.models import JobStatus
from podium.server.cli_base import (
    EXIT_FAILED,
    FINISHED,
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
    if info is None:
        err.print(f"(no conductor is running on {config.home}; read from the store)", markup=False)
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
    from podium.server.follow import Follower, job_state, sheet_line, usage_line
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


def _summary_text(summary: dict[str, Any]) -> str:
    state = summary["status"] + (
        f" ({summary['pause_reason']})" if summary.get("pause_reason") else ""
    )
    return f"{summary['job_id']}: {state}"


async def _control(
    ctx: Context,
    tool: str,
    arguments: dict[str, Any],
    as_json: bool,
    argument_words: dict[str, str] | None = None,
) -> int:
    """Call a control tool; `argument_words` renames fields in its errors to this command's
    own arguments (e.g. `sheet:` -> `SHEET:` where the sheet is positional)."""
    from podium.server.remote import controller

    config = ctx.config()
    async with controller(config) as (remote, started):
        started_note(config, started, remote.info.pid)
        try:
            summary = await remote.call(tool, arguments)
        except PodiumError as exc:
            if not argument_words:
                raise
            text = str(exc)
            for field, word in argument_words.items():
                text = re.sub(rf"^{field}:", f"{word}:", text, flags=re.MULTILINE)
            raise PodiumError(text) from exc
    if as_json:
        emit_json(summary)
    else:
        say(_summary_text(summary))
    return 0


@click.command()
@click.argument("job")
@click.option("--immediate", is_flag=True, help="Freeze running sheets now (SIGSTOP).")
@json_option
@pass_ctx
@run_async
async def pause(ctx: Context, job: str, immediate: bool, as_json: bool) -> int:
    """Pause a job: no new sheets start; running ones finish (or freeze, --immediate)."""
    return await _control(ctx, "pause", {"job_id": job, "immediate": immediate}, as_json)


@click.command()
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


@click.command()
@click.argument("job")
@json_option
@pass_ctx
@run_async
async def cancel(ctx: Context, job: str, as_json: bool) -> int:
    """Cancel a job: running sheets and every process they started are ended."""
    return await _control(ctx, "cancel", {"job_id": job}, as_json)


@click.command()
@click.argument("job", required=False)
@click.argument("sheet", required=False)
@click.option("--reject", is_flag=True, help="Reject instead of approve (the sheet fails).")
@click.option("--note", help="Why; recorded in the job's history with the decision.")
@click.option("--list", "list_pending", is_flag=True, help="List pending approvals instead.")
@json_option
@pass_ctx
@run_async
async def approve(
    ctx: Context,
    job: str | None,
    sheet: str | None,
    reject: bool,
    note: str | None,
    list_pending: bool,
    as_json: bool,
) -> int:
    """Approve (or --reject) approval sheet SHEET (number or name) of JOB, which waits for a
    decision; without arguments (or with --list), list the approvals that wait."""
    if list_pending or job is None:
        return await _list_approvals(ctx, as_json)
    if sheet is None:
        raise click.UsageError("give JOB and SHEET (number or name), or --list")
    arguments: dict[str, Any] = {
        "job_id": job,
        "sheet": int(sheet) if sheet.isdigit() else sheet,
        "decision": "reject" if reject else "approve",
    }
    if note is not None:
        arguments["note"] = note
    return await _control(ctx, "approve", arguments, as_json, argument_words={"sheet": "SHEET"})


async def _list_approvals(ctx: Context, as_json: bool) -> int:
    from podium.server.remote import reader

    async with reader(ctx.config()) as (remote, _):
        status = await remote.call("status", {})
    pending = status.get("pending_approvals") or []
    if as_json:
        emit_json({"approvals": pending, "total": status.get("pending_approvals_total", 0)})
        return 0
    if not pending:
        say("no approvals are waiting")
        return 0
    for item in pending:
        label = f"{item['sheet_num']}" + (f" ({item['name']})" if item.get("name") else "")
        until = local_time(item.get("expires_at"))
        say(f"{item['job_id']} sheet {label}, until {until}: {item['question']}")
    more = int(status.get("pending_approvals_total", 0)) - len(pending)
    if more > 0:
        say(f"... and {more} more (podium://approvals lists up to 500)")
    return 0


@click.command()
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
        started_note(config, started, remote.info.pid)
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


@click.command()
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
            f"{s['job_id']}  {s['snapshot_id']}  {local_time(s['created_at'])}  "
            f"{s['size_bytes']}B  {s['path']}"
        )
    return 0


@click.command()
@json_option
@pass_ctx
@run_async
async def instruments(ctx: Context, as_json: bool) -> int:
    """Instruments and whether each is installed (as the conductor sees them)."""
    from podium.core.instruments.catalog import InstrumentCatalog
    from podium.core.views import InstrumentView
    from podium.server.remote import reader

    config = ctx.config()
    rows: list[dict[str, Any]] | None = None
    errors: list[str] = []
    if config.home.exists():  # else nothing runs there, and the built-ins are the answer
        async with reader(config) as (caller, info):
            if info is not None:
                rows = (await caller.call("status", {}))["instruments"]
    if rows is None:
        catalog = await anyio.to_thread.run_sync(InstrumentCatalog.load, config.instruments_dir)
        rows = [InstrumentView.from_info(i).model_dump(mode="json") for i in catalog.all()]
        errors = [str(e) for e in catalog.load_errors]
    if as_json:
        emit_json({"instruments": rows})
    else:
        match = {True: "matches", False: "DIFFERS", None: "unknown"}
        for r in rows:
            version = f" ({r['version']})" if r.get("version") else ""
            state = "available" if r["available"] else "not installed"
            say(f"{r['name']:12} {state}{version}  [{r.get('source') or '?'}]")
            written = r.get("written_for") or "?"
            say(f"{'':12} written for {written}: {match[r.get('version_matches')]}")
    for error in errors:
        err.print(f"error: {error}", markup=False)
    return 0

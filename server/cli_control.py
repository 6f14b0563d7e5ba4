"""`podium pause`, `resume`, `cancel`, `approve`, `clear`, `snapshots` and `instruments`:
changing jobs (and reading what is kept of them), through the home's conductor."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import click

from podium.core.errors import PodiumError
from podium.server.cli_base import (
    FINISHED,
    Context,
    emit_json,
    err,
    json_option,
    local_time,
    pass_ctx,
    run_async,
    say,
    started_note,
)


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
    away = result.get("elsewhere") or []
    if not snaps:
        say("no snapshots" + (" in this conductor's home" if away else ""))
    for s in snaps:
        say(
            f"{s['job_id']}  {s['snapshot_id']}  {local_time(s['created_at'])}  "
            f"{s['size_bytes']}B  {s['path']}"
        )
    if away:
        say("taken by other conductors on the shared store (list them there):")
    for s in away:
        when = local_time(s["created_at"]) if s.get("created_at") else "-"
        say(f"  {s['job_id']}  {when}  {s['path']}")
    return 0


def changed_since_loaded(
    loaded: list[dict[str, Any]], now: dict[str, str | None]
) -> list[dict[str, str]]:
    """The user profile files that differ from what the conductor read (each `path` and
    `change`: modified, added or removed), in path order."""
    then = {f["path"]: f.get("sha256") for f in loaded}
    changes = []
    for path in sorted({*then, *now}):
        if path not in now:
            changes.append({"path": path, "change": "removed"})
        elif path not in then:
            changes.append({"path": path, "change": "added"})
        elif now[path] != then[path] or now[path] is None:
            changes.append({"path": path, "change": "modified"})
    return changes


_CHANGE_WORDS = {
    "modified": "changed since the conductor read it",
    "added": "added since the conductor read its profiles",
    "removed": "removed since the conductor read it",
}


@click.command()
@json_option
@pass_ctx
@run_async
async def instruments(ctx: Context, as_json: bool) -> int:
    """Instruments and whether each is installed: the running conductor's view (what it
    loaded at its start or last reload, with a note for each profile file changed since),
    else the profiles on disk now."""
    from podium.core.instruments.catalog import InstrumentCatalog, profile_file_digests
    from podium.core.views import InstrumentView
    from podium.server.remote import reader

    config = ctx.config()
    status: dict[str, Any] | None = None
    if config.home.exists():  # else nothing runs there, and the built-ins are the answer
        async with reader(config) as (caller, info):
            if info is not None:
                status = await caller.call("status", {})
    changed: list[dict[str, str]] = []
    loaded_at: str | None = None
    if status is None:
        catalog = await anyio.to_thread.run_sync(InstrumentCatalog.load, config.instruments_dir)
        rows = [InstrumentView.from_info(i).model_dump(mode="json") for i in catalog.all()]
        errors = [{"path": p.path, "message": p.message} for p in catalog.problems]
    else:
        rows = status["instruments"]
        errors = status.get("instrument_errors") or []
        loaded_at = status.get("instruments_loaded_at")
        if loaded_at is not None:  # else a conductor too old to say what it read
            now = await anyio.to_thread.run_sync(profile_file_digests, config.instruments_dir)
            changed = changed_since_loaded(status.get("instrument_files") or [], now)
    if as_json:
        emit_json(
            {
                "instruments": rows,
                "instrument_errors": errors,
                "conductor_running": status is not None,
                "instruments_loaded_at": loaded_at,
                "changed_since_loaded": changed,
            }
        )
    else:
        match = {True: "matches", False: "DIFFERS", None: "unknown"}
        for r in rows:
            version = f" ({r['version']})" if r.get("version") else ""
            state = "available" if r["available"] else "not installed"
            say(f"{r['name']:12} {state}{version}  [{r.get('source') or '?'}]")
            if r.get("unavailable_reason"):
                say(f"{'':12} {r['unavailable_reason']}")
            if r.get("written_for"):
                say(f"{'':12} written for {r['written_for']}: {match[r.get('version_matches')]}")
    for error in errors:
        err.print(f"error: instrument profile {error['path']}: {error['message']}", markup=False)
    for change in changed:
        err.print(
            f"note: {change['path']}: {_CHANGE_WORDS[change['change']]} (at "
            f"{local_time(loaded_at)}); what is shown is what the conductor uses until "
            "`podium reload` makes it read the profiles again",
            markup=False,
        )
    return 0

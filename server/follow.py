"""Following a job from the CLI (`podium run`, `podium status JOB --follow`).

On a terminal: a live `rich` view that refreshes in place, a bar for the job and a line per
running or waiting sheet, with each sheet's outcome printed above it as it settles. Elsewhere
(a pipe, a file, CI): one plain line per settled sheet. Both end with `job JOB STATUS`.
The job is read with the `status` tool's bounded long-poll, so every change shows within a
second without a tight loop.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from podium.server.remote import Caller

TERMINAL_JOB = {"completed", "failed", "cancelled"}
SETTLED_SHEET = {"completed", "failed", "skipped", "cancelled", "waiting"}
POLL_WAIT_SECONDS = 1.0
SHEET_PAGE = 1000


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def since(value: str | None) -> str:
    started = parse_time(value)
    if started is None:
        return ""
    return duration((datetime.now(UTC) - started).total_seconds())


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def sheet_label(sheet: dict[str, Any]) -> str:
    return f"sheet {sheet['sheet_num']}" + (f" ({sheet['name']})" if sheet.get("name") else "")


def sheet_status(sheet: dict[str, Any]) -> str:
    status: str = sheet["status"]
    if status == "waiting" and sheet.get("waiting_reason"):
        status = f"waiting ({sheet['waiting_reason']})"
        if sheet.get("waiting_until"):
            status += f" until {sheet['waiting_until']}"
    return status


def sheet_error(sheet: dict[str, Any]) -> str:
    """The sheet's last error, without a repeat of its status ("skipped: skipped: ...")."""
    error: str | None = sheet.get("last_error")
    if not error or sheet["status"] == "completed":
        return ""
    prefix = f"{sheet['status']}: "
    return error[len(prefix) :] if error.startswith(prefix) else error


def sheet_line(sheet: dict[str, Any]) -> str:
    took = duration(sheet.get("duration_seconds"))
    attempts = sheet.get("attempts") or 0
    parts = [f"  {sheet_label(sheet)}: {sheet_status(sheet)}"]
    if took:
        parts.append(f" in {took}")
    if attempts:
        parts.append(f", {attempts} attempt(s)")
    if error := sheet_error(sheet):
        parts.append(f": {error}")
    return "".join(parts)


def job_state(detail: dict[str, Any]) -> str:
    state: str = detail["status"]
    if detail.get("pause_reason"):
        state += f" ({detail['pause_reason']})"
    return state


def usage_line(detail: dict[str, Any]) -> str | None:
    """What the job's attempts cost and used, as its instruments reported it; None when
    none reported anything."""
    parts = []
    cost = detail.get("cost_usd")
    limit = detail.get("cost_limit_usd")
    if cost is not None:
        parts.append(f"cost ${cost:.4f}" + (f" of a ${limit:g} limit" if limit else ""))
    elif limit:
        parts.append(f"cost limit ${limit:g}")
    tokens = [
        f"{detail[key]:,} {label}"
        for key, label in (
            ("input_tokens", "in"),
            ("output_tokens", "out"),
            ("cache_read_tokens", "cache read"),
            ("cache_write_tokens", "cache write"),
        )
        if detail.get(key) is not None
    ]
    if tokens:
        parts.append("tokens " + ", ".join(tokens))
    return "; ".join(parts) if parts else None


def follow_up_line(follow_up: dict[str, Any]) -> str:
    """`follow-up: <status> <job id or why not>`, from a job detail's `follow_up`."""
    status = follow_up["status"]
    if status == "submitted":
        return f"follow-up: submitted {follow_up.get('job_id')}"
    if status == "chain_ended":
        return "follow-up: chain_ended (the chain reached its max_chain)"
    line = f"follow-up: {status}: {follow_up.get('error') or 'no reason recorded'}"
    if status == "refused" and follow_up.get("path"):
        line += f" (spec {follow_up['path']})"
    elif status == "deferred":
        line += "; tried again while the conductor runs"
    return line


def final_line(detail: dict[str, Any]) -> str:
    extra = f": {detail['error']}" if detail.get("error") else ""
    usage = usage_line(detail)
    return f"job {detail['job_id']} {detail['status']}{extra}" + (f" ({usage})" if usage else "")


class Follower:
    def __init__(self, caller: Caller, job_id: str, console: Console, show_output: bool) -> None:
        self.caller = caller
        self.job_id = job_id
        self.console = console
        self.show_output = show_output
        self._reported: dict[int, tuple[str, int]] = {}
        self._last_state: str | None = None

    async def _read(self, wait: bool) -> dict[str, Any]:
        arguments: dict[str, Any] = {"job_id": self.job_id, "sheet_limit": SHEET_PAGE}
        if wait:
            arguments["wait_seconds"] = POLL_WAIT_SECONDS
        return await self.caller.call("status", arguments)

    def _settled_lines(self, detail: dict[str, Any]) -> list[str]:
        lines = []
        for sheet in detail["sheets"]:
            key = (sheet["status"], sheet.get("attempts") or 0)
            if sheet["status"] in SETTLED_SHEET and self._reported.get(sheet["sheet_num"]) != key:
                self._reported[sheet["sheet_num"]] = key
                lines.append(sheet_line(sheet))
                tail = sheet.get("output_tail")
                if self.show_output and tail and sheet["status"] != "waiting":
                    lines.append("    | " + tail.rstrip().replace("\n", "\n    | "))
        state = job_state(detail)
        if state != self._last_state:
            if detail["status"] == "paused":
                lines.append(
                    f"job {self.job_id} {state}: continue it with `podium resume {self.job_id}` "
                    "(still following; Ctrl-C detaches)"
                )
            self._last_state = state
        return lines

    async def run(self) -> dict[str, Any]:
        """Follow until the job ends; returns its final detail."""
        if self.console.is_terminal:
            return await self._live()
        detail = await self._read(wait=False)
        while True:
            for line in self._settled_lines(detail):
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)
            if detail["status"] in TERMINAL_JOB:
                self.console.print(
                    final_line(detail), markup=False, highlight=False, soft_wrap=True
                )
                return detail
            detail = await self._read(wait=True)

    async def _live(self) -> dict[str, Any]:
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[state]}"),
            console=self.console,
        )
        detail = await self._read(wait=False)
        task = progress.add_task(self.job_id, total=detail["total_sheets"], state="")
        with Live(
            self._view(progress, task, detail), console=self.console, refresh_per_second=4
        ) as live:
            while True:
                for line in self._settled_lines(detail):
                    live.console.print(line, markup=False, highlight=False, soft_wrap=True)
                live.update(self._view(progress, task, detail))
                if detail["status"] in TERMINAL_JOB:
                    break
                detail = await self._read(wait=True)
        self.console.print(final_line(detail), markup=False, highlight=False, soft_wrap=True)
        return detail

    def _view(self, progress: Progress, task: TaskID, detail: dict[str, Any]) -> Group:
        done = detail["completed_sheets"] + detail["failed_sheets"]
        progress.update(task, completed=done, state=job_state(detail))
        running = Table.grid(padding=(0, 2))
        for sheet in detail["sheets"]:
            if sheet["status"] in ("running", "waiting"):
                attempt = sheet.get("attempts") or 0
                running.add_row(
                    Text(f"  {sheet_label(sheet)}"),
                    Text(sheet_status(sheet), style="cyan"),
                    Text(since(sheet.get("started_at"))),
                    Text(f"attempt {attempt}" if attempt else ""),
                )
        return Group(progress, running)

"""`podium top`: a live view of what the conductor is doing, refreshed in place until `q` or
Ctrl-C: the conductor (pressure, memory, processes), rate limits, active jobs with their
progress, and every running or waiting sheet."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import Iterator

import anyio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from podium.server.follow import duration, sheet_label, sheet_status, since
from podium.server.remote import Caller

ACTIVE = ["running", "queued", "paused"]
JOB_ROWS = 20
SHEET_ROWS = 40


async def snapshot(caller: Caller) -> Group:
    status = await caller.call("status", {})
    jobs = (await caller.call("list_jobs", {"status": ACTIVE, "limit": JOB_ROWS}))["jobs"]
    header = Text(
        f"podium {status['version']}  pid {status['pid']}  up {duration(status['uptime_seconds'])}"
        f"  home {status['home']}\n"
        f"pressure {status['pressure_level']}"
        + (f" ({status['pressure_reason']})" if status.get("pressure_reason") else "")
        + f"  memory {status.get('memory_mb') or 0:.0f} MB"
        + f"  processes {status.get('processes') or 0}"
        + f"  running sheets {status['running_sheets']}"
        + "  jobs "
        + (", ".join(f"{k} {v}" for k, v in sorted(status["jobs_by_status"].items())) or "none")
    )
    limits = status.get("rate_limits") or []
    limit_text = Text(
        "rate limits: "
        + (", ".join(f"{r['instrument']} until {r['until']}" for r in limits) or "none")
    )
    job_table = Table(title="jobs", title_justify="left", expand=True)
    for column in ("job", "status", "sheets", "started"):
        job_table.add_column(column)
    sheet_table = Table(title="running and waiting sheets", title_justify="left", expand=True)
    for column in ("job", "sheet", "status", "for", "attempt", "instrument"):
        sheet_table.add_column(column)
    sheet_rows = 0
    for job in jobs:
        state = job["status"] + (f" ({job['pause_reason']})" if job.get("pause_reason") else "")
        job_table.add_row(
            job["job_id"],
            state,
            f"{job['completed_sheets']}/{job['total_sheets']}"
            + (f" ({job['failed_sheets']} failed)" if job["failed_sheets"] else ""),
            since(job.get("started_at")),
        )
        if job["status"] != "running" or sheet_rows >= SHEET_ROWS:
            continue
        detail = await caller.call(
            "status",
            {"job_id": job["job_id"], "sheet_status": ["running", "waiting"], "sheet_limit": 50},
        )
        for sheet in detail["sheets"][: SHEET_ROWS - sheet_rows]:
            sheet_rows += 1
            sheet_table.add_row(
                job["job_id"],
                sheet_label(sheet),
                sheet_status(sheet),
                since(sheet.get("started_at")),
                str(sheet.get("attempts") or ""),
                sheet.get("instrument") or "",
            )
    if not jobs:
        job_table.add_row("(no active job)", "", "", "")
    footer = Text("q or Ctrl-C quits", style="dim")
    return Group(header, limit_text, job_table, sheet_table, footer)


@contextlib.contextmanager
def _keys_unbuffered() -> Iterator[bool]:
    """Single key presses reach us without Enter (cbreak keeps Ctrl-C a signal)."""
    if not sys.stdin.isatty():
        yield False
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def run_top(caller: Caller, console: Console, interval: float) -> int:
    done = anyio.Event()

    async def keys() -> None:
        fd = sys.stdin.fileno()
        while True:
            await anyio.wait_readable(fd)
            data = os.read(fd, 64)
            if not data or b"q" in data.lower():
                done.set()
                return

    async def signals() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for _ in received:
                done.set()
                return

    with _keys_unbuffered() as interactive:
        async with anyio.create_task_group() as tg:
            tg.start_soon(signals)
            if interactive:
                tg.start_soon(keys)
            with Live(console=console, auto_refresh=False, screen=False) as live:
                while not done.is_set():
                    live.update(await snapshot(caller), refresh=True)
                    with anyio.move_on_after(interval):
                        await done.wait()
            tg.cancel_scope.cancel()
    return 0

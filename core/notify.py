"""Sending a job's notifications (issue 17): a command, a webhook, a desktop notice. Each is
bounded in time and never raises: a notification that cannot be delivered is logged, and
the job it reports on is not affected."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio.to_thread
import structlog

from podium.core.runner.process import run_captured
from podium.core.spec.hooks import (
    CommandNotification,
    DesktopNotification,
    Notification,
    WebhookNotification,
)

log = structlog.get_logger("podium.notify")
DESKTOP_TIMEOUT_SECONDS = 10


def payload(event: str, summary: Mapping[str, Any]) -> bytes:
    return json.dumps({"event": event, "job": summary}, sort_keys=True).encode()


async def _command(
    note: CommandNotification,
    body: bytes,
    *,
    workspace: Path,
    env: Mapping[str, str],
    kill_grace_seconds: float,
) -> str:
    outcome, output = await run_captured(
        ["bash", "-c", note.command],
        cwd=workspace if workspace.is_dir() else Path("/"),
        env=env,
        timeout_seconds=note.timeout_seconds,
        kill_grace_seconds=kill_grace_seconds,
        capture_bytes=2048,
        stdin_data=body,
    )
    if outcome.spawn_error is not None:
        return f"could not start bash: {outcome.spawn_error}"
    if outcome.timed_out:
        return f"timed out after {note.timeout_seconds:g}s"
    return f"exited {outcome.exit_code}" + (f": {output.strip()[-200:]}" if output.strip() else "")


def _post(url: str, body: bytes, timeout: float) -> str:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"not delivered: {reason}"


async def _desktop(title: str, text: str, env: Mapping[str, str], grace: float) -> str:
    exe = shutil.which("notify-send", path=env.get("PATH"))
    if exe is None:
        return "skipped: notify-send is not installed"
    outcome, _ = await run_captured(
        [exe, title, text],
        cwd=Path("/"),
        env=env,
        timeout_seconds=DESKTOP_TIMEOUT_SECONDS,
        kill_grace_seconds=grace,
    )
    return "sent" if outcome.exit_code == 0 else f"notify-send exited {outcome.exit_code}"


async def send(
    note: Notification,
    event: str,
    summary: Mapping[str, Any],
    *,
    workspace: Path,
    env: Mapping[str, str],
    kill_grace_seconds: float,
) -> str:
    """Deliver one notification; returns what happened (for the log)."""
    body = payload(event, summary)
    try:
        if isinstance(note, CommandNotification):
            return await _command(
                note, body, workspace=workspace, env=env, kill_grace_seconds=kill_grace_seconds
            )
        if isinstance(note, WebhookNotification):
            return await anyio.to_thread.run_sync(_post, note.url, body, note.timeout_seconds)
        assert isinstance(note, DesktopNotification)
        title = f"Podium: {summary.get('name')} {summary.get('status')}"
        return await _desktop(title, str(summary.get("job_id")), env, kill_grace_seconds)
    except Exception as exc:  # a notification never takes anything else down
        log.exception("notification failed", kind=note.type)
        return f"failed: {exc!r}"

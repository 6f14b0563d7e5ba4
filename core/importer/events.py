"""A score's notifications and `on_success` hooks as Podium's `notifications` and
`on_success: {submit, max_chain}`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from podium.core.importer.formats import format_to_env, format_to_jinja
from podium.core.importer.tracker import Tracker
from podium.core.spec.hooks import MAX_CHAIN

_EVENTS = {"job_complete": "on_complete", "job_failed": "on_failure"}
_DEFAULT_EVENTS = ("job_complete", "job_failed")
MARIANNE_MAX_CHAIN = 5
MAX_COMMAND_SECONDS = 600


def notifications(t: Tracker) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for index, note in enumerate(t.peek("notifications") or []):
        where = f"notifications.{index}"
        if not isinstance(note, Mapping):
            continue
        kind = note.get("type")
        item: dict[str, Any]
        if kind == "desktop":
            item = {"type": "desktop"}
        elif kind == "webhook":
            url = t.peek(f"{where}.config.url")
            if not isinstance(url, str):
                t.drop(where, "a webhook needs config.url (Podium takes no url_env)")
                continue
            item = {"type": "webhook", "url": t.get(f"{where}.config.url")}
        else:
            t.drop(where, f"Podium has no {kind} notifications (use a webhook or a command)")
            continue
        t.use(f"{where}.type")
        events = note.get("on_events")
        for pos, event in enumerate(events if events is not None else _DEFAULT_EVENTS):
            hook = _EVENTS.get(str(event))
            if hook is None:
                t.drop(
                    f"{where}.on_events.{pos}", f"Podium notifies when a job ends, not on {event}"
                )
                continue
            if events is not None:
                t.use(f"{where}.on_events.{pos}")
            out.setdefault(hook, []).append(dict(item))
    return out


def chain_and_hooks(
    t: Tracker, self_names: tuple[str, ...]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(on_success, commands to run on completion)."""
    chain: dict[str, Any] | None = None
    commands: list[dict[str, Any]] = []
    for index, hook in enumerate(t.peek("on_success") or []):
        where = f"on_success.{index}"
        if not isinstance(hook, Mapping):
            continue
        kind = hook.get("type")
        if kind == "run_job":
            if chain is not None:
                t.drop(where, "Podium chains one follow-up job")
                continue
            chain = _chain(t, where, self_names)
        elif kind in ("run_command", "run_script"):
            command = t.get(f"{where}.command")
            if not isinstance(command, str):
                t.drop(where, f"a {kind} hook needs a command")
                continue
            directory = t.get(f"{where}.working_directory")
            if isinstance(directory, str):
                command = f"cd {directory} && {command}"
            item: dict[str, Any] = {"type": "command", "command": format_to_env(command)}
            timeout = t.peek(f"{where}.timeout_seconds")
            if timeout is not None:
                item["timeout_seconds"] = min(
                    float(t.get(f"{where}.timeout_seconds")), MAX_COMMAND_SECONDS
                )
            commands.append(item)
        else:
            t.drop(where, f"unknown hook type {kind!r}")
            continue
        t.use(f"{where}.type")
        t.drop(f"{where}.description", "Podium hooks have no description")
    return chain, commands


def _chain(t: Tracker, where: str, self_names: tuple[str, ...]) -> dict[str, Any] | None:
    path = t.get(f"{where}.job_path")
    if not isinstance(path, str):
        t.drop(where, "a run_job hook needs a job_path")
        return None
    if self_names and PurePath(path).name in self_names[1:]:
        submit = self_names[0]
    else:
        submit = format_to_jinja(path)
        t.note(f"{where}.job_path", "a Marianne score: import it with podium import-score and "
               "point on_success.submit at the result")  # fmt: skip
    depth = t.get("concert.max_chain_depth")
    t.use("concert.enabled")
    # A Podium follow-up is always a new job that nobody waits for: what these ask for.
    t.use(f"{where}.fresh")
    t.use(f"{where}.detached")
    for key, why in (
        ("job_workspace", "the follow-up's spec names its workspace"),
        ("inherit_learning", "Podium keeps no learning store"),
        ("pause_before_chain", "the follow-up is submitted at once (submit it paused by hand)"),
        ("on_failure", "a follow-up that cannot be submitted is logged"),
        ("timeout_seconds", "submitting a follow-up takes no time to bound"),
    ):
        t.drop(f"{where}.{key}", why)
    limit = MARIANNE_MAX_CHAIN if depth is None else min(int(depth), MAX_CHAIN)
    return {"submit": submit, "max_chain": limit}

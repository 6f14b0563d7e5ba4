"""What every `podium` command shares: the home, running an async command with errors
printed in CLI words and an exit code, and plain or JSON output."""

from __future__ import annotations

import json
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

from podium.core.config import ConfigError, PodiumConfig, default_home, load_config
from podium.core.errors import PodiumError, SpecError

T = TypeVar("T")
EXIT_FAILED = 1
EXIT_USAGE = 2
ACTIVE = ["queued", "running"]
FINISHED = ["completed", "failed", "cancelled"]

out = Console(highlight=False)
# Messages keep their lines: folded at 80 columns in a pipe or a log, a command to type
# (`podium stop --force`) would be cut in two. A terminal wraps long lines itself.
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Context:
    def __init__(self, home: str | None) -> None:
        self.home = Path(home).expanduser() if home else None

    def config(self, **overrides: Any) -> PodiumConfig:
        return load_config(home=self.home, overrides=overrides)

    def config_to_stop(self) -> PodiumConfig:
        """The configuration to find and stop the running conductor with. A config.yaml
        broken since that conductor started is reported, not fatal: stopping needs only the
        home (the conductor keeps the settings it read)."""
        try:
            return self.config()
        except ConfigError as exc:
            err.print(
                f"podium: {exc}\n(stopping with default settings; fix config.yaml before the "
                "next start)",
                markup=False,
            )
            return PodiumConfig(home=(self.home or default_home()).expanduser().resolve())


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


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc` (possibly inside exception groups) is the conductor's connection
    failing: it stopped, was restarted, or became unreachable mid-command."""
    if isinstance(exc, BaseExceptionGroup):
        return any(connection_lost(e) for e in exc.exceptions)
    return isinstance(exc, httpx2.HTTPError)


def lost_while_following(job: str) -> int:
    """What a command following a job says when its conductor goes away under it."""
    err.print(
        f"podium: lost the conductor while following job {job} (it stopped or was "
        "restarted); the job keeps its state in the store: `podium status "
        f"{job} --follow` follows it again once a conductor runs (`podium resume {job}` if "
        "it was paused)",
        markup=False,
    )
    return EXIT_FAILED


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
        err.print(
            f"podium: cannot reach the conductor ({type(exc).__name__}: {exc}); "
            "`podium status` says whether one runs",
            markup=False,
        )
        return EXIT_USAGE
    raise exc


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def say(text: str) -> None:
    out.print(text, markup=False, soft_wrap=True)


def json_option(fn: Callable[..., T]) -> Callable[..., T]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(fn)


pass_ctx = click.make_pass_decorator(Context)


def started_note(config: PodiumConfig, started: bool, pid: int) -> None:
    if started:
        err.print(
            f"started the conductor of {config.home} (pid {pid}; `podium stop` stops it)",
            markup=False,
        )


def local_time(value: str | None) -> str:
    """A stored UTC time as local time, to the second."""
    from podium.server.follow import parse_time

    when = parse_time(value)
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S") if when else "-"

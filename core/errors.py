"""Errors the engine raises; the server turns each into a tool error with its message."""

from __future__ import annotations

from dataclasses import dataclass


class PodiumError(Exception):
    """Base for every error a user can act on; the message is shown as-is."""


@dataclass(frozen=True)
class FieldError:
    path: str  # dotted path from the spec root, list indices 0-based; "" for the root
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


MAX_REPORTED_ERRORS = 100


class SpecError(PodiumError):
    """A job spec is invalid; carries every problem found, one `path: message` per line,
    capped so a spec with thousands of broken sheets still gets a readable answer."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.total = len(errors)
        if len(errors) > MAX_REPORTED_ERRORS:
            hidden = len(errors) - MAX_REPORTED_ERRORS
            errors = [
                *errors[:MAX_REPORTED_ERRORS],
                FieldError("", f"{hidden} more errors not shown; fix these and validate again"),
            ]
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class NotFoundError(PodiumError):
    pass


# How much of a user's value an error message echoes: enough to recognise it, while a
# 100 KB id does not come back whole (in every error, log line and client transcript).
MAX_ECHO_CHARS = 80


def quoted(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """A value a user gave, as every error message echoes it: quoted like `repr`, and past
    `limit` characters cut, saying how long it was: 'abc…' (100000 characters)."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    return f"{text[:limit]!r}… ({len(text)} characters)"


def job_not_found(job_id: str) -> NotFoundError:
    """The one wording for an unknown job (SPEC §7: a clear "not found" naming it)."""
    return NotFoundError(f"job_id: job {quoted(job_id)} not found (list_jobs shows the known jobs)")


class InvalidTransitionError(PodiumError):
    """A control call that the job's current status does not allow (SPEC §6 table)."""


class ConflictError(PodiumError):
    """E.g. a job_id reused with a different spec."""


class PathNotAllowedError(PodiumError):
    pass


class HomeLockedError(PodiumError):
    def __init__(self, home: str, pid: int | None) -> None:
        self.home = home
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"Podium home {home} is already in use by a running conductor ({who}); "
            "stop it or use another home (--home / PODIUM_HOME)"
        )


class SchemaTooNewError(PodiumError):
    pass


class BackpressureError(PodiumError):
    """New work refused at critical pressure; `reason` is what is short (memory,
    processes), without the advice the message gives a person who submitted."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class InstrumentUnavailableError(PodiumError):
    pass

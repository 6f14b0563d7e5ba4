"""Validations: the checks that decide whether a sheet attempt succeeded.

Validation objects come from the spec models and are read by attribute (`type` plus that
type's fields), already rendered by the caller. Every check is confined to the workspace.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread

from podium.core.errors import PathNotAllowedError
from podium.core.models import ValidationResult
from podium.core.runner.process import run_captured
from podium.core.runner.regex import RegexOutcome, search_bounded, search_re2
from podium.core.spec.models import regex_problem

MAX_CONTENT_BYTES = 16 * 1024 * 1024
COMMAND_CAPTURE_BYTES = 64 * 1024
_DETAIL_OUTPUT_BYTES = 500
# How much of a file a failed content check shows as what it found.
FOUND_EXCERPT_BYTES = 300
_SHOWN_CHARS = 80
# The kernel stamps mtimes from a coarse clock that can lag time.time_ns() by a scheduler tick
# (up to 10 ms at HZ=100), so a file a fast sheet writes right after the attempt started could
# otherwise look older than the attempt.
MTIME_SLACK_NS = 20_000_000


def _show(value: str) -> str:
    """Quote a user value for a detail line, shortened so details stay short."""
    if len(value) > _SHOWN_CHARS:
        value = value[: _SHOWN_CHARS - 3] + "..."
    return repr(value)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolve_in_workspace(workspace: Path, rel: str) -> Path:
    """Resolve `rel` (relative to the workspace, or absolute inside it) to a real path.

    Raises PathNotAllowedError when the path, after following symlinks, is outside the
    workspace.
    """
    if "\0" in rel:
        raise PathNotAllowedError(f"path {_show(rel)} contains a NUL byte")
    given_root = os.path.normpath(os.path.abspath(workspace))
    real_root = os.path.realpath(workspace)
    candidate = rel if os.path.isabs(rel) else os.path.join(given_root, rel)
    lexical = os.path.normpath(candidate)
    if not (_inside(lexical, given_root) or _inside(lexical, real_root)):
        if os.path.isabs(rel):
            raise PathNotAllowedError(f"absolute path {_show(rel)} is outside the workspace")
        raise PathNotAllowedError(f"path {_show(rel)} escapes the workspace")
    real = os.path.realpath(candidate)
    if not _inside(real, real_root):
        raise PathNotAllowedError(
            f"path {_show(rel)} resolves through a symlink to outside the workspace"
        )
    return Path(real)


def _read_capped(path: Path) -> tuple[bytes, int]:
    """The first MAX_CONTENT_BYTES of a file and the file's full size."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return f.read(MAX_CONTENT_BYTES), size


def _read_content(path: Path, rel: str) -> tuple[bytes, int] | str:
    """The capped content and full size of a file, or why it cannot be read."""
    try:
        return _read_capped(path)
    except FileNotFoundError:
        return f"file {_show(rel)} does not exist"
    except IsADirectoryError:
        return f"{_show(rel)} is a directory, not a file"
    except OSError as exc:
        return f"cannot read {_show(rel)}: {exc.strerror or exc}"


def _contains(path: Path, rel: str, pattern: str) -> tuple[bool, str | None]:
    read = _read_content(path, rel)
    if isinstance(read, str):
        return False, read
    data, size = read
    if pattern in data.decode("utf-8", errors="replace"):
        return True, None
    return False, _not_found(pattern, rel, size)


def _regex_read(path: Path, rel: str, pattern: str) -> tuple[RegexOutcome | str | None, int]:
    """Read the file and try RE2 on it; (None, size) when the pattern must run under the
    time limit instead, (why, 0) when the file cannot be read."""
    read = _read_content(path, rel)
    if isinstance(read, str):
        return read, 0
    data, size = read
    return search_re2(pattern, data), size


def _not_found(pattern: str, rel: str, size: int) -> str:
    where = _show(rel)
    if size > MAX_CONTENT_BYTES:
        where = f"the first 16 MiB of {where} (file is {size} bytes)"
    return f"pattern {_show(pattern)} not found in {where}"


async def _check_content(
    path: Path, rel: str, pattern: str, regex: bool, *, kill_grace_seconds: float
) -> tuple[bool, str | None]:
    """Off the event loop: up to 16 MiB of reading, and a regex that RE2 runs in linear time
    (without the GIL) or that runs in a child process under a time limit."""
    if not regex:
        return await anyio.to_thread.run_sync(_contains, path, rel, pattern)
    # Compiling is cheap; only matching backtracks. A pattern known only now (it reads an
    # earlier sheet's output, say) may be no regex at all.
    problem = regex_problem(pattern)
    if problem is not None:
        return False, f"invalid regex {_show(pattern)}: {problem}"
    outcome, size = await anyio.to_thread.run_sync(_regex_read, path, rel, pattern)
    if isinstance(outcome, str):
        return False, outcome
    if outcome is None:
        outcome = await search_bounded(
            pattern, path, max_bytes=MAX_CONTENT_BYTES, kill_grace_seconds=kill_grace_seconds
        )
    if outcome.error is not None:
        return False, f"pattern {_show(pattern)} on {_show(rel)}: {outcome.error}"
    if outcome.found:
        return True, None
    return False, _not_found(pattern, rel, size)


def _check_exists(path: Path, rel: str) -> tuple[bool, str | None]:
    if path.exists():
        return True, None
    return False, f"file {_show(rel)} does not exist"


def _check_modified(path: Path, rel: str, since_ns: int) -> tuple[bool, str | None]:
    try:
        mtime_ns = path.stat().st_mtime_ns
    except FileNotFoundError:
        return False, f"file {_show(rel)} does not exist"
    except OSError as exc:
        return False, f"cannot stat {_show(rel)}: {exc.strerror or exc}"
    if mtime_ns >= since_ns - MTIME_SLACK_NS:
        return True, None
    return False, f"file {_show(rel)} was not modified during this attempt"


def _output_excerpt(output: str) -> str:
    raw = output.encode("utf-8", errors="replace")[-_DETAIL_OUTPUT_BYTES:]
    return raw.decode("utf-8", errors="ignore").strip()


async def _check_command(
    command: str,
    timeout_seconds: float | None,
    *,
    workspace: Path,
    env: Mapping[str, str],
    kill_grace_seconds: float,
) -> tuple[bool, str | None]:
    outcome, output = await run_captured(
        ["bash", "-c", command],
        cwd=workspace,
        env=env,
        timeout_seconds=timeout_seconds,
        kill_grace_seconds=kill_grace_seconds,
        capture_bytes=COMMAND_CAPTURE_BYTES,
    )
    if outcome.spawn_error is not None:
        return False, f"command could not start bash: {outcome.spawn_error}"
    excerpt = _output_excerpt(output)
    suffix = f": {excerpt}" if excerpt else " (no output)"
    if outcome.timed_out:
        return False, f"command timed out after {timeout_seconds:g}s{suffix}"
    if outcome.signal is not None:
        name = _signal_name(outcome.signal)
        return False, f"command killed by signal {outcome.signal} ({name}){suffix}"
    if outcome.exit_code == 0:
        return True, None
    return False, f"command exited {outcome.exit_code}{suffix}"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "unknown signal"


async def run_validation(
    v: Any,
    *,
    workspace: Path,
    attempt_started_at_ns: int,
    env: Mapping[str, str],
    kill_grace_seconds: float,
) -> ValidationResult:
    """Run one validation; never raises for a failed check, only reports it."""
    vtype = str(getattr(v, "type", ""))
    try:
        if vtype == "command_succeeds":
            passed, detail = await _check_command(
                str(v.command),
                getattr(v, "timeout_seconds", None),
                workspace=workspace,
                env=env,
                kill_grace_seconds=kill_grace_seconds,
            )
        elif vtype in ("file_exists", "file_modified", "content_contains", "content_regex"):
            rel = str(v.path)
            path = resolve_in_workspace(workspace, rel)
            if vtype == "file_exists":
                passed, detail = _check_exists(path, rel)
            elif vtype == "file_modified":
                passed, detail = _check_modified(path, rel, attempt_started_at_ns)
            else:
                passed, detail = await _check_content(
                    path,
                    rel,
                    str(v.pattern),
                    vtype == "content_regex",
                    kill_grace_seconds=kill_grace_seconds,
                )
        else:
            passed, detail = False, f"unknown validation type {_show(vtype)}"
    except PathNotAllowedError as exc:
        passed, detail = False, str(exc)
    if passed:
        return ValidationResult(type=vtype, passed=True, detail=detail)
    looked_at, expected, found = await _what_failed(v, vtype, workspace, detail)
    return ValidationResult(
        type=vtype, passed=False, detail=detail, path=looked_at, expected=expected, found=found
    )


def _file_start(workspace: Path, rel: str) -> str:
    """The first lines of a file a failed check read, or why there is nothing to show."""
    try:
        resolved = resolve_in_workspace(workspace, rel)
        with open(resolved, "rb") as f:
            head = f.read(FOUND_EXCERPT_BYTES + 1)
    except PathNotAllowedError as exc:
        return str(exc)
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "a directory"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if not head:
        return "an empty file"
    text = head[:FOUND_EXCERPT_BYTES].decode("utf-8", errors="replace")
    return text + ("..." if len(head) > FOUND_EXCERPT_BYTES else "")


async def _what_failed(
    v: Any, vtype: str, workspace: Path, detail: str | None
) -> tuple[str | None, str | None, str | None]:
    if vtype == "command_succeeds":
        return None, f"command {_show(str(v.command))} exits 0", detail
    rel = str(getattr(v, "path", "") or "")
    if not rel:
        return None, None, None
    if vtype in ("content_contains", "content_regex"):
        kind = "a match for the regex" if vtype == "content_regex" else "the text"
        found = await anyio.to_thread.run_sync(_file_start, workspace, rel)
        return rel, f"{kind} {_show(str(v.pattern))}", found
    if vtype == "file_modified":
        return rel, "the file changed during this attempt", detail
    return rel, "the file exists", "no such file"


async def run_validations(
    vs: Sequence[Any],
    *,
    workspace: Path,
    attempt_started_at_ns: int,
    env: Mapping[str, str],
    kill_grace_seconds: float,
) -> list[ValidationResult]:
    """Run every validation in order; all run even after a failure, so all are reported."""
    results: list[ValidationResult] = []
    for v in vs:
        results.append(
            await run_validation(
                v,
                workspace=workspace,
                attempt_started_at_ns=attempt_started_at_ns,
                env=env,
                kill_grace_seconds=kill_grace_seconds,
            )
        )
    return results

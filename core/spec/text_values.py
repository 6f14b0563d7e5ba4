"""Text a job can carry: every string of a spec ends up in a command line, an argument, an
environment value, a file or a JSON view, and none of them can hold a NUL character; a
`!!binary` value is shown and stored as UTF-8 text. Left to run time, a NUL failed every
attempt at spawn with "internal error: ValueError('embedded null byte')", and bytes that are
not UTF-8 broke the job's JSON views and snapshot after it ended. Checked on the raw data (after
bounds.py measured it, so the walk is shallow), so each problem names the field holding it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from podium.core.errors import FieldError, quoted


def _problem(value: Any) -> str | None:
    if isinstance(value, str):
        if "\0" in value:
            return (
                f"contains a NUL character (\\0) at position {value.index(chr(0))}, which no "
                "command, argument, environment value or file name can carry; remove it"
            )
        return None
    if isinstance(value, bytes | bytearray):
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            return (
                f"binary value (!!binary) is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                "give the text itself, or encode the data (e.g. base64) in a string"
            )
        if "\0" in text:
            return (
                "binary value (!!binary) contains a NUL byte, which no command, argument or "
                "environment value can carry; remove it"
            )
    return None


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def text_errors(raw: Any) -> list[FieldError]:
    """One error per string or binary value (or mapping key) that a job cannot carry, at its
    dotted path (list indices 0-based), in the order the spec gives them. Recursive: the
    value is at most MAX_SPEC_DEPTH deep (bounds.check_value runs first)."""
    errors: list[FieldError] = []

    def walk(path: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                key_problem = _problem(key)
                if key_problem is not None:
                    errors.append(FieldError(path, f"key {quoted(key)} {key_problem}"))
                else:
                    walk(_join(path, key), item)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(_join(path, index), item)
        elif isinstance(value, set | frozenset):
            for item in value:
                walk(path, item)
        else:
            problem = _problem(value)
            if problem is not None:
                errors.append(FieldError(path, problem))

    walk("", raw)
    return errors

"""The JSON documents an AI CLI prints, and selectors that pick values out of them.

A profile names where a CLI reports its answer, session id, cost or reset time. A plain
dotted path is enough for a CLI that prints one JSON object; event streams (JSON lines) need
a filter (`where`: only the events of one type) and a rule for several matching events
(`combine`: the last one, or the sum of per-step costs).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

Scalar = str | int | float | bool | None
# Never more documents than this are kept from one run, however many lines it printed.
MAX_DOCUMENTS = 20_000


class JsonSelector(BaseModel):
    """Where a value sits in a CLI's JSON output. Written as a plain string, it is `path`."""

    model_config = ConfigDict(extra="forbid")

    # Dotted keys; a number indexes a list (negative from its end); `*` is every key or element.
    path: str
    # Dotted path -> value every selected document must have (e.g. {type: result}).
    where: dict[str, Scalar] = {}
    # Several documents match: take the last, the first, the sum of the numbers, or the strings
    # joined (for CLIs that stream the answer in pieces).
    combine: Literal["last", "first", "sum", "concat"] = "last"
    # Where to look when no document has this value: one profile can then read both output
    # forms of a CLI (gemini's stream-json events and its single `--output-format json`).
    otherwise: JsonSelector | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @field_validator("path")
    @classmethod
    def _path_ok(cls, value: str) -> str:
        if not value or any(not part for part in value.split(".")):
            raise ValueError(f"{value!r} is not a dotted path (e.g. 'usage.input_tokens')")
        return value


def parse_documents(output_format: str, stdout: str) -> list[Any]:
    """The documents in a CLI's stdout: one JSON value (a top-level array counts as a sequence
    of documents), or one per JSON line. Lines that are not JSON (banners, warnings, a line cut
    by the output tail) are skipped, never an error."""
    if output_format == "text" or not stdout.strip():
        return []
    if output_format == "json":
        try:
            whole = json.loads(stdout)
        except ValueError:
            pass
        else:
            return list(whole[-MAX_DOCUMENTS:]) if isinstance(whole, list) else [whole]
    documents: list[Any] = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith(("{", "[")):
            continue
        try:
            documents.append(json.loads(line))
        except ValueError:
            continue
    return documents[-MAX_DOCUMENTS:]


def _walk(data: Any, parts: Sequence[str]) -> list[Any]:
    if not parts:
        return [data]
    head, rest = parts[0], parts[1:]
    if head == "*":
        children: Iterable[Any] = (
            data.values() if isinstance(data, dict) else data if isinstance(data, list) else ()
        )
        return [found for child in children for found in _walk(child, rest)]
    if isinstance(data, dict):
        return _walk(data[head], rest) if head in data else []
    if isinstance(data, list):
        try:
            index = int(head)
        except ValueError:
            return []
        if -len(data) <= index < len(data):
            return _walk(data[index], rest)
    return []


def values_at(document: Any, path: str) -> list[Any]:
    return _walk(document, path.split("."))


def _same(actual: Any, expected: Scalar) -> bool:
    # JSON `true` must not equal `1`, which Python's == would allow.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    return bool(actual == expected)


def matches(document: Any, where: dict[str, Scalar]) -> bool:
    return all(
        any(_same(v, expected) for v in values_at(document, key)) for key, expected in where.items()
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _document_value(document: Any, path: str) -> Any:
    found = [v for v in values_at(document, path) if v is not None]
    if not found:
        return None
    if len(found) > 1 and all(_is_number(v) for v in found):
        return sum(found)  # e.g. tokens of every model a run used
    return found[0]


def select(selector: JsonSelector, documents: Sequence[Any]) -> Any:
    """The value `selector` names in `documents`, or None when no document has it."""
    picked = [
        value
        for document in documents
        if matches(document, selector.where)
        and (value := _document_value(document, selector.path)) is not None
    ]
    if not picked:
        return None if selector.otherwise is None else select(selector.otherwise, documents)
    if selector.combine == "first":
        return picked[0]
    if selector.combine == "sum":
        numbers = [v for v in picked if _is_number(v)]
        return sum(numbers) if numbers else None
    if selector.combine == "concat":
        return "".join(v for v in picked if isinstance(v, str)) or None
    return picked[-1]


def string_leaves(documents: Sequence[Any], limit: int) -> str:
    """Every string in `documents`, one per line, at most `limit` characters (the last ones):
    error texts inside JSON are escaped (quotes, newlines, `\\u2019`), and failure patterns
    are written for the text a person reads."""
    out: list[str] = []
    size = 0

    def visit(value: Any) -> None:
        nonlocal size
        if isinstance(value, str):
            out.append(value)
            size += len(value) + 1
        elif isinstance(value, dict):
            for child in value.values():
                visit(child)
        elif isinstance(value, list):
            for child in value:
                visit(child)

    for document in documents:
        visit(document)
    text = "\n".join(out)
    return text[-limit:] if size > limit else text

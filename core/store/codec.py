"""Rows <-> column values, derived from the row dataclasses (one declaration per row), for
any SQL store. A dialect says how a field of a given type is stored (`Converters`) and how a
statement names a parameter; the rest (column lists, straight-line encoders and decoders,
the list cursor) is the same for every store.

A field becomes a column of the same name; lists and dicts are stored as JSON in a column
named `<field>_json`. Decoding is a tuple of converters applied positionally, so reading a row
costs one call per non-plain column and nothing else.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import types
import typing
from collections.abc import Callable, Sequence
from enum import Enum
from importlib import resources
from typing import Any, Generic, TypeVar

from podium.core import jsondata
from podium.core.errors import quoted
from podium.core.models import ValidationResult, parse_time
from podium.core.store.base import StoreError
from podium.core.store.rows import AttemptRow, ConductorRow, HoldRow, JobRow, SheetRow, TaskRow

R = TypeVar("R")
Convert = Callable[[Any], Any]
# (encode, decode) of a column for a field's base type; None passes the value as it is.
Pair = tuple[Convert | None, Convert | None]
# A dialect's choice for one base type: "datetime", "bool", "enum", "json", "plain".
Converters = Callable[[str, type[Any]], Pair]


def optional(convert: Convert) -> Convert:
    def apply(value: Any) -> Any:
        return None if value is None else convert(value)

    return apply


def encode_validations(values: list[ValidationResult]) -> str:
    return json.dumps([v.model_dump(mode="json") for v in values])


def decode_validations(text: str) -> list[ValidationResult]:
    return [ValidationResult.model_construct(**v) for v in json.loads(text)]


def enum_value(member: Enum) -> Any:
    return member.value


def type_kind(base: Any) -> str:
    """Which of the few kinds of field a row declares this type as."""
    if base is ValidationResult or typing.get_origin(base) in (list, dict):
        return "json"
    if base is typing.Any or base in (str, int, float):
        return "plain"
    if base is bool:
        return "bool"
    if isinstance(base, type) and issubclass(base, Enum):
        return "enum"
    if getattr(base, "__name__", "") == "datetime":
        return "datetime"
    raise TypeError(f"no column conversion for a field of type {base!r}")


def json_pair(base: Any) -> Pair:
    inner = typing.get_args(base)
    if inner and inner[0] is ValidationResult:
        return encode_validations, decode_validations
    return json.dumps, json.loads


def without_nul(text: str) -> str:
    """Text as every store keeps it: a NUL (which a sheet may print, and an error or a tail
    may quote) becomes U+FFFD. PostgreSQL's text refuses NUL outright, so the result that
    held one was lost; SQLite keeps the same so both stores answer alike. The log keeps the
    bytes."""
    return text.replace("\0", "\ufffd") if "\0" in text else text


def _column(
    name: str, hint: Any, converters: Converters
) -> tuple[str, Convert | None, Convert | None]:
    args = typing.get_args(hint)
    is_optional = isinstance(hint, types.UnionType) and type(None) in args
    base = next(a for a in args if a is not type(None)) if is_optional else hint
    kind = type_kind(base)
    encode, decode = converters(kind, base)
    if base is str and encode is None:
        encode = without_nul
    column = f"{name}_json" if kind == "json" else name
    if is_optional:
        encode = optional(encode) if encode is not None else None
        decode = optional(decode) if decode is not None else None
    return column, encode, decode


class Table(Generic[R]):
    """How one row type maps to one table, in one dialect. `param(column)` is how a
    statement names the parameter for a column (`:name` in SQLite, `%(name)s` in psycopg)."""

    def __init__(
        self,
        name: str,
        row_type: type[R],
        key: Sequence[str],
        converters: Converters,
        param: Callable[[str], str],
        not_updated: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.row_type = row_type
        self.key = tuple(key)
        hints = typing.get_type_hints(row_type)
        self.fields = tuple(f.name for f in dataclasses.fields(row_type))  # type: ignore[arg-type]
        specs = [_column(f, hints[f], converters) for f in self.fields]
        self.columns = tuple(column for column, _, _ in specs)
        self._params, self._decode = _compile(row_type, self.fields, self.columns, specs)
        skipped = {*self.key, "version", *not_updated}
        self.placeholders = {
            "columns": ", ".join(self.columns),
            "values": ", ".join(param(c) for c in self.columns),
            # An UPDATE rewrites every column but the key, the version (bumped by the
            # statement itself) and columns maintained some other way.
            "assign": ", ".join(f"{c} = {param(c)}" for c in self.columns if c not in skipped),
            "key": ", ".join(self.key),
        }

    def params(self, row: R) -> dict[str, Any]:
        return self._params(row)

    def decode(self, values: Sequence[Any]) -> R:
        row: R = self._decode(values)
        return row

    def key_of(self, row: R) -> tuple[Any, ...]:
        return tuple(getattr(row, k) for k in self.key)

    def key_text(self, row: R) -> str:
        return "/".join(str(getattr(row, k)) for k in self.key)


def _compile(
    row_type: type[Any],
    fields: Sequence[str],
    columns: Sequence[str],
    specs: Sequence[tuple[str, Convert | None, Convert | None]],
) -> tuple[Callable[[Any], dict[str, Any]], Callable[[Sequence[Any]], Any]]:
    """Straight-line functions for one row type, generated from its declaration: a row is
    encoded and decoded on every write and read, and a loop over converters costs several
    times as much as the unrolled code."""
    scope: dict[str, Any] = {"Row": row_type}
    encode_items, decode_items = [], []
    for i, (field, column, (_, encode, decode)) in enumerate(
        zip(fields, columns, specs, strict=True)
    ):
        if encode is None:
            encode_items.append(f"{column!r}: row.{field}")
        else:
            scope[f"e{i}"] = encode
            encode_items.append(f"{column!r}: e{i}(row.{field})")
        if decode is None:
            decode_items.append(f"v[{i}]")
        else:
            scope[f"d{i}"] = decode
            decode_items.append(f"d{i}(v[{i}])")
    source = (
        "def params(row):\n    return {" + ", ".join(encode_items) + "}\n"
        "def decode(v):\n    return Row(" + ", ".join(decode_items) + ")\n"
    )
    exec(compile(source, f"<codec {row_type.__name__}>", "exec"), scope)
    return scope["params"], scope["decode"]


def tables(converters: Converters, param: Callable[[str], str]) -> dict[str, Table[Any]]:
    """Every table of a store, in one dialect."""

    def table(name: str, row: type[Any], key: Sequence[str], **kw: Any) -> Table[Any]:
        return Table(name, row, key, converters, param, **kw)

    return {
        # Counters follow the sheet rows (triggers), labels follow the spec: never rewritten
        # per update.
        "jobs": table(
            "jobs",
            JobRow,
            ["job_id"],
            not_updated=["total_sheets", "completed_sheets", "failed_sheets", "labels_json"],
        ),
        "sheets": table("sheets", SheetRow, ["job_id", "sheet_num"]),
        # Ownership is set when the attempt is inserted; the lease only moves by renewal.
        "attempts": table(
            "attempts",
            AttemptRow,
            ["job_id", "sheet_num", "attempt"],
            not_updated=["conductor_id", "lease_expires_at", "lease_renewed_at"],
        ),
        "holds": table("holds", HoldRow, ["hold_key"]),
        "conductors": table("conductors", ConductorRow, ["conductor_id"]),
        "tasks": table("tasks", TaskRow, ["task_id"]),
    }


def spec_from_text(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """A stored spec that cannot be decoded must fail its own job, not every read of the
    jobs table, so the problem travels with the record instead of raising here. Nested
    too deep for the decoder (a damaged row) is one such problem: raised, it ended the
    writer that was loading the job, and the call waiting on it never returned."""
    try:
        spec = jsondata.loads(text)
    except ValueError as exc:
        return None, f"the stored spec is not readable JSON ({exc})"
    except RecursionError:
        return None, "the stored spec is nested too deeply to read"
    if not isinstance(spec, dict):
        return None, "the stored spec is not a mapping"
    return spec, None


def encode_cursor(submitted_at: str, job_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([submitted_at, job_id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        submitted_at, job_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        parse_time(submitted_at)
        return str(submitted_at), str(job_id)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"cursor: not a cursor returned by list_jobs ({quoted(cursor)})") from exc


_NAME_MARKER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{(\w+)\.(columns|values|assign|key)\}")


def load_queries(package: str, known: Sequence[Table[Any]]) -> dict[str, str]:
    """The named statements of a store's `queries.sql`, with the column placeholders of
    its tables expanded."""
    text = resources.files(package).joinpath("queries.sql").read_text()
    by_name = {t.name: t for t in known}
    text = _PLACEHOLDER.sub(
        lambda m: by_name[m.group(1)].placeholders[m.group(2)] if m.group(1) in by_name else m[0],
        text,
    )
    parts = _NAME_MARKER.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}

"""Rows <-> SQLite values, derived from the row dataclasses (one declaration per row).

A field becomes a column of the same name, converted by its type: times are fixed-width
RFC 3339 text, enums their value, booleans 0/1, lists JSON in a column named `<field>_json`.
Decoding is a tuple of converters applied positionally, so reading a row costs one call per
non-plain column and nothing else.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, Generic, TypeVar

from podium.core.models import ValidationResult, format_time, parse_time
from podium.core.store.base import StoreError
from podium.core.store.rows import AttemptRow, HoldRow, JobRow, SheetRow, TaskRow

R = TypeVar("R")
Convert = Callable[[Any], Any]


def _optional(convert: Convert) -> Convert:
    def apply(value: Any) -> Any:
        return None if value is None else convert(value)

    return apply


def _encode_validations(values: list[ValidationResult]) -> str:
    return json.dumps([v.model_dump(mode="json") for v in values])


def _decode_validations(text: str) -> list[ValidationResult]:
    return [ValidationResult.model_construct(**v) for v in json.loads(text)]


def _converters(name: str, hint: Any) -> tuple[str, Convert | None, Convert | None]:
    """(column, encode, decode) for a field; None means the value passes as it is."""
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else hint
    encode: Convert | None
    decode: Convert | None
    column = name
    if base is ValidationResult or typing.get_origin(base) is list:
        inner = typing.get_args(base)
        if inner and inner[0] is ValidationResult:
            encode, decode = _encode_validations, _decode_validations
        else:
            encode, decode = json.dumps, json.loads
        column = f"{name}_json"
    elif base is typing.Any or base in (str, int, float):
        encode = decode = None
    elif base is bool:
        encode, decode = int, bool
    elif isinstance(base, type) and issubclass(base, Enum):
        encode, decode = _enum_value, base
    elif getattr(base, "__name__", "") == "datetime":
        encode, decode = format_time, parse_time
    else:  # pragma: no cover - a new field type needs a converter here
        raise TypeError(f"no SQLite conversion for field {name!r} of type {hint!r}")
    if optional:
        encode = _optional(encode) if encode is not None else None
        decode = _optional(decode) if decode is not None else None
    return column, encode, decode


def _enum_value(member: Enum) -> Any:
    return member.value


class Table(Generic[R]):
    """How one row type maps to one table."""

    def __init__(
        self, name: str, row_type: type[R], key: Sequence[str], not_updated: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.row_type = row_type
        self.key = tuple(key)
        hints = typing.get_type_hints(row_type)
        self.fields = tuple(f.name for f in dataclasses.fields(row_type))  # type: ignore[arg-type]
        specs = [_converters(f, hints[f]) for f in self.fields]
        self.columns = tuple(column for column, _, _ in specs)
        self._params, self._decode = _compile(row_type, self.fields, self.columns, specs)
        skipped = {*self.key, "version", *not_updated}
        self.placeholders = {
            "columns": ", ".join(self.columns),
            "values": ", ".join(f":{c}" for c in self.columns),
            # An UPDATE rewrites every column but the key, the version (bumped by the
            # statement itself) and columns maintained some other way.
            "assign": ", ".join(f"{c} = :{c}" for c in self.columns if c not in skipped),
        }

    def params(self, row: R) -> dict[str, Any]:
        return self._params(row)

    def decode(self, values: Sequence[Any]) -> R:
        row: R = self._decode(values)
        return row

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


# Counters follow the sheet rows (triggers), labels follow the spec: never rewritten per update.
JOBS: Table[JobRow] = Table(
    "jobs",
    JobRow,
    ["job_id"],
    not_updated=["total_sheets", "completed_sheets", "failed_sheets", "labels_json"],
)
SHEETS: Table[SheetRow] = Table("sheets", SheetRow, ["job_id", "sheet_num"])
# Ownership is set when the attempt is inserted; the lease only moves by renewal.
ATTEMPTS: Table[AttemptRow] = Table(
    "attempts",
    AttemptRow,
    ["job_id", "sheet_num", "attempt"],
    not_updated=["conductor_id", "lease_expires_at"],
)
HOLDS: Table[HoldRow] = Table("holds", HoldRow, ["hold_key"])
TASKS: Table[TaskRow] = Table("tasks", TaskRow, ["task_id"])
TABLES = (JOBS, SHEETS, ATTEMPTS, HOLDS, TASKS)


def encode_cursor(submitted_at: str, job_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([submitted_at, job_id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        submitted_at, job_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        parse_time(submitted_at)
        return str(submitted_at), str(job_id)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"cursor: not a cursor returned by list_jobs ({cursor!r})") from exc

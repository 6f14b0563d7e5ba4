"""Rows <-> SQLite values: times are fixed-width RFC 3339 text (so they sort as strings),
enums their value, booleans 0/1, lists JSON text. The mapping itself is shared by every
store (podium.core.store.codec)."""

from __future__ import annotations

from typing import Any

from podium.core.models import format_time, parse_time
from podium.core.store.codec import Pair, Table, enum_value, json_pair, load_queries, tables
from podium.core.store.rows import AttemptRow, ConductorRow, HoldRow, JobRow, SheetRow, TaskRow


def _converters(kind: str, base: type[Any]) -> Pair:
    if kind == "json":
        return json_pair(base)
    if kind == "bool":
        return int, bool
    if kind == "enum":
        return enum_value, base
    if kind == "datetime":
        return format_time, parse_time
    return None, None


_TABLES = tables(_converters, lambda column: f":{column}")
JOBS: Table[JobRow] = _TABLES["jobs"]
SHEETS: Table[SheetRow] = _TABLES["sheets"]
ATTEMPTS: Table[AttemptRow] = _TABLES["attempts"]
HOLDS: Table[HoldRow] = _TABLES["holds"]
CONDUCTORS: Table[ConductorRow] = _TABLES["conductors"]
TASKS: Table[TaskRow] = _TABLES["tasks"]
TABLES = tuple(_TABLES.values())
# The named statements of queries.sql, their column placeholders expanded from the tables.
Q = load_queries("podium.core.store.sqlite", TABLES)

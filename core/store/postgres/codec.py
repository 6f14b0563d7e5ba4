"""Rows <-> PostgreSQL values: times are timestamptz (aware datetimes both ways, the
session in UTC), booleans boolean, enums their value, lists JSON text. The mapping itself is
shared by every store (podium.core.store.codec)."""

from __future__ import annotations

from typing import Any

from podium.core.store.codec import Pair, Table, enum_value, json_pair, load_queries, tables
from podium.core.store.rows import AttemptRow, ConductorRow, HoldRow, JobRow, SheetRow, TaskRow


def _converters(kind: str, base: type[Any]) -> Pair:
    if kind == "json":
        return json_pair(base)
    if kind == "enum":
        return enum_value, base
    # Datetimes, booleans and plain values pass as they are: psycopg adapts them.
    return None, None


_TABLES = tables(_converters, lambda column: f"%({column})s")
JOBS: Table[JobRow] = _TABLES["jobs"]
SHEETS: Table[SheetRow] = _TABLES["sheets"]
ATTEMPTS: Table[AttemptRow] = _TABLES["attempts"]
HOLDS: Table[HoldRow] = _TABLES["holds"]
CONDUCTORS: Table[ConductorRow] = _TABLES["conductors"]
TASKS: Table[TaskRow] = _TABLES["tasks"]
TABLES = tuple(_TABLES.values())
# The named statements of queries.sql, their column placeholders expanded from the tables.
Q = load_queries("podium.core.store.postgres", TABLES)

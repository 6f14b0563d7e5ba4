"""A store write on SQLite: every batch applied in one transaction on the writer connection,
each update compare-and-set on the version its row was read at, and a batch that conflicts
left out alone (SAVEPOINTs). The transaction has no await between BEGIN and COMMIT, so a
cancelled caller can never leave the connection inside one."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from podium.core import jsondata
from podium.core.store.base import Conflict, NewJob, WriteBatch
from podium.core.store.codec import Table
from podium.core.store.sqlite.codec import ATTEMPTS, HOLDS, JOBS, SHEETS, TASKS, Q

_UNIQUE_ERRORS = frozenset({"SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"})


class _Refused(Exception):
    def __init__(self, conflict: Conflict) -> None:
        self.conflict = conflict


def _execute_many(
    conn: sqlite3.Connection, table: Table[Any], sql: str, rows: Sequence[Any]
) -> None:
    if not rows:
        return
    cursor = conn.executemany(sql, [table.params(r) for r in rows])
    if cursor.rowcount != len(rows):
        raise _Refused(Conflict(table.name, _stale_key(conn, table, rows)))


def _stale_key(conn: sqlite3.Connection, table: Table[Any], rows: Sequence[Any]) -> str:
    """Which of `rows` no longer has the version it was read at (for the conflict report)."""
    where = " AND ".join(f"{k} = ?" for k in table.key)
    for row in rows:
        found = conn.execute(
            f"SELECT version FROM {table.name} WHERE {where}",
            [getattr(row, k) for k in table.key],
        ).fetchone()
        if found is None or found[0] != row.version:
            return table.key_text(row)
    return "?"


def _insert(conn: sqlite3.Connection, table: Table[Any], sql: str, rows: Sequence[Any]) -> None:
    for row in rows:
        params = table.params(row)
        params["version"] = 1
        try:
            conn.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            if getattr(exc, "sqlite_errorname", "") in _UNIQUE_ERRORS:
                raise _Refused(Conflict(table.name, table.key_text(row))) from None
            raise


def _apply(conn: sqlite3.Connection, batches: Sequence[WriteBatch]) -> None:
    """Apply `batches` in order, one statement per table where rows of several batches can
    share it (each table's rows keep the batches' order, so versions chain)."""
    for batch in batches:
        for new in batch.new_jobs:
            _insert_job(conn, new)
        # Job rows in batch order: one batch may edit a job another locks.
        _execute_many(conn, JOBS, Q["update_job"], batch.jobs)
        if batch.locks:
            _lock(conn, batch.locks)
        for job_id, spec in batch.specs.items():
            labels = list(spec.get("labels") or [])
            conn.execute(
                Q["update_job_spec"],
                {
                    "job_id": job_id,
                    "spec_json": jsondata.dumps(spec),
                    "labels_json": json.dumps(labels),
                },
            )
            conn.execute(Q["delete_labels"], {"job_id": job_id})
            conn.executemany(Q["insert_label"], [{"job_id": job_id, "label": lb} for lb in labels])
    _insert(conn, SHEETS, Q["insert_sheet"], [s for b in batches for s in b.new_sheets])
    _execute_many(conn, SHEETS, Q["update_sheet"], [s for b in batches for s in b.sheets])
    _insert(conn, ATTEMPTS, Q["insert_attempt"], [a for b in batches for a in b.new_attempts])
    _execute_many(conn, ATTEMPTS, Q["update_attempt"], [a for b in batches for a in b.attempts])
    holds = [h for b in batches for h in b.holds]
    _insert(conn, HOLDS, Q["insert_hold"], [h for h in holds if h.version == 0])
    _execute_many(conn, HOLDS, Q["update_hold"], [h for h in holds if h.version != 0])
    for batch in batches:
        for hold in batch.deleted_holds:
            if conn.execute(Q["delete_hold"], HOLDS.params(hold)).rowcount != 1:
                raise _Refused(Conflict("holds", hold.hold_key))
        for job in batch.deleted_jobs:
            params = {"job_id": job.job_id, "version": job.version}
            if conn.execute(Q["delete_terminal_job"], params).rowcount != 1:
                raise _Refused(Conflict("jobs", job.job_id))
        _insert(conn, TASKS, Q["insert_task"], batch.new_tasks)
        conn.executemany(Q["delete_task"], [{"task_id": t} for t in batch.deleted_tasks])
        conn.executemany(Q["finish_task"], [TASKS.params(t) for t in batch.finished_tasks])


def _lock(conn: sqlite3.Connection, locks: dict[str, int]) -> None:
    params = [{"job_id": j, "version": v} for j, v in locks.items()]
    if conn.executemany(Q["lock_job"], params).rowcount == len(params):
        return
    for job_id, version in locks.items():
        found = conn.execute(Q["select_job_version"], {"job_id": job_id}).fetchone()
        if found is None or found[0] != version + 1:
            raise _Refused(Conflict("jobs", job_id))
    raise _Refused(Conflict("jobs", next(iter(locks))))


def _insert_job(conn: sqlite3.Connection, new: NewJob) -> None:
    params = JOBS.params(new.job)
    # The sheet triggers count the sheets as they are inserted below.
    params.update(version=1, total_sheets=0, completed_sheets=0, failed_sheets=0)
    params["spec_json"] = jsondata.dumps(new.spec)
    try:
        conn.execute(Q["insert_job"], params)
    except sqlite3.IntegrityError as exc:
        if getattr(exc, "sqlite_errorname", "") in _UNIQUE_ERRORS:
            raise _Refused(Conflict("jobs", new.job.job_id)) from None
        raise
    conn.executemany(
        Q["insert_label"], [{"job_id": new.job.job_id, "label": lb} for lb in new.job.labels]
    )
    _insert(conn, SHEETS, Q["insert_sheet"], new.sheets)


def commit(conn: sqlite3.Connection, batches: Sequence[WriteBatch]) -> list[Conflict | None]:
    """All batches in one transaction. Conflicts are rare (another writer on the store), so
    the batches are first applied together; only if one is refused are they applied again
    one savepoint each, to leave out just the refused ones."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        try:
            _apply(conn, batches)
        except _Refused as refused:
            conn.execute("ROLLBACK")
            if len(batches) == 1:
                return [refused.conflict]
            conn.execute("BEGIN IMMEDIATE")
            results = _one_by_one(conn, batches)
        else:
            results = [None] * len(batches)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


def _one_by_one(conn: sqlite3.Connection, batches: Sequence[WriteBatch]) -> list[Conflict | None]:
    results: list[Conflict | None] = []
    for batch in batches:
        # Each batch in its own savepoint: one that conflicts is undone alone.
        conn.execute("SAVEPOINT batch")
        try:
            _apply(conn, [batch])
        except _Refused as refused:
            conn.execute("ROLLBACK TO batch")
            results.append(refused.conflict)
        else:
            results.append(None)
        conn.execute("RELEASE batch")
    return results

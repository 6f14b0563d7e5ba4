"""A store write on PostgreSQL: one transaction in which the job and hold rows it changes
are locked first, in one order, with `FOR UPDATE SKIP LOCKED` (a row another conductor is
writing is refused at once instead of waited for, so two writers never wait on each other),
then every update is compare-and-set on the version it was read at, and the notification
naming what changed is queued to go out with the commit. A batch that conflicts is left out
alone (a savepoint each)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from podium.core import jsondata
from podium.core.store.base import Conflict, NewJob, StoreChange, WriteBatch
from podium.core.store.codec import Table
from podium.core.store.postgres.codec import ATTEMPTS, HOLDS, JOBS, SHEETS, TASKS, Q
from podium.core.store.postgres.connections import Conn, Cursor

# Queues the notification of what the batches changed, in their transaction.
Notify = Callable[[Conn, StoreChange], Awaitable[None]]


class _Refused(Exception):
    def __init__(self, conflict: Conflict) -> None:
        self.conflict = conflict


async def _each(cur: Cursor, sql: str, rows: Sequence[dict[str, Any]]) -> list[bool]:
    """Run `sql` (which answers a row when it matched) once per parameter set; whether each
    matched."""
    await cur.executemany(sql, rows, returning=True)
    hits = []
    while True:
        hits.append(await cur.fetchone() is not None)
        if not cur.nextset():
            return hits


async def _cas(cur: Cursor, table: Table[Any], sql: str, rows: Sequence[Any]) -> None:
    """Update (or insert) `rows`, each conditional; the first that did not match refuses the
    whole batch."""
    if not rows:
        return
    params = [table.params(r) for r in rows]
    if sql.lstrip().upper().startswith("INSERT"):
        for p in params:
            p["version"] = 1
    for row, hit in zip(rows, await _each(cur, sql, params), strict=True):
        if not hit:
            raise _Refused(Conflict(table.name, table.key_text(row)))


def touched_jobs(batch: WriteBatch) -> set[str]:
    jobs = {j.job_id for j in batch.jobs} | set(batch.locks) | set(batch.specs)
    jobs |= {s.job_id for s in (*batch.new_sheets, *batch.sheets)}
    jobs |= {a.job_id for a in (*batch.new_attempts, *batch.attempts)}
    return jobs | {j.job_id for j in batch.deleted_jobs}


async def _lock(cur: Cursor, batch: WriteBatch) -> None:
    """Lock the rows the batch changes, never waiting for another writer's transaction."""
    for table, lock, exists, ids in (
        ("jobs", "lock_jobs", "existing_jobs", sorted(touched_jobs(batch))),
        (
            "holds",
            "lock_holds",
            "existing_holds",
            sorted({h.hold_key for h in (*batch.holds, *batch.deleted_holds) if h.version}),
        ),
    ):
        if not ids:
            continue
        await cur.execute(Q[lock], {"ids": ids})
        got = {r[0] for r in await cur.fetchall()}
        missing = [i for i in ids if i not in got]
        if not missing:
            continue
        await cur.execute(Q[exists], {"ids": missing})
        busy = sorted(r[0] for r in await cur.fetchall())
        if busy:
            # Another conductor is writing it right now: its version is about to move.
            raise _Refused(Conflict(table, busy[0]))


async def _insert_job(cur: Cursor, new: NewJob) -> None:
    params = JOBS.params(new.job)
    params.update(version=1, total_sheets=0, completed_sheets=0, failed_sheets=0)
    params["spec_json"] = jsondata.dumps(new.spec)
    await cur.execute(Q["insert_job"], params)
    if cur.rowcount != 1:
        raise _Refused(Conflict("jobs", new.job.job_id))
    if new.job.labels:
        await cur.executemany(
            Q["insert_label"], [{"job_id": new.job.job_id, "label": lb} for lb in new.job.labels]
        )
    await _cas(cur, SHEETS, Q["insert_sheet"], new.sheets)


async def _apply(cur: Cursor, batches: Sequence[WriteBatch]) -> None:
    """Apply `batches` in order, one statement per table where rows of several batches can
    share it (each table's rows keep the batches' order, so versions chain)."""
    for batch in batches:
        await _lock(cur, batch)
    for batch in batches:
        for new in batch.new_jobs:
            await _insert_job(cur, new)
        await _cas(cur, JOBS, Q["update_job"], batch.jobs)
        if batch.locks:
            rows = [{"job_id": j, "version": v} for j, v in batch.locks.items()]
            for job_id, hit in zip(batch.locks, await _each(cur, Q["lock_job"], rows), strict=True):
                if not hit:
                    raise _Refused(Conflict("jobs", job_id))
        for job_id, spec in batch.specs.items():
            labels = list(spec.get("labels") or [])
            await cur.execute(
                Q["update_job_spec"],
                {
                    "job_id": job_id,
                    "spec_json": jsondata.dumps(spec),
                    "labels_json": json.dumps(labels),
                },
            )
            await cur.execute(Q["delete_labels"], {"job_id": job_id})
            if labels:
                await cur.executemany(
                    Q["insert_label"], [{"job_id": job_id, "label": lb} for lb in labels]
                )
    await _cas(cur, SHEETS, Q["insert_sheet"], [s for b in batches for s in b.new_sheets])
    await _cas(cur, SHEETS, Q["update_sheet"], [s for b in batches for s in b.sheets])
    await _cas(cur, ATTEMPTS, Q["insert_attempt"], [a for b in batches for a in b.new_attempts])
    await _cas(cur, ATTEMPTS, Q["update_attempt"], [a for b in batches for a in b.attempts])
    holds = [h for b in batches for h in b.holds]
    await _cas(cur, HOLDS, Q["insert_hold"], [h for h in holds if h.version == 0])
    await _cas(cur, HOLDS, Q["update_hold"], [h for h in holds if h.version != 0])
    for batch in batches:
        await _cas(cur, HOLDS, Q["delete_hold"], batch.deleted_holds)
        for job in batch.deleted_jobs:
            params = {"job_id": job.job_id, "version": job.version}
            await cur.execute(Q["delete_terminal_job"], params)
            if await cur.fetchone() is None:
                raise _Refused(Conflict("jobs", job.job_id))
        await _cas(cur, TASKS, Q["insert_task"], batch.new_tasks)
        if batch.deleted_tasks:
            await cur.executemany(Q["delete_task"], [{"task_id": t} for t in batch.deleted_tasks])
        if batch.finished_tasks:
            await cur.executemany(Q["finish_task"], [TASKS.params(t) for t in batch.finished_tasks])


async def _one_by_one(conn: Conn, batches: Sequence[WriteBatch]) -> list[Conflict | None]:
    results: list[Conflict | None] = []
    for batch in batches:
        # Each batch in its own savepoint: one that conflicts is undone alone.
        try:
            async with conn.transaction():
                await _apply(conn.cursor(), [batch])
        except _Refused as refused:
            results.append(refused.conflict)
        else:
            results.append(None)
    return results


def written_change(batches: Sequence[WriteBatch]) -> StoreChange | None:
    """What `batches` change, as other conductors are told it; None when nothing they see."""
    jobs: set[str] = set()
    whole: set[str] = set()
    sheets: dict[str, set[int]] = {}
    holds = False
    for batch in batches:
        jobs |= touched_jobs(batch) | {n.job.job_id for n in batch.new_jobs}
        # Jobs that gained sheets or a spec, or came or went, are re-read whole.
        whole |= {n.job.job_id for n in batch.new_jobs} | set(batch.specs)
        whole |= {s.job_id for s in batch.new_sheets} | {j.job_id for j in batch.deleted_jobs}
        for sheet in batch.sheets:
            sheets.setdefault(sheet.job_id, set()).add(sheet.sheet_num)
        holds = holds or bool(batch.holds or batch.deleted_holds)
    if not jobs and not holds:
        return None
    detail = {j: frozenset(sheets.get(j, ())) for j in jobs - whole}
    return StoreChange(frozenset(jobs), detail, holds)


async def _notify(conn: Conn, batches: Sequence[WriteBatch], notify: Notify) -> None:
    change = written_change(batches)
    if change is not None:
        await notify(conn, change)


async def commit(
    conn: Conn, batches: Sequence[WriteBatch], notify: Notify
) -> list[Conflict | None]:
    """All batches in one transaction. Conflicts are rare, so the batches are first
    applied together; only if one is refused are they applied again one savepoint each,
    to leave out just the refused ones."""
    results: list[Conflict | None] | None = None
    try:
        async with conn.transaction():
            await _apply(conn.cursor(), batches)
            await _notify(conn, batches, notify)
    except _Refused as refused:
        if len(batches) == 1:
            return [refused.conflict]
    else:
        return [None] * len(batches)
    async with conn.transaction():
        results = await _one_by_one(conn, batches)
        landed = [b for b, r in zip(batches, results, strict=True) if r is None]
        await _notify(conn, landed, notify)
    return results

"""Several conductors (real `podium start` processes, separate homes) sharing one set of jobs
through one PostgreSQL schema (issue 15): they split a job's sheets and run each exactly once;
a conductor killed mid-run has its sheets reclaimed after its lease and the job completes; a
conductor frozen past its lease cannot overwrite what the others did meanwhile; a cancel
taken by one conductor ends the process groups another runs; a job's `hosts` keep its sheets
on the conductors carrying the label. Skipped, saying why, when PostgreSQL is not reachable."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conductors import conductors, reading, wait_for
from pg import fresh_schema

from podium.core.models import JobStatus, Outcome, utcnow
from podium.core.store.base import Store
from podium.core.store.rows import AttemptRow

pytestmark = pytest.mark.anyio


@pytest.fixture
def store_url() -> Iterator[str]:
    with fresh_schema("multi") as url:
        yield url


def marked_job(name: str, workspace: Path, sheets: int, body: str, **extra: Any) -> dict[str, Any]:
    """`sheets` sheets; each runs `body` (with SHEET set) and then appends one line to its
    own counter file: the side effect that must happen exactly once per sheet."""
    ws = str(workspace)
    return {
        "name": name,
        "workspace": ws,
        "sheets": [
            {
                "name": f"s{n}",
                "prompt": f"SHEET={n}; {body}; echo done >> {ws}/count-{n}",
            }
            for n in range(1, sheets + 1)
        ],
        "retry": {"max_retries": 0},
        **extra,
    }


def counts(workspace: Path, sheets: int) -> list[int]:
    out = []
    for n in range(1, sheets + 1):
        path = workspace / f"count-{n}"
        out.append(len(path.read_text().splitlines()) if path.exists() else 0)
    return out


async def history(store: Store, job_id: str) -> list[AttemptRow]:
    rows, _ = await store.get_history(job_id, None, 10_000, 0)
    return rows


async def finished(store: Store, job_id: str) -> bool:
    job = await store.get_job(job_id)
    return job is not None and job.status.is_terminal


def completed_once_each(rows: list[AttemptRow], sheets: int) -> None:
    done = Counter(a.sheet_num for a in rows if a.outcome is Outcome.COMPLETED)
    assert done == Counter(range(1, sheets + 1)), done


async def test_two_conductors_share_a_40_sheet_job_and_run_each_sheet_once(
    tmp_path: Path, store_url: str
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    # The job's own limit is below what the two conductors have room for together: it
    # counts the job's sheets on both. The first sheets wait (up to 10 s each) until five
    # have started: `a` has room for four, so the fifth is `b`'s. Without it a busy machine
    # can let `a` finish all 40 before `b` first looks, and the split would be luck.
    barrier = (
        f"touch {ws}/started-$SHEET; for i in $(seq 100); do "
        f'[ "$(ls {ws} | grep -c ^started-)" -ge 5 ] && break; sleep 0.1; done; sleep 0.2'
    )
    spec = marked_job("shared-40", ws, 40, barrier, concurrency={"max_parallel_sheets": 6})
    async with (
        # A lease long enough that a conductor slowed by a busy machine keeps its attempts:
        # this test is about the split and the job's limit; taking over the attempts of a
        # conductor whose lease ran out is the kill -9 and frozen tests' subject.
        conductors(tmp_path, store_url, ["a", "b"], lease_seconds=6, max_concurrent_sheets=4) as (
            a,
            b,
        ),
        reading(store_url, tmp_path) as store,
    ):
        job_id = (await a.call("submit_job", {"spec": spec}))["job_id"]
        try:
            await wait_for(lambda: finished(store, job_id), 90, "the job to end")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{await where_it_stands(store, job_id, [a, b])}") from exc
        job = await store.get_job(job_id)
        rows = await history(store, job_id)
    assert job is not None and job.status is JobStatus.COMPLETED, job
    assert job.completed_sheets == 40
    # Every sheet ran exactly once, by the side effect and by the store.
    assert counts(ws, 40) == [1] * 40
    assert len(rows) == 40
    completed_once_each(rows, 40)
    by = Counter(a.conductor_id for a in rows)
    assert set(by) == {"a", "b"}, by
    assert most_at_once(rows) <= 6


async def where_it_stands(store: Store, job_id: str, sides: list[Any]) -> str:
    """What a timed-out wait saw: the job, its sheets by status, its attempts, and the end
    of each conductor's log."""
    record = await store.load_job(job_id)
    lines = [f"job: {record.job.status if record else None}"]
    if record is not None:
        lines.append(f"pause_reason: {record.job.pause_reason}")
        states = Counter(
            (s.status.value, s.waiting_reason.value if s.waiting_reason else None)
            for s in record.sheets
        )
        lines.append(f"sheets: {dict(states)}")
    rows = await history(store, job_id)
    lines.append(f"attempts: {Counter((a.conductor_id, a.outcome) for a in rows)}")
    for side in sides:
        lines.append(f"--- conductor {side.name} log tail:\n{side.log_text()[-4000:]}")
    return "\n".join(lines)


def most_at_once(rows: list[AttemptRow]) -> int:
    """The most attempts running at one moment, from their recorded start and end."""
    edges = sorted(
        [(a.started_at, 1) for a in rows] + [(a.ended_at, -1) for a in rows if a.ended_at],
        key=lambda e: (e[0], e[1]),
    )
    now = top = 0
    for _, step in edges:
        now += step
        top = max(top, now)
    return top


async def test_kill_9_of_a_conductor_its_sheets_are_reclaimed_and_the_job_completes(
    tmp_path: Path, store_url: str
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    sheets = 12
    spec = marked_job("killed", ws, sheets, "sleep 1", concurrency={"max_parallel_sheets": 8})
    async with (
        conductors(tmp_path, store_url, ["a", "b"], max_concurrent_sheets=4) as (a, b),
        reading(store_url, tmp_path) as store,
    ):
        job_id = (await a.call("submit_job", {"spec": spec}))["job_id"]

        async def b_runs_some_a_while() -> bool:
            # Running long enough for b to have renewed their lease: the record then shows
            # how long they ran before the host died.
            return any(
                x.conductor_id == "b" and x.lease_renewed_at is not None
                for x in await store.in_flight_attempts()
            )

        await wait_for(b_runs_some_a_while, 60, "conductor b to run sheets and renew them")
        # The host dies: the conductor and the sheets it runs, at once.
        b.kill_host()
        killed_at = time.monotonic()
        killed_wall = utcnow()
        # What it had in flight when it died (nobody can reclaim before its lease runs out),
        # with its last lease renewals: nothing renews them any more.
        on_b = {
            (x.sheet_num, x.attempt): x
            for x in await store.in_flight_attempts()
            if x.conductor_id == "b"
        }
        await wait_for(lambda: finished(store, job_id), 90, "the job to end")
        job = await store.get_job(job_id)
        rows = await history(store, job_id)
        reclaimed = {(x.sheet_num, x.attempt): x for x in rows if (x.sheet_num, x.attempt) in on_b}
        conductors_now = [c.conductor_id for c in await store.conductors()]
    assert job is not None and job.status is JobStatus.COMPLETED, job
    assert on_b and set(reclaimed) == set(on_b)
    for key, attempt in reclaimed.items():
        # Recorded as interrupted by the conductor that took it back after the lease.
        assert attempt.outcome is Outcome.INTERRUPTED, attempt
        assert attempt.error == "interrupted: its conductor's lease ran out"
        # It ended when b last showed it running (its last renewal, or its start if b died
        # before renewing it), not when a noticed; its duration is filled from that.
        before = on_b[key]
        last_seen = before.lease_renewed_at or before.started_at
        assert attempt.ended_at == last_seen, (attempt, before)
        assert attempt.ended_at <= killed_wall
        assert attempt.lease_renewed_at == before.lease_renewed_at
        assert attempt.duration_seconds is not None
        assert attempt.duration_seconds == pytest.approx(
            (last_seen - attempt.started_at).total_seconds(), abs=1e-3
        )
    ran_a_while = [a for k, a in reclaimed.items() if on_b[k].lease_renewed_at is not None]
    assert ran_a_while and all(a.duration_seconds for a in ran_a_while), reclaimed
    # ... and run again by the survivor, once: no sheet completed twice.
    completed_once_each(rows, sheets)
    for num, _ in on_b:
        [again] = [x for x in rows if x.sheet_num == num and x.outcome is Outcome.COMPLETED]
        assert again.conductor_id == "a"
    # The side effect ran once for every sheet, but for those the dead host was running: a
    # process killed just after its last line may have written it (the attempt is still
    # interrupted, and runs again): at most once more.
    interrupted = {num for num, _ in on_b}
    for num, count in enumerate(counts(ws, sheets), 1):
        assert count == 1 or (num in interrupted and count == 2), (num, count)
    assert time.monotonic() - killed_at < 60
    # The dead conductor's registration stays until it expires; the survivor's is there.
    assert "a" in conductors_now


async def test_a_frozen_conductors_late_write_is_refused_after_another_reclaimed(
    tmp_path: Path, store_url: str
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    gate = ws / "gate"
    # The sheet finishes only once the test opens the gate.
    body = f"echo start >> {ws}/starts; while [ ! -e {gate} ]; do sleep 0.05; done"
    spec = marked_job("frozen", ws, 1, body)
    async with (
        conductors(tmp_path, store_url, ["a", "b"]) as procs,
        reading(store_url, tmp_path) as store,
    ):
        job_id = (await procs[0].call("submit_job", {"spec": spec}))["job_id"]

        async def first_in_flight() -> bool:
            return bool(await store.in_flight_attempts())

        await wait_for(first_in_flight, 60, "the sheet to start")
        [first] = await store.in_flight_attempts()
        owner = next(c for c in procs if c.name == first.conductor_id)
        other = next(c for c in procs if c is not owner)
        owner.freeze()
        try:

            async def taken_over() -> bool:
                latest = await store.get_latest_attempt(job_id, 1)
                return latest is not None and latest.attempt == 2

            # Past the lease the other conductor reclaims it and runs it again.
            await wait_for(taken_over, 60, "the other conductor to take the sheet over")
            # Lease renewals before the freeze bump the row too: what counts is that nothing
            # writes it after the reclaim.
            reclaimed_version = (await history(store, job_id))[0].version
            gate.touch()

            async def done() -> bool:
                job = await store.get_job(job_id)
                return job is not None and job.status is JobStatus.COMPLETED

            await wait_for(done, 60, "the job to complete")
        finally:
            owner.thaw()

        async def owner_tried() -> bool:
            return "attempt result not recorded" in owner.log_text()

        # The frozen conductor wakes with the first attempt's result in hand; its write
        # is refused.
        await wait_for(owner_tried, 60, "the woken conductor to try its write")
        rows = await history(store, job_id)
        job = await store.get_job(job_id)
    assert job is not None and job.status is JobStatus.COMPLETED
    one, two = rows
    assert (one.attempt, one.conductor_id) == (1, owner.name)
    assert one.outcome is Outcome.INTERRUPTED and "lease ran out" in (one.error or "")
    assert (two.attempt, two.conductor_id, two.outcome) == (2, other.name, Outcome.COMPLETED)
    assert one.version == reclaimed_version  # never written by its late owner
    assert "reclaimed" in owner.log_text()
    # The refusal says who took the attempt: another conductor, not this one's own stop.
    assert "another conductor reclaimed it after this conductor's lease" in owner.log_text()
    # The history names where each attempt ran (its log is on that conductor's host).
    assert [e.conductor_id for e in (one.entry(), two.entry())] == [owner.name, other.name]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_a_conductor_killed_alone_has_its_orphaned_sheets_ended_by_the_one_that_reclaims(
    tmp_path: Path, store_url: str
) -> None:
    """kill -9 of the conductor process only, on a host that lives on: its sheets run on,
    orphaned. The conductor that takes them back after the lease (on the same host) ends
    their groups before it runs them again, so the side effect happens once."""
    ws = tmp_path / "ws"
    ws.mkdir()
    gate = ws / "gate"
    sheets = 2
    body = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    spec = marked_job("orphans", ws, sheets, body, concurrency={"max_parallel_sheets": 2})
    async with (
        conductors(tmp_path, store_url, ["a", "b"], max_concurrent_sheets=1) as procs,
        reading(store_url, tmp_path) as store,
    ):
        job_id = (await procs[0].call("submit_job", {"spec": spec}))["job_id"]

        async def both_running() -> bool:
            return len([x for x in await store.in_flight_attempts() if x.pid]) == sheets

        await wait_for(both_running, 60, "a sheet on each conductor")
        in_flight = await store.in_flight_attempts()
        victim = procs[1]
        orphans = [x.pid for x in in_flight if x.conductor_id == victim.name and x.pid]
        assert orphans, in_flight
        os.kill(victim.pid, signal.SIGKILL)
        victim.proc.wait(timeout=10)
        victim.killed = True
        try:
            assert not any(gone(pid) for pid in orphans), "the sheets outlive their conductor"

            async def orphans_ended() -> bool:
                return all(gone(pid) for pid in orphans)

            await wait_for(orphans_ended, 60, "the orphaned sheets to be ended")
        finally:
            # Whatever happened, nothing of the test waits on after it: an orphan left
            # running sees the gate and ends.
            gate.touch()
        await wait_for(lambda: finished(store, job_id), 60, "the job to end")
        job = await store.get_job(job_id)
        rows = await history(store, job_id)
    assert job is not None and job.status is JobStatus.COMPLETED, job
    completed_once_each(rows, sheets)
    assert counts(ws, sheets) == [1] * sheets


async def test_cancel_through_one_conductor_ends_the_sheets_another_runs(
    tmp_path: Path, store_url: str
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    grace = 1.0
    # Each sheet leaves a grandchild behind in its group; `hosts` keeps them on b.
    body = "sleep 60 & sleep 60"
    spec = marked_job("remote", ws, 2, body, hosts=["gpu-box"])
    labels = {"b": ["gpu-box"]}
    async with (
        conductors(tmp_path, store_url, ["a", "b"], labels=labels, kill_grace_seconds=grace) as (
            a,
            _b,
        ),
        reading(store_url, tmp_path) as store,
    ):
        job_id = (await a.call("submit_job", {"spec": spec}))["job_id"]

        async def both_running_with_groups() -> bool:
            found = await store.in_flight_attempts()
            return len(found) == 2 and all(x.pgid for x in found)

        await wait_for(both_running_with_groups, 60, "both sheets to run")
        running = await store.in_flight_attempts()
        groups = [x.pgid for x in running]
        assert {x.conductor_id for x in running} == {"b"}, "hosts: only b runs them"
        assert all(alive(g) for g in groups if g)
        began = time.monotonic()
        summary = await a.call("cancel", {"job_id": job_id})
        took = time.monotonic() - began
        left = [g for g in groups if g and alive(g)]
        rows = await history(store, job_id)
        sheets = await store.get_sheets(job_id)
    assert summary["status"] == "cancelled"
    assert took <= grace + 2, took
    assert left == [], f"process groups still alive after the cancel: {left}"
    assert {x.outcome for x in rows} == {Outcome.CANCELLED}
    assert all(x.conductor_id == "b" for x in rows)
    assert {s.status.value for s in sheets} == {"cancelled"}


def alive(pgid: int) -> bool:
    """Whether any process of the group still runs (one that has exited and is waiting to be
    reaped by its conductor counts as ended)."""
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


async def test_two_conductors_show_a_shared_hold_on_the_same_few_sheets(
    tmp_path: Path, store_url: str
) -> None:
    """A rate-limit hold recorded by one conductor holds the instrument on both: the job's
    next sheets (its slots' worth, not one set per conductor) show `waiting` with the
    hold's end, written once, not per pass; when it lifts every sheet runs once."""
    import sys

    agent = Path(__file__).with_name("fake_agent.py")
    for name in ("a", "b"):
        (tmp_path / f"home-{name}" / "instruments").mkdir(parents=True)
        (tmp_path / f"home-{name}" / "instruments" / "fake-agent.yaml").write_text(
            f"name: fake-agent\nexecutable: {sys.executable}\n"
            f'args: ["{agent}", "{{prompt}}"]\nprompt_via: argv\npatterns:\n  rate_limit:\n'
            '    - regex: "rate limit.*retry after (?P<secs>[0-9]+) seconds"\n'
            "      retry_after_group: secs\n"
        )
    ws = tmp_path / "ws"
    ws.mkdir()
    limited = {
        "name": "limited",
        "workspace": str(ws),
        "instrument": "fake-agent",
        "sheets": [{"prompt": "ratelimit-wait:6:shared"}],
    }
    behind = {
        "name": "behind",
        "workspace": str(ws),
        "instrument": "fake-agent",
        "concurrency": {"max_parallel_sheets": 3},
        "retry": {"max_retries": 0},
        "sheets": [{"prompt": f"sheet {n}"} for n in range(1, 7)],
    }
    async with (
        conductors(tmp_path, store_url, ["a", "b"], max_concurrent_sheets=4) as (a, b),
        reading(store_url, tmp_path) as store,
    ):
        first = (await a.call("submit_job", {"spec": limited}))["job_id"]

        async def held() -> bool:
            return bool(await store.holds())

        await wait_for(held, 20, "the hold")
        job_id = (await b.call("submit_job", {"spec": behind}))["job_id"]

        async def three_waiting() -> bool:
            sheets = await store.get_sheets(job_id)
            return sum(s.status.value == "waiting" for s in sheets) == 3

        await wait_for(three_waiting, 10, "three sheets shown waiting")
        (hold,) = await store.holds()
        sheets = await store.get_sheets(job_id)
        waiting = [s for s in sheets if s.status.value == "waiting"]
        # A StrEnum: the stored reason compares equal to its public name.
        assert {(s.waiting_reason, s.waiting_until) for s in waiting} == {
            ("rate_limit", hold.until)
        }
        versions = {s.sheet_num: s.version for s in sheets}
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and await held():
            # Both conductors pass many times meanwhile: nothing is written again.
            again = {s.sheet_num: s.version for s in await store.get_sheets(job_id)}
            assert again == versions
        await wait_for(lambda: finished(store, first), 30, "the limited job")
        await wait_for(lambda: finished(store, job_id), 30, "the held job")
        job = await store.get_job(job_id)
        rows = await history(store, job_id)
    assert job is not None and job.status is JobStatus.COMPLETED, job
    completed_once_each(rows, 6)
    assert len(rows) == 6  # no sheet of the held job ran before the hold lifted

"""What only the PostgreSQL store has: migrations kept in step with SQLite's, schema
versions, change notifications between stores, row locks that never wait on another
writer, and clear errors for a store_url that cannot be used. The behaviour every store
shares is in test_store_contract.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import anyio
import pytest
from pg import PG_URL, fresh_schema, require, schema_url

from podium.core.config import load_config
from podium.core.errors import PodiumError, SchemaTooNewError
from podium.core.models import JobStatus, SheetStatus
from podium.core.store.base import Conflict, NewJob, StoreChange, WriteBatch
from podium.core.store.migrations import load_migrations
from podium.core.store.open import open_store
from podium.core.store.postgres.connections import redacted
from podium.core.store.postgres.store import PostgresStore
from podium.core.store.rows import ConductorRow, HoldRow, JobRow, SheetRow

pytestmark = pytest.mark.anyio

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_both_stores_have_the_same_numbered_migrations() -> None:
    """A migration added to one store needs its twin in the other: a schema version must mean
    the same in both (this fails until the twin is written)."""
    sqlite = [(n, name) for n, name, _ in load_migrations("podium.core.store.sqlite")]
    postgres = [(n, name) for n, name, _ in load_migrations("podium.core.store.postgres")]
    assert sqlite == postgres


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema("pg") as found:
        yield found


async def open_pg(url: str, tmp_path: Path, name: str = "a") -> PostgresStore:
    """Through open_store, as a conductor opens it."""
    config = load_config(
        home=tmp_path / name, overrides={"store_url": url, "conductor_id": name}, env={}
    )
    found = await open_store(config)
    assert isinstance(found, PostgresStore)
    return found


@pytest.fixture
async def store(url: str, tmp_path: Path) -> AsyncIterator[PostgresStore]:
    s = await open_pg(url, tmp_path)
    try:
        yield s
    finally:
        await s.close()


def new_job(job_id: str) -> NewJob:
    job = JobRow(job_id, "demo", JobStatus.QUEUED, "/w", "fp", 1, T0, T0)
    sheet = SheetRow(job_id, 1, "s", SheetStatus.PENDING, "shell", T0)
    return NewJob(job, {"name": "demo"}, [sheet])


def raw_version(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        assert row is not None
        return int(row[0])


async def test_schema_version_is_recorded_and_a_newer_one_refused(url: str, tmp_path: Path) -> None:
    import psycopg

    from podium.core.store.postgres.schema import LATEST_SCHEMA_VERSION

    s = await open_pg(url, tmp_path)
    await s.close()
    assert raw_version(url) == LATEST_SCHEMA_VERSION
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = %s", [LATEST_SCHEMA_VERSION + 1])
    with pytest.raises(SchemaTooNewError, match="newer than this Podium supports") as err:
        await open_pg(url, tmp_path)
    # Several stores may share a database, one per schema: the refused one is named.
    schema = unquote(url).rsplit("search_path=", 1)[1]
    assert f"(schema {schema})" in str(err.value)
    # Refused before anything was touched.
    assert raw_version(url) == LATEST_SCHEMA_VERSION + 1


async def test_an_older_schema_is_migrated_in_place_keeping_its_rows(
    url: str, tmp_path: Path
) -> None:
    import psycopg

    from podium.core.store.postgres.schema import migrate

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        assert await migrate(conn, "test", target=2) == 2
        await conn.execute(
            "INSERT INTO rate_limits (instrument, until, reason, set_at) VALUES "
            "('gemini-cli', %s, '429', %s)",
            [T0 + timedelta(minutes=5), T0],
        )
    s = await open_pg(url, tmp_path)
    try:
        [hold] = await s.holds()
        assert (hold.hold_key, hold.until, hold.released) == (
            "gemini-cli",
            T0 + timedelta(minutes=5),
            False,
        )
    finally:
        await s.close()


async def test_conductors_starting_together_migrate_once(url: str, tmp_path: Path) -> None:
    stores = []

    async def one(name: str) -> None:
        stores.append(await open_pg(url, tmp_path, name))

    async with anyio.create_task_group() as tg:
        for name in ("a", "b", "c"):
            tg.start_soon(one, name)
    for s in stores:
        await s.close()
    assert len(stores) == 3


async def test_another_store_hears_each_committed_change_and_never_its_own(
    url: str, tmp_path: Path
) -> None:
    a = await open_pg(url, tmp_path, "a")
    b = await open_pg(url, tmp_path, "b")
    heard_a: list[StoreChange] = []
    heard_b: list[StoreChange] = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.watch, heard_a.append)
            tg.start_soon(b.watch, heard_b.append)
            with anyio.fail_after(5):
                await a._listener.listening.wait()
                await b._listener.listening.wait()
            assert await a.commit([WriteBatch(new_jobs=[new_job("job-1")])]) == [None]
            # A refused write tells no one anything.
            assert await a.commit([WriteBatch(new_jobs=[new_job("job-1")])]) == [
                Conflict("jobs", "job-1")
            ]
            hold = HoldRow("shell", T0, "429", T0)
            assert await a.commit([WriteBatch(holds=[hold])]) == [None]
            await a.announce(StoreChange(suspend=frozenset({"job-1"})))
            # A change to existing sheets names them, so a reader re-reads just those.
            [sheet] = await a.get_sheets("job-1")
            sheet.last_error = "x"
            assert await a.commit([WriteBatch(sheets=[sheet], locks={"job-1": 1})]) == [None]
            with anyio.fail_after(5):
                while len(heard_b) < 5:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    finally:
        await a.close()
        await b.close()
    # Each listener starts by saying everything may have changed (what was committed before
    # it listened was not heard).
    assert heard_a[0].everything and heard_b[0].everything
    heard_a, heard_b = heard_a[1:], heard_b[1:]
    # A new job is re-read whole: it is named without sheets.
    assert heard_b[0].jobs == {"job-1"} and heard_b[0].sheets == {} and not heard_b[0].holds
    assert heard_b[1].holds and not heard_b[1].jobs
    assert heard_b[2].suspend == {"job-1"}
    assert heard_b[3].jobs == {"job-1"} and heard_b[3].sheets == {"job-1": {1}}
    assert len(heard_b) == 4
    assert heard_a == []


async def test_a_row_another_writer_holds_is_refused_without_waiting(
    url: str, store: PostgresStore, tmp_path: Path
) -> None:
    import psycopg

    assert await store.commit([WriteBatch(new_jobs=[new_job("job-1")])]) == [None]
    row = await store.get_job("job-1")
    assert row is not None
    row.status = JobStatus.PAUSED
    with psycopg.connect(url) as other:
        # Another conductor's transaction has the row locked and has not committed.
        other.execute("SELECT 1 FROM jobs WHERE job_id = 'job-1' FOR UPDATE")
        with anyio.fail_after(2):
            result = await store.commit([WriteBatch(jobs=[row])])
        assert result == [Conflict("jobs", "job-1")]
        other.rollback()
    # Once that writer is done, the same write goes through.
    assert await store.commit([WriteBatch(jobs=[row])]) == [None]
    after = await store.get_job("job-1")
    assert after is not None and after.status is JobStatus.PAUSED


async def test_conductors_are_recorded_by_heartbeat(store: PostgresStore) -> None:
    row = ConductorRow("host-a-1", "host-a", 42, T0, T0, T0 + timedelta(seconds=30), ["gpu"])
    await store.heartbeat(row)
    later = ConductorRow(
        "host-a-1", "host-a", 42, T0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=40)
    )
    await store.heartbeat(later)
    assert await store.conductors() == [later]
    await store.leave("host-a-1")
    assert await store.conductors() == []


async def test_an_unreachable_server_is_a_clear_error_without_the_password(
    tmp_path: Path,
) -> None:
    bad = "postgresql://podium:s3cret@127.0.0.1:1/nowhere?connect_timeout=1"
    with pytest.raises(PodiumError, match=r"store_url: cannot use the PostgreSQL store") as err:
        await open_pg(bad, tmp_path)
    assert "s3cret" not in str(err.value)


async def test_a_schema_that_does_not_exist_is_named_in_the_error(tmp_path: Path) -> None:
    require()
    with pytest.raises(PodiumError, match="search_path") as err:
        await open_pg(schema_url("podium_no_such_schema_here"), tmp_path)
    assert "podium_no_such_schema_here" in str(err.value)
    assert redacted(PG_URL) in str(err.value)


async def test_a_lost_listener_connection_reconnects_and_says_everything_may_have_changed(
    url: str, tmp_path: Path
) -> None:
    import psycopg

    a = await open_pg(url, tmp_path, "a")
    b = await open_pg(url, tmp_path, "b")
    heard: list[StoreChange] = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.watch, heard.append)
            with anyio.fail_after(5):
                await b._listener.listening.wait()
            assert [c.everything for c in heard] == [True]  # the start
            heard.clear()
            # The server ends the listening session (a restart, a failover, a proxy timeout).
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'podium listener' AND query = %s",
                    [f'LISTEN "{b.channel}"'],
                )
            with anyio.fail_after(10):
                while not any(c.everything for c in heard):
                    await anyio.sleep(0.02)
            # Listening again: a change committed now is heard by name.
            assert await a.commit([WriteBatch(new_jobs=[new_job("job-2")])]) == [None]
            with anyio.fail_after(10):
                while not any(c.jobs == {"job-2"} for c in heard):
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
    finally:
        await a.close()
        await b.close()


async def test_a_connection_the_server_ended_is_store_unavailable_then_replaced(
    url: str, tmp_path: Path
) -> None:
    """A server restart (here: its sessions ended) fails the next use of a pooled
    connection. That is `StoreUnavailableError`, which callers wait out and ask again, not
    a raw driver error that ended the conductor; the pool then connects anew."""
    import psycopg

    from podium.core.store.base import StoreUnavailableError

    store = await open_pg(url, tmp_path, "cut")
    try:
        assert await store.commit([WriteBatch(new_jobs=[new_job("job-1")])]) == [None]
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'podium cut'"
            )
        with pytest.raises(StoreUnavailableError, match="cannot be reached"):
            await store.get_job("job-1")
        with anyio.fail_after(10):
            while True:
                try:
                    job = await store.get_job("job-1")
                    break
                except StoreUnavailableError:
                    await anyio.sleep(0.05)  # another pooled connection the server ended
        assert job is not None and job.job_id == "job-1"
    finally:
        await store.close()

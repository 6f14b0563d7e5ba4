"""The dispatch benchmark on the PostgreSQL store: one job of trivial `true` sheets (8 at a
time per conductor) through one conductor on PostgreSQL, and through two conductors sharing
the job (this process's and a `podium start` process on the same schema), against the same
job through one conductor on SQLite, measured in the same run. Every sheet is checked in the store
afterwards (completed once, one finished attempt), and the two-conductor figure says how the
sheets were split. Needs PostgreSQL (PODIUM_BENCH_PG_URL, default the local test
database); without it the group reports nothing and says why."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import anyio

from bench.common import Figure, bench_config, scratch
from bench.dispatch import CONCURRENCY, trivial_spec, until_finished, verify
from podium.core.conductor import Conductor
from podium.core.models import Outcome

# Room for both conductors' slots: the job's limit counts its sheets on every conductor.
JOB_PARALLEL = 2 * CONCURRENCY


def job_spec(sheets: int) -> dict[str, object]:
    return {**trivial_spec("shared", sheets), "concurrency": {"max_parallel_sheets": JOB_PARALLEL}}


PG_URL = os.environ.get("PODIUM_BENCH_PG_URL", "postgresql://127.0.0.1:5432/test")
PODIUM = str(Path(sys.executable).with_name("podium"))


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql.encode())


def reachable() -> str | None:
    try:
        _admin("SELECT 1")
    except Exception as exc:
        return str(exc).strip()
    return None


class Schema:
    def __init__(self) -> None:
        self.name = f"podium_bench_{secrets.token_hex(4)}"
        sep = "&" if "?" in PG_URL else "?"
        self.url = f"{PG_URL}{sep}options={quote(f'-csearch_path={self.name}')}"

    def __enter__(self) -> Schema:
        _admin(f'CREATE SCHEMA "{self.name}"')
        return self

    def __exit__(self, *exc: object) -> None:
        _admin(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')


async def one_conductor(home: Path, sheets: int, store_url: str | None) -> float:
    overrides = {"store_url": store_url} if store_url else {}
    config = bench_config(home, max_concurrent_sheets=CONCURRENCY, **overrides)
    async with Conductor(config) as conductor:
        started = time.perf_counter()
        job = await conductor.submit_job(spec=job_spec(sheets))
        await until_finished(conductor, {job.job_id})
        elapsed = time.perf_counter() - started
        await verify(conductor, {job.job_id}, sheets)
    return sheets / elapsed


async def two_conductors(
    home: Path, sheets: int, store_url: str
) -> tuple[float, Counter[str], int]:
    """This process's conductor and another process's, both on `store_url`, one job."""
    other_home = home / "other"
    other_home.mkdir(parents=True)
    (other_home / "config.yaml").write_text(
        json.dumps(
            {
                "store_url": store_url,
                "conductor_id": "bench-b",
                "max_concurrent_sheets": CONCURRENCY,
                "kill_grace_seconds": 1,
            }
        )
    )
    env = {**os.environ, "PODIUM_HOME": str(other_home)}
    other = subprocess.Popen(
        [PODIUM, "start"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        config = bench_config(
            home / "mine",
            max_concurrent_sheets=CONCURRENCY,
            store_url=store_url,
            conductor_id="bench-a",
        )
        async with Conductor(config) as conductor:
            with anyio.fail_after(60):
                while not any(
                    c.conductor_id == "bench-b" for c in await conductor.store.conductors()
                ):
                    await anyio.sleep(0.05)
            started = time.perf_counter()
            job = await conductor.submit_job(spec=job_spec(sheets))
            await until_finished(conductor, {job.job_id})
            elapsed = time.perf_counter() - started
            await verify(conductor, {job.job_id}, sheets)
            rows, _ = await conductor.store.get_history(job.job_id, None, sheets + 1, 0)
            split = Counter(a.conductor_id or "?" for a in rows if a.outcome is Outcome.COMPLETED)
            conflicts = conductor.engine.writer.conflicts
    finally:
        other.send_signal(signal.SIGTERM)
        try:
            other.wait(timeout=30)
        except subprocess.TimeoutExpired:
            other.kill()
            other.wait()
    return sheets / elapsed, split, conflicts


async def run(rounds: int, quick: bool) -> list[Figure]:
    why = reachable()
    if why is not None:
        print(f"[bench] shared: PostgreSQL not reachable at {PG_URL}: {why}", file=sys.stderr)
        return []
    sheets = 300 if quick else 2000
    sqlite: list[float] = []
    pg_one: list[float] = []
    pg_two: list[float] = []
    split: Counter[str] = Counter()
    conflicts = 0
    for _ in range(rounds):
        # Interleaved, so a change in the machine's load touches all three alike.
        with scratch("shared-sqlite") as home:
            sqlite.append(await one_conductor(home, sheets, None))
        with scratch("shared-pg1") as home, Schema() as schema:
            pg_one.append(await one_conductor(home, sheets, schema.url))
        with scratch("shared-pg2") as home, Schema() as schema:
            rate, split, conflicts = await two_conductors(home, sheets, schema.url)
            pg_two.append(rate)
    shape = f"1 x {sheets:,}"
    taken = ", ".join(f"{k} {v}" for k, v in sorted(split.items()))
    return [
        Figure(
            "shared",
            f"{shape} sheets/s, PostgreSQL, 1 conductor",
            "/s",
            pg_one,
            "SQLite, 1 conductor",
            sqlite,
            compare="speed",
            note="every sheet checked in the store",
        ),
        Figure(
            "shared",
            f"{shape} sheets/s, PostgreSQL, 2 conductors",
            "/s",
            pg_two,
            "SQLite, 1 conductor",
            sqlite,
            compare="speed",
            note=f"last round: sheets completed per conductor {taken}; writes of this "
            f"process's conductor refused (another conductor moved the job first) {conflicts}",
        ),
    ]

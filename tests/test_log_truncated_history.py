"""Each attempt records whether its log reached `log_max_bytes` (`log_truncated`): in the
history (core, the MCP resource), across a restart, in diagnose's wording (from the stored
flag, the log's marker only for attempts recorded before it was stored), and on rows written
before migration 0013. Real engine, real store (SQLite, or PostgreSQL with
PODIUM_TEST_STORE=postgres)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for_job
from mcp import Client

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.models import HistoryEntry, JobStatus, format_time
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio

CAP = 4096  # the smallest log_max_bytes a config takes is 1024
MARKER = f"[podium: log truncated at {CAP} bytes; further output discarded]"
# One sheet prints far past the cap, the other well under it.
FLOOD_AND_QUIET: dict[str, Any] = {
    "name": "flood-and-quiet",
    "sheets": [
        {"name": "flood", "prompt": "yes flood | head -c 200000"},
        {"name": "quiet", "prompt": "echo quiet"},
    ],
}
FLOOD_THEN_FAIL: dict[str, Any] = {
    "name": "flood-then-fail",
    "retry": {"max_retries": 0},
    "sheets": [{"prompt": "yes flood | head -c 200000; echo 'Error: boom' >&2; exit 1"}],
}


def by_sheet(entries: list[HistoryEntry]) -> dict[int, bool]:
    return {e.sheet_num: e.log_truncated for e in entries}


async def test_an_attempt_over_the_cap_is_recorded_truncated_and_it_survives_a_restart(
    make_config: Callable[..., PodiumConfig],
) -> None:
    config = make_config(log_max_bytes=CAP)
    async with Conductor(config) as conductor:
        job = await conductor.submit_job(spec=FLOOD_AND_QUIET)
        assert (await wait_for_job(conductor, job.job_id)).status is JobStatus.COMPLETED
        entries, _ = await conductor.get_execution_history(job.job_id)
    assert by_sheet(entries) == {1: True, 2: False}
    # The flag says what the logs show: the runner's marker ends one, the other has none.
    flood, quiet = (Path(e.log_path or "").read_text() for e in entries)
    assert flood.rstrip().endswith(MARKER)
    assert "log truncated" not in quiet and "quiet" in quiet

    # Read back by a conductor that did not run the job: it is in the store, not in memory.
    async with Conductor(config) as conductor:
        again, _ = await conductor.get_execution_history(job.job_id)
    assert by_sheet(again) == {1: True, 2: False}


async def test_the_history_resource_carries_log_truncated_on_every_entry(
    make_config: Callable[..., PodiumConfig],
) -> None:
    async with Conductor(make_config(log_max_bytes=CAP)) as conductor:
        job = await conductor.submit_job(spec=FLOOD_AND_QUIET)
        assert (await wait_for_job(conductor, job.job_id)).status is JobStatus.COMPLETED
        server = PodiumServer(conductor)
        async with server.running(), Client(server.mcp, mode="auto") as client:
            result = await client.read_resource(f"podium://jobs/{job.job_id}/history")
    (content,) = result.contents
    assert content.mime_type == "application/json"
    history = json.loads(getattr(content, "text", ""))
    flags = {e["sheet_num"]: e["log_truncated"] for e in history["entries"]}
    # JSON booleans, false included: the field is always present.
    assert flags == {1: True, 2: False}
    assert all(type(flag) is bool for flag in flags.values())


async def test_diagnose_says_the_log_was_truncated_from_the_stored_flag(
    make_config: Callable[..., PodiumConfig],
) -> None:
    async with Conductor(make_config(log_max_bytes=CAP)) as conductor:
        job = await conductor.submit_job(spec=FLOOD_THEN_FAIL)
        assert (await wait_for_job(conductor, job.job_id)).status is JobStatus.FAILED
        [entry], _ = await conductor.get_execution_history(job.job_id)
        assert entry.log_truncated
        # The log no longer shows its marker (rewritten, as a log another host holds or one
        # since cleared cannot be read): only the stored flag can say it was cut.
        Path(entry.log_path or "").write_text("flood\nError: boom\n")
        diagnosis = await conductor.diagnose(job.job_id)
    [sheet] = diagnosis.failing
    assert "its log was truncated at log_max_bytes" in sheet.cause, sheet.cause
    assert sheet.log_excerpt is not None
    assert not any("log truncated" in line for line in sheet.log_excerpt.lines)


async def test_diagnose_of_a_failed_sheet_under_the_cap_says_nothing_of_truncation(
    make_config: Callable[..., PodiumConfig],
) -> None:
    spec = {**FLOOD_THEN_FAIL, "sheets": [{"prompt": "echo 'Error: boom' >&2; exit 1"}]}
    async with Conductor(make_config(log_max_bytes=CAP)) as conductor:
        job = await conductor.submit_job(spec=spec)
        assert (await wait_for_job(conductor, job.job_id)).status is JobStatus.FAILED
        diagnosis = await conductor.diagnose(job.job_id)
    [sheet] = diagnosis.failing
    assert "truncated" not in sheet.cause, sheet.cause


# ----- rows written before migration 0013 -----------------------------------------------------

STAMP = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


async def _at_migration_12(config: PodiumConfig, log: Path) -> None:
    """The home's store as a Podium before 0013 left it: a failed job whose one attempt's
    log ends with the runner's marker (and no column says so)."""
    job = (
        "INSERT INTO jobs (job_id, name, status, workspace, spec_json, spec_fingerprint,"
        " total_sheets, submitted_at, completed_at, updated_at) VALUES"
        " ('old-job', 'old', 'failed', '/w', '{\"name\": \"old\"}', 'fp', 0, {t}, {t}, {t})"
    )
    sheet = (
        "INSERT INTO sheets (job_id, sheet_num, status, attempts, instrument, last_error,"
        " error_category, log_path, updated_at) VALUES ('old-job', 1, 'failed', 1, 'shell',"
        " 'exit code 1', 'failed', {p}, {t})"
    )
    attempt = (
        "INSERT INTO attempts (job_id, sheet_num, attempt, started_at, ended_at, exit_code,"
        " duration_seconds, outcome, error_category, error, log_path, instrument) VALUES"
        " ('old-job', 1, 1, {t}, {t}, 1, 0.5, 'failed', 'failed', 'exit code 1', {p}, 'shell')"
    )
    if config.store_url.startswith("postgresql"):
        import psycopg

        from podium.core.store.postgres.schema import migrate as pg_migrate

        async with await psycopg.AsyncConnection.connect(config.store_url, autocommit=True) as conn:
            assert await pg_migrate(conn, "test", target=12) == 12
            for sql in (job, sheet, attempt):
                await conn.execute(
                    sql.replace("{t}", "%(t)s").replace("{p}", "%(p)s"),  # type: ignore[arg-type]
                    {"t": STAMP, "p": str(log)},
                )
        return
    from podium.core.store.sqlite.schema import migrate

    conn = sqlite3.connect(config.db_path, isolation_level=None)
    try:
        assert migrate(conn, config.db_path, target=12) == 12
        stamp = format_time(STAMP)
        for sql in (job, sheet, attempt):
            conn.execute(sql.replace("{t}", ":t").replace("{p}", ":p"), {"t": stamp, "p": str(log)})
    finally:
        conn.close()


async def test_attempts_recorded_at_migration_12_read_false_and_diagnose_reads_the_marker(
    make_config: Callable[..., PodiumConfig],
) -> None:
    config = make_config(log_max_bytes=CAP)
    log = config.logs_dir / "old-job" / "sheet-1-attempt-1.log"
    log.parent.mkdir(parents=True)
    log.write_text("flood\n" * 100 + MARKER + "\n")
    await _at_migration_12(config, log)
    async with Conductor(config) as conductor:
        [entry], _ = await conductor.get_execution_history("old-job")
        diagnosis = await conductor.diagnose("old-job")
    assert entry.log_truncated is False and entry.outcome is not None
    # The column came after the row: the marker in its log is what still tells.
    [sheet] = diagnosis.failing
    assert f"its log was truncated at {CAP} bytes (log_max_bytes)" in sheet.cause, sheet.cause

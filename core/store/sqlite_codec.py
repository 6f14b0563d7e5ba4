"""Row <-> SQLite parameter conversion for the SQLite store."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from podium.core import jsondata
from podium.core.models import (
    ErrorCategory,
    JobStatus,
    Outcome,
    PauseReason,
    SheetStatus,
    ValidationResult,
    WaitingReason,
    format_time,
    parse_optional_time,
    parse_time,
)
from podium.core.store.rows import AttemptRow, JobRow, SheetRow


def t(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def encode_cursor(submitted_at: str, job_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([submitted_at, job_id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        submitted_at, job_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        parse_time(submitted_at)
        return str(submitted_at), str(job_id)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cursor: not a cursor returned by list_jobs ({cursor!r})") from exc


def job_params(job: JobRow) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "name": job.name,
        "description": job.description,
        "status": job.status.value,
        "pause_reason": job.pause_reason.value if job.pause_reason else None,
        "error": job.error,
        "priority": job.priority,
        "workspace": job.workspace,
        "spec_json": jsondata.dumps(job.spec),
        "spec_fingerprint": job.spec_fingerprint,
        "spec_path": job.spec_path,
        "labels_json": json.dumps(job.labels),
        "total_sheets": job.total_sheets,
        "completed_sheets": job.completed_sheets,
        "failed_sheets": job.failed_sheets,
        "submitted_at": t(job.submitted_at),
        "started_at": t(job.started_at),
        "completed_at": t(job.completed_at),
        "updated_at": t(job.updated_at),
        "conductor_pid": job.conductor_pid,
        "snapshot_path": job.snapshot_path,
    }


def _spec_from_text(text: str) -> tuple[dict[str, Any], str | None]:
    """A stored spec that cannot be decoded must fail its own job, not every read of the
    jobs table, so the problem travels with the row instead of raising here."""
    try:
        spec = jsondata.loads(text)
    except ValueError as exc:
        return {}, f"the stored spec is not readable JSON ({exc})"
    if not isinstance(spec, dict):
        return {}, "the stored spec is not a mapping"
    return spec, None


def job_from_row(row: sqlite3.Row) -> JobRow:
    spec, spec_error = _spec_from_text(row["spec_json"])
    return JobRow(
        job_id=row["job_id"],
        name=row["name"],
        description=row["description"],
        status=JobStatus(row["status"]),
        pause_reason=PauseReason(row["pause_reason"]) if row["pause_reason"] else None,
        error=row["error"],
        priority=row["priority"],
        workspace=row["workspace"],
        spec=spec,
        spec_error=spec_error,
        spec_fingerprint=row["spec_fingerprint"],
        spec_path=row["spec_path"],
        labels=json.loads(row["labels_json"]),
        total_sheets=row["total_sheets"],
        completed_sheets=row["completed_sheets"],
        failed_sheets=row["failed_sheets"],
        submitted_at=parse_time(row["submitted_at"]),
        started_at=parse_optional_time(row["started_at"]),
        completed_at=parse_optional_time(row["completed_at"]),
        updated_at=parse_time(row["updated_at"]),
        conductor_pid=row["conductor_pid"],
        snapshot_path=row["snapshot_path"],
    )


def sheet_params(sheet: SheetRow) -> dict[str, Any]:
    return {
        "job_id": sheet.job_id,
        "sheet_num": sheet.sheet_num,
        "name": sheet.name,
        "status": sheet.status.value,
        "attempts": sheet.attempts,
        "retries_used": sheet.retries_used,
        "rate_limit_hits": sheet.rate_limit_hits,
        "depends_on_json": json.dumps(sheet.depends_on),
        "instrument": sheet.instrument,
        "started_at": t(sheet.started_at),
        "completed_at": t(sheet.completed_at),
        "duration_seconds": sheet.duration_seconds,
        "last_error": sheet.last_error,
        "error_category": sheet.error_category.value if sheet.error_category else None,
        "waiting_reason": sheet.waiting_reason.value if sheet.waiting_reason else None,
        "waiting_until": t(sheet.waiting_until),
        "output_tail": sheet.output_tail,
        "log_path": sheet.log_path,
        "updated_at": t(sheet.updated_at),
    }


def sheet_from_row(row: sqlite3.Row) -> SheetRow:
    return SheetRow(
        job_id=row["job_id"],
        sheet_num=row["sheet_num"],
        name=row["name"],
        status=SheetStatus(row["status"]),
        attempts=row["attempts"],
        retries_used=row["retries_used"],
        rate_limit_hits=row["rate_limit_hits"],
        depends_on=json.loads(row["depends_on_json"]),
        instrument=row["instrument"],
        started_at=parse_optional_time(row["started_at"]),
        completed_at=parse_optional_time(row["completed_at"]),
        duration_seconds=row["duration_seconds"],
        last_error=row["last_error"],
        error_category=ErrorCategory(row["error_category"]) if row["error_category"] else None,
        waiting_reason=WaitingReason(row["waiting_reason"]) if row["waiting_reason"] else None,
        waiting_until=parse_optional_time(row["waiting_until"]),
        output_tail=row["output_tail"],
        log_path=row["log_path"],
        updated_at=parse_time(row["updated_at"]),
    )


def attempt_params(attempt: AttemptRow) -> dict[str, Any]:
    return {
        "job_id": attempt.job_id,
        "sheet_num": attempt.sheet_num,
        "attempt": attempt.attempt,
        "started_at": t(attempt.started_at),
        "ended_at": t(attempt.ended_at),
        "exit_code": attempt.exit_code,
        "signal": attempt.signal,
        "duration_seconds": attempt.duration_seconds,
        "outcome": attempt.outcome.value if attempt.outcome else None,
        "error_category": attempt.error_category.value if attempt.error_category else None,
        "error": attempt.error,
        "validations_json": json.dumps([v.model_dump(mode="json") for v in attempt.validations]),
        "log_path": attempt.log_path,
        "pid": attempt.pid,
        "pgid": attempt.pgid,
        "pid_start_time": attempt.pid_start_time,
    }


def attempt_from_row(row: sqlite3.Row) -> AttemptRow:
    return AttemptRow(
        job_id=row["job_id"],
        sheet_num=row["sheet_num"],
        attempt=row["attempt"],
        started_at=parse_time(row["started_at"]),
        ended_at=parse_optional_time(row["ended_at"]),
        exit_code=row["exit_code"],
        signal=row["signal"],
        duration_seconds=row["duration_seconds"],
        outcome=Outcome(row["outcome"]) if row["outcome"] else None,
        error_category=ErrorCategory(row["error_category"]) if row["error_category"] else None,
        error=row["error"],
        validations=[ValidationResult(**v) for v in json.loads(row["validations_json"])],
        log_path=row["log_path"],
        pid=row["pid"],
        pgid=row["pgid"],
        pid_start_time=row["pid_start_time"],
    )


def statuses_json(statuses: Sequence[SheetStatus | JobStatus] | None) -> str | None:
    return None if not statuses else json.dumps([s.value for s in statuses])

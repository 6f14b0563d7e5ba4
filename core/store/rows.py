"""Backend-neutral rows: what a store holds per job, sheet and attempt.

The manager reads rows, decides a transition, and hands changed rows back to the store. Public
views (`JobSummary`, `JobDetail`, `SheetState`, `HistoryEntry`) are derived from these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from podium.core.models import (
    ErrorCategory,
    HistoryEntry,
    JobStatus,
    JobSummary,
    Outcome,
    PauseReason,
    SheetState,
    SheetStatus,
    ValidationResult,
    WaitingReason,
    sheet_log_uri,
)

OUTPUT_TAIL_VIEW_BYTES = 2048


@dataclass
class JobRow:
    job_id: str
    name: str
    status: JobStatus
    workspace: str
    spec: dict[str, Any]
    spec_fingerprint: str
    total_sheets: int
    submitted_at: datetime
    updated_at: datetime
    description: str | None = None
    pause_reason: PauseReason | None = None
    error: str | None = None
    priority: int = 5
    spec_path: str | None = None
    labels: list[str] = field(default_factory=list)
    completed_sheets: int = 0
    failed_sheets: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    conductor_pid: int | None = None
    snapshot_path: str | None = None
    # Set by the store when the stored spec could not be decoded; the job then fails alone.
    spec_error: str | None = None

    def summary(self) -> JobSummary:
        return JobSummary(
            job_id=self.job_id,
            name=self.name,
            status=self.status,
            total_sheets=self.total_sheets,
            completed_sheets=self.completed_sheets,
            failed_sheets=self.failed_sheets,
            submitted_at=self.submitted_at,
            started_at=self.started_at,
            completed_at=self.completed_at,
            pause_reason=self.pause_reason,
            error=self.error,
            labels=list(self.labels),
        )


@dataclass
class SheetRow:
    job_id: str
    sheet_num: int
    name: str | None
    status: SheetStatus
    instrument: str
    updated_at: datetime
    depends_on: list[int] = field(default_factory=list)
    attempts: int = 0
    retries_used: int = 0
    rate_limit_hits: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_seconds: float | None = None
    last_error: str | None = None
    error_category: ErrorCategory | None = None
    waiting_reason: WaitingReason | None = None
    waiting_until: datetime | None = None
    output_tail: str | None = None  # last 4 KiB of stdout, the source of `outputs[N]`
    log_path: str | None = None

    def state(self) -> SheetState:
        tail = self.output_tail
        if tail is not None:
            encoded = tail.encode()
            if len(encoded) > OUTPUT_TAIL_VIEW_BYTES:
                tail = encoded[-OUTPUT_TAIL_VIEW_BYTES:].decode(errors="ignore")
        return SheetState(
            sheet_num=self.sheet_num,
            name=self.name,
            status=self.status,
            attempts=self.attempts,
            depends_on=list(self.depends_on),
            instrument=self.instrument,
            started_at=self.started_at,
            completed_at=self.completed_at,
            duration_seconds=self.duration_seconds,
            last_error=self.last_error,
            error_category=self.error_category,
            waiting_reason=self.waiting_reason,
            waiting_until=self.waiting_until,
            output_tail=tail,
            log_uri=sheet_log_uri(self.job_id, self.sheet_num) if self.log_path else None,
        )


@dataclass
class AttemptRow:
    job_id: str
    sheet_num: int
    attempt: int
    started_at: datetime
    ended_at: datetime | None = None
    exit_code: int | None = None
    signal: int | None = None
    duration_seconds: float | None = None
    outcome: Outcome | None = None
    error_category: ErrorCategory | None = None
    error: str | None = None
    validations: list[ValidationResult] = field(default_factory=list)
    log_path: str | None = None
    pid: int | None = None
    pgid: int | None = None
    pid_start_time: float | None = None

    def entry(self) -> HistoryEntry:
        return HistoryEntry(
            sheet_num=self.sheet_num,
            attempt=self.attempt,
            started_at=self.started_at,
            ended_at=self.ended_at,
            exit_code=self.exit_code,
            signal=self.signal,
            duration_seconds=self.duration_seconds,
            outcome=self.outcome,
            error_category=self.error_category,
            error=self.error,
            validations=list(self.validations),
            log_path=self.log_path,
        )


@dataclass(frozen=True)
class JobQuery:
    """Filters and paging for listing jobs; newest first."""

    statuses: tuple[JobStatus, ...] = ()
    name: str | None = None
    label: str | None = None
    limit: int = 50
    cursor: str | None = None
    completed_before: datetime | None = None


@dataclass(frozen=True)
class RateLimitRow:
    instrument: str
    until: datetime
    reason: str | None
    set_at: datetime

"""The answer of the `diagnose` tool: why a job failed or is stuck, each failing sheet with
its cause, the waits, the holds and the next steps, in at most MAX_DIAGNOSIS_BYTES of JSON
(`fit` cuts the least useful parts first)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from podium.core.models import (
    ErrorCategory,
    JobStatus,
    PauseReason,
    SheetStatus,
    UtcTime,
    WaitingReason,
)

# The whole answer, serialized as JSON, stays under this many bytes (documented in docs/).
MAX_DIAGNOSIS_BYTES = 16 * 1024


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FailedValidation(_Model):
    type: str
    detail: str | None
    path: str | None = None
    expected: str | None = None
    found: str | None = None


class LogExcerpt(_Model):
    attempt: int
    lines: list[str] = Field(description="a few lines around the error, not the whole log")
    matched: str | None = Field(
        None, description="the text the excerpt is centred on, when one was found"
    )
    log_uri: str | None


class SheetDiagnosis(_Model):
    sheet_num: int
    name: str | None
    status: SheetStatus
    instrument: str
    failed_on: str | None = Field(
        None,
        description="the instrument the last failed attempt ran on, when it is not the "
        "sheet's instrument now (the sheet moved to a fallback)",
    )
    error_category: ErrorCategory | None
    cause: str = Field(description="one sentence: why this sheet did not complete")
    error: str | None
    attempts: int
    outcomes: list[str] = Field(description="outcome of each attempt, oldest first")
    rate_limit_waits: int
    running_seconds: float = Field(
        description="time spent running, all attempts together (an approval's wait is none)"
    )
    failed_validations: list[FailedValidation]
    log_excerpt: LogExcerpt | None
    decided_by: str | None = Field(
        None, description="an approval sheet that was rejected: who rejected it"
    )
    note: str | None = Field(None, description="and the note they gave")


class ListedSheet(_Model):
    sheet_num: int
    name: str | None
    reason: str | None


class WaitInfo(_Model):
    sheet_num: int
    name: str | None
    reason: WaitingReason | None
    until: UtcTime | None
    detail: str | None


class HeldInstrument(_Model):
    instrument: str
    until: UtcTime


class NextStep(_Model):
    action: str = Field(description="what to do, in one line")
    tool: str | None = Field(None, description="the MCP tool that does it")
    arguments: dict[str, Any] | None = Field(None, description="arguments for that tool")
    cli: str | None = Field(None, description="the same from a terminal")


class Diagnosis(_Model):
    job_id: str
    name: str
    status: JobStatus
    pause_reason: PauseReason | None
    error: str | None
    verdict: str = Field(description="one line: the state of the job and the main cause")
    total_sheets: int
    completed_sheets: int
    failing: list[SheetDiagnosis] = Field(description="failed sheets (and any stuck ones)")
    failing_total: int
    skipped: list[ListedSheet]
    skipped_total: int
    waiting: list[WaitInfo]
    rate_limits: list[HeldInstrument]
    pressure_level: str | None
    pressure_reason: str | None
    next_steps: list[NextStep]
    truncated: bool = Field(description="true when lists or excerpts were cut to fit the cap")
    max_bytes: int = MAX_DIAGNOSIS_BYTES


def clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 3] + "..."


def size_of(value: BaseModel) -> int:
    return len(json.dumps(value.model_dump(mode="json"), separators=(",", ":")).encode())


def fit(diagnosis: Diagnosis, max_bytes: int = MAX_DIAGNOSIS_BYTES) -> Diagnosis:
    """Cut the least useful parts first until the answer fits: log excerpts of later sheets,
    then their validations, then whole later sheets."""
    if size_of(diagnosis) <= max_bytes:
        return diagnosis
    diagnosis = diagnosis.model_copy(deep=True)
    diagnosis.truncated = True
    for sheet in reversed(diagnosis.failing[1:]):
        if sheet.log_excerpt is not None:
            sheet.log_excerpt.lines = sheet.log_excerpt.lines[-3:]
            if size_of(diagnosis) <= max_bytes:
                return diagnosis
    for sheet in reversed(diagnosis.failing[1:]):
        sheet.log_excerpt = None
        sheet.failed_validations = sheet.failed_validations[:1]
        if size_of(diagnosis) <= max_bytes:
            return diagnosis
    while len(diagnosis.failing) > 1 and size_of(diagnosis) > max_bytes:
        diagnosis.failing.pop()
    while diagnosis.skipped and size_of(diagnosis) > max_bytes:
        diagnosis.skipped.pop()
    while diagnosis.waiting and size_of(diagnosis) > max_bytes:
        diagnosis.waiting.pop()
    return diagnosis

"""What the facade returns besides the state model: submit, validation, clear, conductor
status. Field names follow SPEC §7."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from podium.core.instruments.catalog import InstrumentInfo, missing_executable
from podium.core.models import JobSummary, UtcTime


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmittedJob(JobSummary):
    workspace: str
    created: bool = Field(description="false when an identical earlier submit was returned")


class SpecErrorItem(_View):
    path: str
    message: str


class SheetPlan(_View):
    sheet_num: int
    name: str | None
    depends_on: list[int]
    instrument: str


class ValidationReport(_View):
    valid: bool
    errors: list[SpecErrorItem]
    sheets: list[SheetPlan]


class ClearResult(_View):
    deleted: int
    job_ids: list[str]
    skipped_active: list[str] = Field(
        default_factory=list,
        description="matching jobs kept: active, or still stopping sheets",
    )
    not_found: list[str] = Field(default_factory=list)


class RateLimitView(_View):
    instrument: str
    until: UtcTime
    pool: str | None = Field(
        None, description="the quota pool the instrument shares this wait with, if any"
    )


class ConductorView(_View):
    """Another (or this) conductor on a shared store, as its last heartbeat left it."""

    conductor_id: str
    host: str
    labels: list[str]
    last_seen: UtcTime


class InstrumentView(_View):
    name: str
    available: bool
    version: str | None = Field(description="what the installed CLI's version command printed")
    description: str | None = None
    executable: str | None = None
    source: str | None = None
    written_for: str | None = Field(None, description="the CLI version the profile was written for")
    version_matches: bool | None = Field(
        None,
        description="whether the installed version is the one the profile was written for "
        "(null when not installed or no version to compare)",
    )
    unavailable_reason: str | None = Field(
        None, description="why it is not available: what was looked for where (null when it is)"
    )

    @classmethod
    def from_info(cls, info: InstrumentInfo) -> InstrumentView:
        return cls(
            name=info.name,
            available=info.available,
            version=info.version,
            description=info.profile.description,
            executable=info.executable_path,
            source=info.source,
            written_for=info.written_for,
            version_matches=info.version_matches,
            unavailable_reason=None if info.available else missing_executable(info),
        )


class InstrumentError(_View):
    """A user instrument profile file the conductor does not use."""

    path: str = Field(description="the profile file (in <home>/instruments/)")
    message: str = Field(description="why it is not used: each `key: problem`, `; `-separated")


class InstrumentFile(_View):
    """A user profile file as last read."""

    path: str
    sha256: str | None = Field(description="null: unreadable")


class PendingApproval(_View):
    """An approval sheet waiting for a person: answer with `approve` (or `podium approve`)."""

    job_id: str
    sheet_num: int
    name: str | None
    question: str = Field(description="the sheet's rendered prompt")
    requested_at: UtcTime | None
    expires_at: UtcTime | None = Field(description="when it fails with timeout if undecided")


class ApprovalList(_View):
    approvals: list[PendingApproval]
    total: int = Field(description="how many are pending (the list is capped)")


class ConductorStatus(_View):
    version: str
    pid: int
    uptime_seconds: float
    home: str
    jobs_by_status: dict[str, int]
    running_sheets: int
    pressure_level: str
    memory_mb: float | None
    rate_limits: list[RateLimitView]
    ready: bool
    instruments: list[InstrumentView]
    instrument_errors: list[InstrumentError] = Field(
        default_factory=list,
        description="user profile files in <home>/instruments/ refused at the last start or "
        "reload (invalid YAML or fields, or a second file naming one profile), and why; a "
        "refused file that names a built-in leaves the built-in in use",
    )
    # Short descriptions: this schema is in every tools/list an agent reads.
    instruments_loaded_at: UtcTime | None = Field(None, description="profiles read at")
    instrument_files: list[InstrumentFile] = Field(
        default_factory=list, description="changed since: not in effect until a reload"
    )
    store: str | None = Field(None, description="store_url, normalized, no password")
    store_source: str | None = Field(None, description="where store_url came from")
    pressure_reason: str | None = None
    processes: int | None = Field(None, description="live descendants of the conductor")
    failure_rate: float | None = Field(None, description="share of recent attempts that failed")
    conductor_id: str | None = Field(None, description="this conductor's name in the store")
    conductors: list[ConductorView] = Field(
        default_factory=list,
        description="conductors alive on a store several share (PostgreSQL), this one included",
    )
    pending_approvals: list[PendingApproval] = Field(
        default_factory=list, description="approval sheets waiting for a decision (capped)"
    )
    pending_approvals_total: int = 0


class LogChunk(_View):
    text: str
    sheet_num: int | None
    attempt: int | None
    truncated: bool = Field(description="true when more log exists than `text` shows")
    next_offset: int | None = Field(description="byte offset to pass as `offset` to read on")
    total_bytes: int | None = None


class ReloadResult(_View):
    applied: dict[str, list[Any]] = Field(description="key -> [old, new], in effect now")
    not_applied: dict[str, str] = Field(description="key -> why it needs a restart")

"""Backend-neutral rows: what a store holds per job, sheet, attempt and rate-limit hold.

Each row carries the `version` it was read at; a store writes a changed row only if the
stored version is still that one (compare-and-set), so two writers can never silently
overwrite each other. The dataclass declarations below are the single description of each
row: the store's codec derives its columns from them, and the public views (`JobSummary`,
`SheetState`, `HistoryEntry`) are built from them by field name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel

from podium.core.models import (
    Decision,
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
    format_time,
    sheet_log_uri,
)

OUTPUT_TAIL_VIEW_BYTES = 2048

R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)


def view(model: type[M], row: Any, **extra: Any) -> M:
    """The public model of a row: every field the two declarations share, copied by name
    (no validation: the row's values are already typed), plus `extra`."""
    names = _shared_fields(model, type(row))
    values = {name: getattr(row, name) for name in names}
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = list(value)
    values.update(extra)
    return model.model_construct(**values)


def view_json(model: type[BaseModel], row: Any) -> dict[str, Any]:
    """What `view(model, row).model_dump(mode="json")` gives, without building the model
    first: a listing's rows go straight to their JSON form. Every field of `model` must be
    one of the row's, so a field added to the model cannot silently go missing here."""
    key = (model, type(row))
    convert = _JSON_VIEWS.get(key)
    if convert is None:
        convert = _JSON_VIEWS[key] = _compile_json_view(model, type(row))
    return convert(row)


_JSON_VIEWS: dict[tuple[type[Any], type[Any]], Callable[[Any], dict[str, Any]]] = {}
_PLAIN = (str, int, float, bool)


def _compile_json_view(model: type[BaseModel], row_type: type[Any]) -> Callable[[Any], Any]:
    """Straight-line code from the model's field types (as the store codec is generated):
    a value-by-value type test costs several times as much, 50 rows a listing."""
    names = _shared_fields(model, row_type)
    if len(names) != len(model.model_fields):
        missing = sorted(set(model.model_fields) - set(names))
        raise TypeError(f"{row_type.__name__} has no {', '.join(missing)} for {model.__name__}")
    items = []
    for name in names:
        kind = _json_kind(model.model_fields[name].annotation)
        value = f"row.{name}"
        if kind == "plain":
            items.append(f"{name!r}: {value}")
        elif kind == "time":
            items.append(f"{name!r}: None if (v := {value}) is None else format_time(v)")
        elif kind == "enum":
            items.append(f"{name!r}: None if (v := {value}) is None else v.value")
        else:
            items.append(f"{name!r}: json_value({value})")
    source = "def convert(row):\n    return {" + ", ".join(items) + "}\n"
    scope: dict[str, Any] = {"format_time": format_time, "json_value": _json_value}
    exec(compile(source, f"<json view {model.__name__}>", "exec"), scope)
    convert: Callable[[Any], Any] = scope["convert"]
    return convert


def _json_kind(annotation: Any) -> str:
    """How a field's value is written in JSON mode: as it is ("plain"), a time, an enum's
    value, or (lists, anything else) value by value."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _json_kind(get_args(annotation)[0])
    if origin is Union or origin is UnionType:
        kinds = {_json_kind(a) for a in get_args(annotation) if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 else "any"
    if isinstance(annotation, type) and origin is None:
        if issubclass(annotation, Enum):
            return "enum"
        if issubclass(annotation, datetime):
            return "time"
        if annotation in _PLAIN:
            return "plain"
    return "any"


def _json_value(value: Any) -> Any:
    """A row value as pydantic's JSON mode writes it (times RFC 3339 with `Z`, enums by
    value), found from the value itself."""
    kind = type(value)
    if value is None or kind in _PLAIN:
        return value
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, Enum):
        return value.value
    if kind is list:
        return [_json_value(item) for item in value]
    raise TypeError(f"no JSON form for a {kind.__name__} row value")


_SHARED: dict[tuple[type[Any], type[Any]], tuple[str, ...]] = {}


def _shared_fields(model: type[BaseModel], row_type: type[Any]) -> tuple[str, ...]:
    key = (model, row_type)
    found = _SHARED.get(key)
    if found is None:
        declared = {f.name for f in fields(row_type)}
        found = _SHARED[key] = tuple(n for n in model.model_fields if n in declared)
    return found


def clone(row: R) -> R:
    """A copy to edit; lists inside are copied too, so the original stays intact. (Field by
    field: `copy.copy` of a slotted dataclass costs several times as much, once per edit.)"""
    cls = type(row)
    new = object.__new__(cls)
    for name in _slots(cls):
        value = getattr(row, name)
        object.__setattr__(new, name, list(value) if type(value) is list else value)
    return new


_SLOTS: dict[type[Any], tuple[str, ...]] = {}


def _slots(cls: type[Any]) -> tuple[str, ...]:
    found = _SLOTS.get(cls)
    if found is None:
        found = _SLOTS[cls] = tuple(f.name for f in fields(cls))
    return found


@dataclass(slots=True)
class JobRow:
    job_id: str
    name: str
    status: JobStatus
    workspace: str
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
    # Derived by the store from the sheet rows in the same transaction; never written.
    completed_sheets: int = 0
    failed_sheets: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    snapshot_path: str | None = None
    # A modify waits for running sheets: resume (with this retry_failed) once they end.
    pending_resume: bool | None = None
    # What the job still has to do now that it ended ("on_complete", "on_failure",
    # "on_success"), each cleared once done; and the job that chained this one, and how far.
    pending_hooks: list[str] = field(default_factory=list)
    chained_from: str | None = None
    chain_depth: int = 0
    # What became of this job's own follow-up (`FollowUp` as JSON): written by the writer in
    # the op that clears the "on_success" hook (or leaves it pending, deferred).
    follow_up: dict[str, Any] | None = None
    # What every attempt of the job cost, as its instruments reported it (summed by the
    # writer with each attempt's result, in the same write).
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    # The spec's cost_limit_usd, kept on the row so views show it beside the total.
    cost_limit_usd: float | None = None
    version: int = 0

    def summary(self) -> JobSummary:
        return view(JobSummary, self)

    def summary_json(self) -> dict[str, Any]:
        """`summary().model_dump(mode="json")`, built directly (50 of them per listing)."""
        return view_json(JobSummary, self)


@dataclass(slots=True)
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
    version: int = 0

    def state(self) -> SheetState:
        tail = self.output_tail
        if tail is not None and len(tail) > OUTPUT_TAIL_VIEW_BYTES // 4:
            encoded = tail.encode()
            if len(encoded) > OUTPUT_TAIL_VIEW_BYTES:
                tail = encoded[-OUTPUT_TAIL_VIEW_BYTES:].decode(errors="ignore")
        log_uri = sheet_log_uri(self.job_id, self.sheet_num) if self.log_path else None
        return view(SheetState, self, output_tail=tail, log_uri=log_uri)


@dataclass(slots=True)
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
    # The log reached log_max_bytes: what the attempt printed after that was discarded.
    log_truncated: bool = False
    pid: int | None = None
    pgid: int | None = None
    pid_start_time: float | None = None
    # Who runs it, and until when that claim holds unless renewed (SPEC §2).
    conductor_id: str | None = None
    lease_expires_at: datetime | None = None
    # When that claim was last renewed (None: never): the last moment the attempt is known
    # to have run, which is when one whose owner died is recorded to have ended.
    lease_renewed_at: datetime | None = None
    # The instrument it ran with (a changed spec or a fallback may switch it), the CLI
    # session it ran in (reported, or the one it resumed: a retry resumes it, after a restart
    # too), and what it cost, as the CLI reported it.
    instrument: str | None = None
    session_id: str | None = None
    resumed_session_id: str | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    # An approval sheet's attempt (inserted when decided; it runs no process).
    decision: Decision | None = None
    decided_by: str | None = None
    note: str | None = None
    version: int = 0

    def entry(self) -> HistoryEntry:
        return view(HistoryEntry, self)


@dataclass(slots=True)
class HoldRow:
    """A rate-limit wait shared by every sheet whose instrument maps to `hold_key`."""

    hold_key: str
    until: datetime
    reason: str | None
    set_at: datetime
    # The wait is over and one sheet is going first; the rest follow once it succeeds.
    released: bool = False
    # That first sheet's attempt, claimed in the commit that starts it: conductors sharing
    # the store whose timers fired together send one sheet, not one each.
    first_job_id: str | None = None
    first_sheet_num: int | None = None
    first_attempt: int | None = None
    version: int = 0


@dataclass(slots=True)
class ConductorRow:
    """A conductor using the store, as its last heartbeat left it: who is alive, on which
    host, and which `hosts` labels of a job it runs. Not versioned: only its owner writes
    it, and a lapsed heartbeat is what tells the others it is gone."""

    conductor_id: str
    host: str
    pid: int
    started_at: datetime
    last_seen: datetime
    # Past this without a heartbeat, the conductor counts as gone.
    expires_at: datetime
    labels: list[str] = field(default_factory=list)


@dataclass(slots=True)
class TaskRow:
    """A durable task: the handle a `run_job` call answered with, mapped to its job. While
    it runs, its status is derived from the job's rows on every read; once it has ended, its
    final state (`final_*`) is written once and read from here ever after (a terminal status
    is final, whatever later happens to the job)."""

    task_id: str
    job_id: str
    tool: str
    created_at: datetime
    expires_at: datetime
    ttl_ms: int
    poll_interval_ms: int
    created_by: str | None = None
    final_status: str | None = None  # completed, failed or cancelled; None while it runs
    final_message: str | None = None
    final_at: datetime | None = None  # its lastUpdatedAt from then on
    final_error: str | None = None  # why it failed (final_status failed)
    final_job_failed: bool = False  # its result is an error (the job failed)
    final_detail: dict[str, Any] | None = None  # the job detail its result carries
    version: int = 0


@dataclass(frozen=True)
class JobQuery:
    """Filters and paging for listing jobs; newest first."""

    statuses: tuple[JobStatus, ...] = ()
    name: str | None = None
    label: str | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(slots=True)
class JobRecord:
    """Everything the engine needs to take a job in hand: its row, every sheet, the spec."""

    job: JobRow
    sheets: list[SheetRow]
    spec: dict[str, Any] | None
    # Why the stored spec could not be decoded (the job then fails alone), else None.
    spec_error: str | None = None

"""The store seen from above: one small protocol, nothing SQL-shaped.

The engine (its one writer) reads rows, decides a transition, and hands the changed rows back
as a `WriteBatch`; the store applies a batch all or nothing, each update conditional on the
version the row was read at. Views read through the same protocol. A second implementation
(PostgreSQL, for several conductors on one store) only has to pass the contract suite in
`tests/test_store_contract.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from podium.core.errors import PodiumError
from podium.core.models import JobStatus, SheetStatus
from podium.core.store.rows import (
    AttemptRow,
    ConductorRow,
    HoldRow,
    JobQuery,
    JobRecord,
    JobRow,
    SheetRow,
    TaskRow,
)

MAX_LIST_LIMIT = 500


@dataclass(slots=True)
class JobFiles:
    """What reconciling a job's files at start needs of its row."""

    job_id: str
    status: JobStatus
    completed_at: datetime | None
    snapshot_path: str | None


@dataclass(slots=True)
class Overview:
    """What a conductor's status reads from the store, read together (one round trip)."""

    jobs_by_status: dict[str, int]
    approvals: list[SheetRow]
    approvals_total: int


class StoreError(PodiumError):
    """The store refused a request for a reason a caller can act on (e.g. a bad cursor)."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached for now (a database server restarting, a network cut):
    the same request may go through later."""


@dataclass(slots=True)
class NewJob:
    job: JobRow
    spec: dict[str, Any]
    sheets: list[SheetRow]


@dataclass(slots=True)
class WriteBatch:
    """Rows to write together. Updates and deletes carry the version they were read at; an
    insert of a row that exists, or an update of a row whose version moved, refuses the whole
    batch. Versions in the rows are left as they were: the caller bumps them on success."""

    new_jobs: list[NewJob] = field(default_factory=list)
    jobs: list[JobRow] = field(default_factory=list)
    # Jobs whose rows do not change but whose version must (job id -> version read): a
    # change to a job's sheets takes its job's version, so writers of one job serialise.
    locks: dict[str, int] = field(default_factory=dict)
    # Replaced specs (a modify), by job id; the job's labels are rewritten with them.
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_sheets: list[SheetRow] = field(default_factory=list)
    sheets: list[SheetRow] = field(default_factory=list)
    new_attempts: list[AttemptRow] = field(default_factory=list)
    attempts: list[AttemptRow] = field(default_factory=list)
    # A hold with version 0 is inserted (refused if one exists), else updated conditionally.
    holds: list[HoldRow] = field(default_factory=list)
    deleted_holds: list[HoldRow] = field(default_factory=list)
    # Only terminal jobs are ever deleted, whatever the caller asks.
    deleted_jobs: list[JobRow] = field(default_factory=list)
    # Durable tasks: inserted (refused if the id exists) and purged by id.
    new_tasks: list[TaskRow] = field(default_factory=list)
    deleted_tasks: list[str] = field(default_factory=list)
    # Tasks seen ended: their `final_*` fields are written unless the task already has a
    # final state (the first one stands; a task that is gone is skipped). Never a conflict.
    finished_tasks: list[TaskRow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(
            (
                self.new_jobs,
                self.jobs,
                self.locks,
                self.specs,
                self.new_sheets,
                self.sheets,
                self.new_attempts,
                self.attempts,
                self.holds,
                self.deleted_holds,
                self.deleted_jobs,
                self.new_tasks,
                self.deleted_tasks,
                self.finished_tasks,
            )
        )


@dataclass(frozen=True, slots=True)
class Conflict:
    """Why a batch was refused: which row had moved on (for logs and retries)."""

    table: str
    key: str


@dataclass(frozen=True, slots=True)
class Written:
    """A committed transaction: what happened to each batch, and how to wait until it is
    durable (survives power loss, not just a crash of the process)."""

    results: list[Conflict | None]
    durable: Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StoreChange:
    """What another user of the store committed (or asks for), as its notification said."""

    jobs: frozenset[str] = frozenset()
    # For jobs whose only change was to existing sheets: which sheets (a reader re-reads the
    # job row and just those); a job named in `jobs` but not here is re-read whole.
    sheets: Mapping[str, frozenset[int]] = field(default_factory=dict)
    holds: bool = False
    # Notifications may have been missed (the connection that listens was lost, or a
    # change was too large to name): re-read everything held.
    everything: bool = False
    # Jobs whose running sheets should be suspended now (`pause immediate` taken by another
    # conductor). A signal, not state: a conductor that misses it lets them finish instead.
    suspend: frozenset[str] = frozenset()


OnChange = Callable[[StoreChange], None]


class Store(Protocol):
    """What the engine and the views need from a store. Every method is safe to call from
    many tasks at once; `write` and `commit` are the only ways rows change."""

    async def close(self) -> None: ...

    @property
    def shared(self) -> bool:
        """Whether several conductors may use this store at once (then they heartbeat,
        renew leases, and learn of each other's changes through `watch`)."""
        ...

    # ----- writing ---------------------------------------------------------------------------

    async def write(self, batches: Sequence[WriteBatch]) -> Written:
        """Apply the batches in ONE transaction, each all or nothing: a batch that conflicts
        is left out (its result says why) and the others still commit. Returns once the
        transaction is committed (other readers see it, a crash of this process keeps it);
        `durable()` returns once it would survive power loss too. A store whose commits are
        durable at once returns an awaitable that is already done."""
        ...

    async def commit(self, batches: Sequence[WriteBatch]) -> list[Conflict | None]:
        """`write`, then wait until durable."""
        ...

    async def renew_leases(self, conductor_id: str, until: datetime, renewed_at: datetime) -> int:
        """Extend the lease of every in-flight attempt `conductor_id` owns to `until`, and
        record `renewed_at` as when it was last known running; returns how many. Not a
        versioned write: a lease is a claim's expiry, not state a rule reads."""
        ...

    # ----- several conductors ----------------------------------------------------------------

    async def watch(self, on_change: OnChange) -> None:
        """Call `on_change` for every change other users of the store commit, until
        cancelled. Delivery is best effort (callers also poll `job_versions`); after a gap
        in delivery it reports `everything`. A store no one else writes never calls it."""
        ...

    async def announce(self, change: StoreChange) -> None:
        """Send a signal that is not a row change (e.g. `suspend`) to the other users."""
        ...

    async def heartbeat(self, conductor: ConductorRow) -> None:
        """Record `conductor` as alive until its `expires_at` (insert or replace)."""
        ...

    async def conductors(self) -> list[ConductorRow]:
        """Every conductor recorded, alive or expired, by id."""
        ...

    async def leave(self, conductor_id: str) -> None:
        """A conductor stopping gracefully removes its record."""
        ...

    async def job_versions(self) -> dict[str, int]:
        """The version of every queued, running and paused job (for the polling safety net:
        a job whose version moved was changed by someone)."""
        ...

    # ----- reading, for the engine -----------------------------------------------------------

    async def load_job(self, job_id: str) -> JobRecord | None: ...
    async def load_rows(
        self, job_id: str, sheet_nums: Sequence[int]
    ) -> tuple[JobRow, list[SheetRow]] | None:
        """A job's row and some of its sheets, read in one snapshot."""
        ...

    async def active_jobs(self) -> list[JobRow]:
        """Queued, running and paused jobs."""
        ...

    async def in_flight_attempts(self) -> list[AttemptRow]:
        """Attempts without an outcome, of every job whatever its status."""
        ...

    async def holds(self) -> list[HoldRow]: ...

    # ----- reading, for views ----------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobRow | None: ...
    async def get_spec(self, job_id: str) -> dict[str, Any] | None: ...
    async def get_sheets(self, job_id: str) -> list[SheetRow]: ...
    async def get_sheet(self, job_id: str, sheet_num: int) -> SheetRow | None: ...
    async def get_job_page(
        self, job_id: str, statuses: Sequence[SheetStatus] | None, offset: int, limit: int
    ) -> tuple[JobRow, list[SheetRow], int] | None:
        """A job with one page of its sheets (and how many match), read in one snapshot."""
        ...

    async def get_attempt(self, job_id: str, sheet_num: int, attempt: int) -> AttemptRow | None: ...
    async def get_latest_attempt(self, job_id: str, sheet_num: int) -> AttemptRow | None: ...
    async def get_history(
        self, job_id: str, sheet_num: int | None, limit: int, offset: int
    ) -> tuple[list[AttemptRow], int]:
        """Attempts ordered by (sheet_num, attempt), one page, and how many there are."""
        ...

    async def query_jobs(self, query: JobQuery) -> tuple[list[JobRow], str | None]:
        """Newest first, one page, and the cursor of the next page (None on the last).
        A cursor the store did not hand out raises `StoreError`."""
        ...

    async def jobs_with_status(self, statuses: Sequence[JobStatus]) -> list[JobRow]: ...
    async def job_files(self) -> list[JobFiles]:
        """Every job, with only what the reconciliation of its files needs (the whole rows
        of a home of 10^5 jobs took seconds to decode, at every start)."""
        ...

    async def jobs_with_pending_hooks(self) -> list[JobRow]:
        """Ended jobs whose notifications or follow-up are not done yet (after a restart)."""
        ...

    async def count_jobs_by_status(self) -> dict[str, int]:
        """Kept as jobs change, not counted on read; statuses without jobs are absent."""
        ...

    async def count_running_sheets(self) -> int: ...
    async def reclaim_space(self) -> int:
        """Return space freed by deletions to the file system; the units freed."""
        ...

    async def get_task(self, task_id: str) -> TaskRow | None: ...
    async def open_tasks(self, job_ids: Sequence[str]) -> list[TaskRow]:
        """Tasks of these jobs that have no final state yet."""
        ...

    async def expired_tasks(self, now: datetime, limit: int) -> list[str]:
        """Ids of tasks whose `expires_at` has passed, soonest first."""
        ...

    async def next_task_expiry(self) -> datetime | None: ...

    async def pending_approvals(self, limit: int) -> tuple[list[SheetRow], int]:
        """Sheets waiting for a person's decision (oldest first, at most `limit`), and how
        many there are."""
        ...

    async def overview(self, approvals_limit: int) -> Overview:
        """`count_jobs_by_status` and `pending_approvals(approvals_limit)` in one read."""
        ...


# The seeds' name for the state store interface (SPEC §2).
StateBackend = Store

"""Start-up reconciliation and graceful shutdown: what a stopped conductor left in flight is
reconciled from the store, never from memory.

Lease-aware: an in-flight attempt is reclaimed only if this conductor owns it (a previous
run of the same `conductor_id`), if no owner is recorded (a database from before leases),
or if its owner's lease has run out. Process groups are killed only for attempts that were
ours: another conductor's pids mean nothing on this host.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from datetime import datetime

import anyio
import structlog
from anyio.abc import TaskGroup

from podium.core.engine.approvals import awaiting, end_unrun
from podium.core.engine.context import EngineContext
from podium.core.engine.rules import (
    JOB_HAD_ENDED,
    LEASE_RAN_OUT,
    OUTPUT_TAIL_BYTES,
    SHUT_DOWN,
    STOPPED_WHILE_RUNNING,
    final_job_status,
    interrupt,
    interrupt_in_ended_job,
    last_known_running,
    reset_for_retry,
    set_job_status,
)
from podium.core.engine.state import EngineState, RunningSheet
from podium.core.engine.tx import Op, Tx
from podium.core.engine.writer import Writer
from podium.core.models import (
    ErrorCategory,
    JobStatus,
    PauseReason,
    SheetStatus,
    WaitingReason,
    utcnow,
)
from podium.core.runner import cgroups
from podium.core.runner.escapees import end_attempt_processes, end_processes, find_marked_by_home
from podium.core.runner.groups import kill_now
from podium.core.runner.logs import read_output_tail
from podium.core.runner.process import (
    ProcessGroupRef,
    groups_marked,
    kill_recorded_group,
    terminate_group,
)
from podium.core.runner.runner import attempt_marker, stop_seconds
from podium.core.store.rows import AttemptRow, JobRow

log = structlog.get_logger("podium.recovery")

AttemptKey = tuple[str, int, int]
# An attempt recovery cut off: its row as recorded, why, and what it printed.
Cut = tuple[AttemptRow, str, str | None]

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED)


class Recovery:
    def __init__(self, ctx: EngineContext, writer: Writer, state: EngineState) -> None:
        self.ctx = ctx
        self.writer = writer
        self.state = state
        # Where groups of reclaimed attempts are ended: a kill waits out kill_grace_seconds,
        # which the heartbeat that reclaims must not wait for (its own lease would lapse).
        self.background: TaskGroup | None = None

    def _claimable(self, attempt: AttemptRow, now: datetime) -> bool:
        if attempt.conductor_id in (None, self.ctx.config.conductor_id):
            return True
        return attempt.lease_expires_at is None or attempt.lease_expires_at <= now

    def _ours(self, attempt: AttemptRow) -> bool:
        return attempt.conductor_id in (None, self.ctx.config.conductor_id)

    async def recover(self, others_alive: bool = False) -> tuple[list[str], datetime | None]:
        """Reconcile what a dead conductor left behind. Returns the job ids touched and, if
        attempts of another conductor still hold a lease, when the first of them runs out.

        In-flight attempts become `interrupted` (their process group killed first, but only
        when pgid and leader start time both match the record), their sheets go back to
        `pending`, and active jobs become paused (`interrupted`), or continue with auto_resume.
        With `others_alive` (other conductors share the store and are running), the jobs
        were never stopped: they keep their status and the others carry on with them.
        """
        store = self.writer.store
        now = utcnow()
        in_flight = await store.in_flight_attempts()
        claimed = [a for a in in_flight if self._claimable(a, now)]
        foreign = [a for a in in_flight if not self._claimable(a, now)]
        # Leftover groups are ended side by side: start-up waits one grace period, not one per
        # attempt.
        async with anyio.create_task_group() as kills:
            for attempt in claimed:
                if not self._ours(attempt):
                    continue
                if attempt.pgid and attempt.pid and attempt.pid_start_time is not None:
                    ref = ProcessGroupRef(attempt.pid, attempt.pgid, attempt.pid_start_time)
                    kills.start_soon(self._kill_leftover, ref)
                kills.start_soon(self._kill_marked, attempt)
        # Whatever else still carries this home's mark: an attempt another conductor took
        # back after this one's lease ran out (no longer in flight, so not among the above)
        # runs on orphaned, beside the run that replaced it.
        leftovers = await anyio.to_thread.run_sync(find_marked_by_home, str(self.ctx.config.home))
        if leftovers:
            log.warning("ending processes of attempts taken back meanwhile", count=len(leftovers))
            await end_processes(leftovers, self.ctx.config.kill_grace_seconds)
        # Attempt cgroups the crash left: whatever is still in them is ended, whoever ran it.
        ended = await anyio.to_thread.run_sync(cgroups.release_leftovers, str(self.ctx.config.home))
        if ended:
            log.warning("killed leftover processes in attempt cgroups", count=ended)
        outputs = await anyio.to_thread.run_sync(_outputs, claimed)
        self.state.holds = {h.hold_key: h for h in await store.holds()}
        jobs = [j.job_id for j in await store.active_jobs()]
        jobs += sorted({a.job_id for a in claimed} - set(jobs))
        for job_id in jobs:
            await self.writer.load(job_id)
        # Sheets another live conductor is running: theirs, left alone.
        elsewhere = {(a.job_id, a.sheet_num) for a in foreign}
        auto_resume = self.ctx.config.auto_resume
        state = self.state

        def apply(tx: Tx) -> list[str]:
            touched: set[str] = set()
            # The attempts cut off, why and what they printed, for their sheets to say so
            # and how long they ran.
            cut: dict[AttemptKey, Cut] = {}
            for attempt in claimed:
                row = tx.edit_attempt(attempt)
                why = STOPPED_WHILE_RUNNING if self._ours(attempt) else LEASE_RAN_OUT
                # It ran until its owner last renewed its lease (or from its start, never
                # renewed), not until this start noticed: the time in between nobody ran it.
                ended = last_known_running(row, tx.now)
                interrupt(tx.now, why, attempt=row, ended_at=ended)
                key = (row.job_id, row.sheet_num, row.attempt)
                cut[key] = (row, why, outputs.get(key))
                touched.add(attempt.job_id)
            for job_id in jobs:
                if job_id not in state.jobs:
                    continue
                theirs = {num for jid, num in elsewhere if jid == job_id}
                if _reconcile(tx, job_id, auto_resume, theirs, others_alive, cut):
                    touched.add(job_id)
            return sorted(touched)

        touched = await self.writer.run(Op(apply, jobs=jobs, name="recover"))
        expiries = [a.lease_expires_at for a in foreign if a.lease_expires_at is not None]
        return touched, min(expiries) if expiries else None

    async def reclaim_expired(self) -> datetime | None:
        """While running: take back the attempts of other conductors whose lease ran out
        (their owner is gone or cut off; its late writes are refused, since the rows move on).
        Their sheets go back to `pending` for whoever runs the job (or are cancelled, in a
        job that has ended meanwhile). Returns when the next foreign lease runs out, if any
        is left.

        Several conductors may reclaim the same attempt at once: the attempts are held in
        the view while the op runs, so a refused reclaim re-reads them and finds the attempt
        taken back already (or renewed: its owner was only slow)."""
        store = self.writer.store
        now = utcnow()
        foreign = [a for a in await store.in_flight_attempts() if not self._ours(a)]
        expired = [a for a in foreign if self._claimable(a, now)]
        left = [a.lease_expires_at for a in foreign if a not in expired and a.lease_expires_at]
        if not expired:
            return min(left) if left else None
        keys = [(a.job_id, a.sheet_num, a.attempt) for a in expired]
        for attempt, key in zip(expired, keys, strict=True):
            self.state.attempts.setdefault(key, attempt)
        outputs = await anyio.to_thread.run_sync(_outputs, expired)
        jobs = sorted({a.job_id for a in expired})
        for job_id in jobs:
            if job_id not in self.state.jobs:
                await self.writer.load(job_id)
        state = self.state

        def apply(tx: Tx) -> list[AttemptKey]:
            taken: list[AttemptKey] = []
            for key in keys:
                row = tx.attempt(key)
                if row is None or row.outcome is not None:
                    continue  # another conductor took it back first
                if row.lease_expires_at is not None and row.lease_expires_at > tx.now:
                    continue  # renewed after all: its owner was slow, not gone
                taken.append(key)
                job_id, num, number = key
                attempt = tx.edit_attempt(row)
                # Its owner last showed it running when it last renewed the lease.
                ended = last_known_running(attempt, tx.now)
                sheet = None
                if job_id in state.jobs:
                    current = tx.sheet(job_id, num)
                    if current.status is SheetStatus.RUNNING and current.attempts == number:
                        sheet = tx.edit_sheet(job_id, num)
                if sheet is not None and tx.job(job_id).status.is_terminal:
                    interrupt_in_ended_job(
                        tx.now,
                        LEASE_RAN_OUT,
                        attempt=attempt,
                        sheet=sheet,
                        category=_ended_category(tx.job(job_id)),
                        ended_at=ended,
                        output=outputs.get(key),
                    )
                else:
                    interrupt(
                        tx.now,
                        LEASE_RAN_OUT,
                        attempt=attempt,
                        sheet=sheet,
                        ended_at=ended,
                        output=outputs.get(key),
                    )
            return taken

        hosts = {c.conductor_id: c.host for c in await store.conductors()}
        try:
            taken = await self.writer.run(Op(apply, jobs=jobs, name="reclaim"))
        finally:
            for key in keys:
                held = self.state.attempts.get(key)
                if held is not None and not self._ours(held):
                    del self.state.attempts[key]
        if taken:
            log.warning("reclaimed attempts whose conductor's lease ran out", count=len(taken))
        self._end_reclaimed_here(
            [a for a in expired if (a.job_id, a.sheet_num, a.attempt) in taken], hosts
        )
        return min(left) if left else None

    def _end_reclaimed_here(self, taken: list[AttemptRow], hosts: Mapping[str, str]) -> None:
        """A conductor killed on a host that lives on leaves its sheets running, orphaned: the
        sheets taken back from it are about to run again, so their old groups on this host
        are ended (only where the recorded leader still matches, pid and start time: the
        same proof of ownership a restart asks for). On another host nobody can reach them;
        a dead host took them with it."""
        here = socket.gethostname()
        for attempt in taken:
            owner = attempt.conductor_id
            if owner is None or hosts.get(owner) != here:
                continue
            if not (attempt.pgid and attempt.pid and attempt.pid_start_time is not None):
                continue
            ref = ProcessGroupRef(attempt.pid, attempt.pgid, attempt.pid_start_time)
            if self.background is not None:
                self.background.start_soon(self._kill_leftover, ref)

    async def _kill_leftover(self, ref: ProcessGroupRef) -> None:
        if await kill_recorded_group(ref, self.ctx.config.kill_grace_seconds):
            log.warning("killed leftover process group", pgid=ref.pgid)

    async def _kill_marked(self, attempt: AttemptRow) -> None:
        """Processes that carry this attempt's mark in their environment, or its tag (see
        `escapees`), are ours even when no process group was recorded (a crash right after
        spawn), the leader is gone, or they left the group (`setsid`, `env -i`)."""
        marker = attempt_marker(
            str(self.ctx.config.home), attempt.job_id, attempt.sheet_num, attempt.attempt
        )
        groups = await anyio.to_thread.run_sync(groups_marked, "PODIUM_ATTEMPT_OF", marker)
        for pgid in groups:
            log.warning("killing unrecorded leftover process group", pgid=pgid)
            await terminate_group(pgid, self.ctx.config.kill_grace_seconds)
        ended = await end_attempt_processes(
            marker, attempt.started_at.timestamp(), self.ctx.config.kill_grace_seconds
        )
        if ended:
            log.warning("killed leftover processes outside the group", count=ended)

    async def shutdown(self, others_alive: bool = False) -> None:
        """End running sheets and leave their jobs paused (`shutdown`). A pending modify is
        called off: its job stays paused until a resume (or auto_resume at the next start),
        rather than queued behind the user's back. With `others_alive`, jobs keep their
        status: the sheets this conductor ends go back to `pending` for the others."""
        state = self.state

        def apply(tx: Tx) -> list[str]:
            if others_alive:
                return []
            busy = {e.job_id for e in state.running.values()}
            paused = []
            for job_id, job_state in state.jobs.items():
                job = job_state.job
                # Jobs in flight are paused; a queued job that never started stays queued.
                # A job paused by a person (or its cost limit) whose sheets still run keeps
                # that reason: `shutdown` would let auto_resume start it at the next start.
                # A pending modify is the system's pause, so it counts as in flight.
                in_flight = job.status is JobStatus.QUEUED or (
                    job.status is JobStatus.PAUSED and job.pending_resume is not None
                )
                if job.status is JobStatus.RUNNING or (job_id in busy and in_flight):
                    edited = tx.edit_job(job_id)
                    set_job_status(edited, JobStatus.PAUSED, tx.now)
                    edited.pause_reason = PauseReason.SHUTDOWN
                    edited.pending_resume = None
                    paused.append(job_id)
                elif job.pending_resume is not None:
                    tx.edit_job(job_id).pending_resume = None
            return paused

        await self.writer.run(Op(apply, name="shutdown"))
        entries = list(state.running.values())
        for entry in entries:
            # A cancel or deadline already under way keeps its reason.
            entry.stop_reason = entry.stop_reason or "shutdown"
            entry.control.request_cancel()
        # Every attempt it ends is recorded by the stop itself: one still in flight would be
        # found by the next start as if the conductor had crashed. The runner's whole kill
        # sequence is waited for (a sheet that ignores SIGTERM, and what left its group, each
        # get the kill grace), not just one grace period.
        with anyio.move_on_after(stop_seconds(self.ctx.config.kill_grace_seconds)):
            for entry in entries:
                await entry.done.wait()
        stuck = [e for e in entries if not e.done.is_set()]
        if stuck:
            await self._record_stuck(stuck)

    async def _record_stuck(self, entries: list[RunningSheet]) -> None:
        """Attempts whose runner has not ended them within its own bound (it is stuck): what
        they left running is SIGKILLed now and the stop records them interrupted itself; the
        runner's late result is then refused (the attempt is no longer in flight)."""
        log.error("attempts still ending after the kill sequence; killed", count=len(entries))
        store = self.writer.store
        home = str(self.ctx.config.home)
        found: list[RunningSheet] = []
        for entry in entries:
            row = await store.get_attempt(entry.job_id, entry.sheet_num, entry.attempt)
            if row is None or row.outcome is not None:
                continue
            found.append(entry)
            marker = attempt_marker(home, entry.job_id, entry.sheet_num, entry.attempt)
            for pgid in await anyio.to_thread.run_sync(groups_marked, "PODIUM_ATTEMPT_OF", marker):
                kill_now(pgid)
            await end_attempt_processes(marker, row.started_at.timestamp(), 0)

        def mark(entries: list[RunningSheet]) -> None:
            for entry in entries:
                entry.recorded_by_stop = True

        def apply(tx: Tx) -> None:
            recorded = []
            for entry in found:
                key = (entry.job_id, entry.sheet_num, entry.attempt)
                current = tx.attempt(key)
                if current is None or current.outcome is not None:
                    continue  # its runner recorded it after all
                recorded.append(entry)
                attempt = tx.edit_attempt(current)
                sheet = tx.sheet(entry.job_id, entry.sheet_num)
                edited = None
                if sheet.status is SheetStatus.RUNNING and sheet.attempts == entry.attempt:
                    edited = tx.edit_sheet(entry.job_id, entry.sheet_num)
                output = entry.control.output_so_far(OUTPUT_TAIL_BYTES)
                log_file = entry.control.log
                attempt.log_truncated = log_file is not None and log_file.truncated
                if edited is not None and tx.job(entry.job_id).status.is_terminal:
                    # A cancel or deadline under way: the sheet ends as the job did.
                    interrupt_in_ended_job(
                        tx.now,
                        SHUT_DOWN,
                        attempt=attempt,
                        sheet=edited,
                        category=_ended_category(tx.job(entry.job_id)),
                        output=output,
                    )
                else:
                    interrupt(tx.now, SHUT_DOWN, attempt=attempt, sheet=edited, output=output)
            tx.after(lambda: mark(recorded))

        jobs = sorted({e.job_id for e in found})
        if found:
            await self.writer.run(Op(apply, jobs=jobs, name="record stuck attempts"))


def _ended_category(job: JobRow) -> ErrorCategory:
    """What the sheets of an ended job are cancelled under: its deadline, or a cancel."""
    if (job.error or "").startswith("deadline"):
        return ErrorCategory.DEADLINE
    return ErrorCategory.CANCELLED


def _outputs(attempts: list[AttemptRow]) -> dict[AttemptKey, str | None]:
    """What each attempt printed, from the end of its log: the sheet it was cut off from shows
    that, not an earlier attempt's output (None where its log is empty or not on this host)."""
    return {
        (a.job_id, a.sheet_num, a.attempt): read_output_tail(a.log_path, OUTPUT_TAIL_BYTES)
        for a in attempts
    }


def _reconcile(
    tx: Tx,
    job_id: str,
    auto_resume: bool,
    theirs: set[int],
    others_alive: bool = False,
    cut: Mapping[AttemptKey, Cut] | None = None,
) -> bool:
    """One job after a restart; returns whether anything changed. Sheets in `theirs` are
    being run by another live conductor: they, and the job's status, are left as they are;
    so is the status of every job when other conductors are running (they run it on).
    `cut` holds the attempts recovery has just recorded interrupted, why and what they
    printed, by (job, sheet, attempt)."""
    now = tx.now
    job = tx.job(job_id)
    changed = False
    if job.status.is_terminal:
        # Already terminal (a cancel or deadline that the crash interrupted): it keeps its
        # status; its sheets still running or waiting are cancelled.
        category = _ended_category(job)
        for num, sheet in tx.sheets(job_id).items():
            if sheet.status.is_terminal or num in theirs:
                continue
            if sheet.status is SheetStatus.RUNNING:
                # Its attempt was cut off: the sheet shows that attempt's output, not the
                # one before's (still in the row, since an attempt's start keeps it).
                attempt, why, output = (cut or {}).get(
                    (job_id, num, sheet.attempts), (None, STOPPED_WHILE_RUNNING, None)
                )
                interrupt_in_ended_job(
                    now,
                    why,
                    attempt=attempt,
                    sheet=tx.edit_sheet(job_id, num),
                    category=category,
                    output=output,
                )
            else:
                end_unrun(tx, job_id, num, SheetStatus.CANCELLED, JOB_HAD_ENDED, category)
            changed = True
        return changed
    for num, sheet in tx.sheets(job_id).items():
        if num in theirs or awaiting(sheet):
            # A pending approval is a question to a person, not work in flight: it waits on.
            continue
        if (
            sheet.status is SheetStatus.WAITING
            and sheet.waiting_reason is WaitingReason.RETRY_BACKOFF
            and sheet.waiting_until is not None
        ):
            # Its backoff is a moment in the store, not a process: it waits on for it, so a
            # restart (or a crash loop) never makes a retry come sooner.
            continue
        if sheet.status is SheetStatus.RUNNING:
            attempt, why, output = (cut or {}).get(
                (job_id, num, sheet.attempts), (None, STOPPED_WHILE_RUNNING, None)
            )
            reset = tx.edit_sheet(job_id, num)
            interrupt(now, why, attempt=attempt, sheet=reset, output=output)
            changed = True
        elif sheet.status is SheetStatus.WAITING:
            # Shown waiting for a hold or backpressure: the next pass shows it again. The
            # retry and rate-limit budgets survive a restart: a crash is not a retry.
            reset_for_retry(tx.edit_sheet(job_id, num), now, fresh_budget=False)
            changed = True
    if theirs:
        return changed
    final = final_job_status(tx.sheets(job_id).values())
    if others_alive and final is None:
        if changed:
            tx.edit_job(job_id).updated_at = now
        return changed
    in_flight = job.status is JobStatus.RUNNING or job.pending_resume is not None
    if final is not None:
        edited = tx.edit_job(job_id)
        set_job_status(edited, final[0], now)
        edited.error = final[1]
    elif in_flight or (job.status is JobStatus.QUEUED and changed):
        # Running, or paused only until a modify's running sheets ended: interrupted.
        edited = tx.edit_job(job_id)
        if auto_resume:
            set_job_status(edited, JobStatus.QUEUED, now)
        else:
            set_job_status(edited, JobStatus.PAUSED, now)
            edited.pause_reason = PauseReason.INTERRUPTED
    elif auto_resume and job.pause_reason in (PauseReason.INTERRUPTED, PauseReason.SHUTDOWN):
        set_job_status(tx.edit_job(job_id), JobStatus.QUEUED, now)
    elif not changed:
        return False
    if tx.job(job_id).pending_resume is not None:
        tx.edit_job(job_id).pending_resume = None
    if changed:
        tx.edit_job(job_id).updated_at = now
    return True

"""Running a sheet's process: in its own group, supervised (cancel, suspend, timeouts), its
output logged; the group is owned from the instant it exists and emptied when it ends. The
group primitives live in `groups`; their names are re-exported here for callers of this
module."""

from __future__ import annotations

import asyncio
import signal as signal_mod
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import anyio
import anyio.abc

from podium.core.models import utcnow
from podium.core.runner import threads
from podium.core.runner.child import Child
from podium.core.runner.groups import (
    SETTLE_SECONDS,
    ProcessGroupRef,
    UnsafeKillError,
    create_time,
    group_alive,
    group_members,
    groups_marked,
    kill_now,
    kill_recorded_group,
    leader_matches,
    signal_group,
    terminate_group,
)
from podium.core.runner.logs import CappedLog, TailBuffer

STDOUT_TAIL_BYTES = 4096


class RunControl:
    """Suspend/resume/cancel for one attempt; create one per attempt.

    Requests made before the process exists are remembered and applied right after spawn.
    It also accounts suspended time, so timeouts count running time only.
    """

    def __init__(self) -> None:
        self._pgid: int | None = None
        self._suspended = False
        self._cancel_requested = False
        self._suspended_since: float | None = None
        self._suspended_total = 0.0
        self._cancel_event: anyio.Event | None = None
        self._listener: asyncio.Event | None = None
        # The attempt's stdout tail as it grows (set once its process is about to start), so
        # views of a running sheet show what it printed so far without touching the store.
        self.output: TailBuffer | None = None
        # Its log, once made: whether it reached log_max_bytes is known to whoever records
        # the attempt without the runner's result (a stop past the kill sequence).
        self.log: CappedLog | None = None

    def output_so_far(self, max_bytes: int) -> str | None:
        """The last `max_bytes` of the attempt's stdout so far; None before it started."""
        return self.output.recent_text(max_bytes) if self.output is not None else None

    async def wait_cancel_requested(self) -> None:
        if self._cancel_event is None:
            self._cancel_event = anyio.Event()
        if self._cancel_requested:
            return
        await self._cancel_event.wait()

    @property
    def suspended(self) -> bool:
        return self._suspended

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    async def suspend(self) -> None:
        if self._suspended:
            return
        self._suspended = True
        if self._pgid is not None:
            self._suspended_since = time.monotonic()
            signal_group(self._pgid, signal_mod.SIGSTOP)

    async def resume(self) -> None:
        self.resume_now()

    def resume_now(self) -> None:
        """SIGCONT the suspended group (nothing to wait for)."""
        if not self._suspended:
            return
        self._suspended = False
        if self._pgid is not None:
            signal_group(self._pgid, signal_mod.SIGCONT)
        self._close_suspension(time.monotonic())
        self._notify()

    def request_cancel(self) -> None:
        self._cancel_requested = True
        if self._cancel_event is not None:
            self._cancel_event.set()
        self._notify()

    def _notify(self) -> None:
        # Wakes a supervisor waiting for "something changed" (cancel, end of a suspension).
        if self._listener is not None:
            self._listener.set()

    def listen(self, event: asyncio.Event) -> None:
        """Set `event` at the next cancel request or resume (at once if a cancel is already
        requested)."""
        self._listener = event
        if self._cancel_requested:
            event.set()

    def suspended_seconds(self, now: float) -> float:
        """Time spent suspended since the process was spawned (monotonic clock)."""
        current = now - self._suspended_since if self._suspended_since is not None else 0.0
        return self._suspended_total + current

    def _close_suspension(self, now: float) -> None:
        if self._suspended_since is not None:
            self._suspended_total += now - self._suspended_since
            self._suspended_since = None

    def _attach(self, pgid: int) -> None:
        self._pgid = pgid
        if self._suspended:
            self._suspended_since = time.monotonic()
            signal_group(pgid, signal_mod.SIGSTOP)

    def _detach(self) -> None:
        # The group is being terminated (which sends SIGCONT), so it is no longer suspended.
        self._close_suspension(time.monotonic())
        self._pgid = None
        self._suspended = False


@dataclass
class ProcessOutcome:
    exit_code: int | None
    signal: int | None
    timed_out: bool
    idle_timed_out: bool
    cancelled: bool
    duration_seconds: float  # running time, excluding suspended time
    started_at: datetime
    ended_at: datetime
    stdout_tail: str
    log_truncated: bool
    spawn_error: str | None
    log_error: str | None = None  # the log could not be written (e.g. disk full)
    stdout_bytes: int = 0  # all the process printed on stdout (the tail keeps the end)


@dataclass
class _Execution:
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    idle_timed_out: bool = False
    cancelled: bool = False
    duration_seconds: float = 0.0
    spawn_error: str | None = None

    def outcome(
        self,
        started_at: datetime,
        stdout_tail: TailBuffer,
        *,
        log_truncated: bool = False,
        log_error: str | None = None,
    ) -> ProcessOutcome:
        return ProcessOutcome(
            exit_code=self.exit_code,
            signal=self.signal,
            timed_out=self.timed_out,
            idle_timed_out=self.idle_timed_out,
            cancelled=self.cancelled,
            duration_seconds=self.duration_seconds,
            started_at=started_at,
            ended_at=utcnow(),
            stdout_tail=stdout_tail.text(),
            log_truncated=log_truncated,
            spawn_error=self.spawn_error,
            log_error=log_error,
            stdout_bytes=stdout_tail.written,
        )


def _spawn_error_text(argv: Sequence[str], exc: OSError) -> str:
    """The reason alone when it concerns the executable; callers name the executable."""
    what = exc.strerror or exc.__class__.__name__
    if exc.filename is None or str(exc.filename) == argv[0]:
        return what
    return f"{what}: {str(exc.filename)!r}"  # e.g. the working directory is missing


async def _execute(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdin_data: bytes | None,
    on_output: Callable[[bytes, bool], None],
    timeout_seconds: float | None,
    idle_timeout_seconds: float | None,
    kill_grace_seconds: float,
    control: RunControl | None,
    on_spawn: Callable[[ProcessGroupRef], Awaitable[None]] | None,
    prepare: Callable[[], None] | None = None,
) -> _Execution:
    """Run argv in a new process group; on_output(chunk, is_stdout) receives all output.
    `prepare()` runs just before the spawn, in the same worker thread (e.g. creating the
    log file, which can take a good part of a millisecond)."""
    result = _Execution()
    if not argv:
        if prepare is not None:
            await anyio.to_thread.run_sync(prepare)
        result.spawn_error = "empty command line"
        return result

    # A native asyncio cancel (`task.cancel()`) breaks through anyio's shield at once, while
    # the worker thread still spawns, and the thread's result is lost with it. Whichever side
    # comes second ends the child: the thread if the spawn was abandoned before it finished,
    # the caller if the child was handed over before the cancel.
    handover = threading.Lock()
    handed: list[Child] = []
    abandoned = False

    def start() -> tuple[Child | None, float, float, OSError | None]:
        if prepare is not None:
            prepare()
        try:
            child = Child.spawn(argv, cwd=cwd, env=env, with_stdin=stdin_data is not None)
        except OSError as exc:
            return None, 0.0, 0.0, exc
        # Running time counts from here, not from when the loop hears of the child: under
        # load that hand-back alone took a good part of a short sheet's run.
        spawned_at = time.monotonic()
        started = create_time(child.pid)  # before the handover: a zombie has it too
        with handover:
            if abandoned:
                child.abandon()
                return None, 0.0, 0.0, None
            handed.append(child)
        return child, started, spawned_at, None

    # In a worker thread: the fork waits for the child's exec, which under load takes
    # milliseconds the event loop would otherwise stand still for. Shielded, and nothing
    # awaited between the spawn and the try/finally that owns the group: an anyio
    # cancellation cannot land in between, so the group is ours (and killed) from the instant
    # it exists.
    try:
        with anyio.CancelScope(shield=True):
            child, start_time, spawned_at, error = await threads.run_sync(start)
    except BaseException:
        with handover:
            abandoned = True
        for leftover in handed:
            leftover.abandon()
        raise
    if child is None:
        assert error is not None
        result.spawn_error = _spawn_error_text(argv, error)
        return result
    # start_new_session makes the child the leader of a group with its pid.
    pgid = child.pid
    try:
        await _supervise(
            child,
            result,
            stdin_data=stdin_data,
            on_output=on_output,
            timeout_seconds=timeout_seconds,
            idle_timeout_seconds=idle_timeout_seconds,
            kill_grace_seconds=kill_grace_seconds,
            control=control,
            on_spawn=on_spawn,
            start_time=start_time,
            spawned_at=spawned_at,
        )
    finally:
        try:
            with anyio.CancelScope(shield=True):
                if control is not None:
                    control._detach()
                # Covers cancellation of this coroutine and errors from on_spawn.
                await terminate_group(pgid, kill_grace_seconds)
                if not child.exited.is_set():
                    with anyio.move_on_after(SETTLE_SECONDS):
                        await child.wait()
        except BaseException:
            # A repeated native asyncio cancel can break through the shield; still leave
            # nothing running behind.
            kill_now(pgid)
            raise
        finally:
            child.close()

    code = child.returncode
    if code is not None:
        if code < 0:
            result.signal = -code
        else:
            result.exit_code = code
    return result


async def _supervise(
    child: Child,
    result: _Execution,
    *,
    stdin_data: bytes | None,
    on_output: Callable[[bytes, bool], None],
    timeout_seconds: float | None,
    idle_timeout_seconds: float | None,
    kill_grace_seconds: float,
    control: RunControl | None,
    on_spawn: Callable[[ProcessGroupRef], Awaitable[None]] | None,
    start_time: float,
    spawned_at: float,
) -> None:
    """Take the output, wait for the leader to exit, and stop the group on cancel or timeout.
    Sleeps until something happens or the next deadline: a running sheet costs no timer
    wake-ups, and a trivial one no task besides its own."""
    pgid = child.pid

    def running_time() -> float:
        now = time.monotonic()
        suspended = control.suspended_seconds(now) if control is not None else 0.0
        return max(0.0, now - spawned_at - suspended)

    last_output = 0.0  # running time at the last output, for the idle timeout
    loop = asyncio.get_running_loop()
    wakeup = asyncio.Event()

    def output(chunk: bytes, is_stdout: bool) -> None:
        nonlocal last_output
        if idle_timeout_seconds is not None:
            last_output = running_time()
        on_output(chunk, is_stdout)

    def next_deadline() -> float | None:
        """Seconds of running time until a timeout would fire (None: no timeout)."""
        now = running_time()
        left = []
        if timeout_seconds is not None:
            left.append(timeout_seconds - now)
        if idle_timeout_seconds is not None:
            left.append(idle_timeout_seconds - (now - last_output))
        return min(left) if left else None

    if control is not None:
        control._attach(pgid)
    child.watch(output, lambda: wakeup.set())
    if on_spawn is not None:
        # Raised to the caller, whose finally block still terminates the group.
        await on_spawn(ProcessGroupRef(child.pid, pgid, start_time))
    feeding = loop.create_task(child.feed(stdin_data)) if stdin_data is not None else None
    try:
        while not child.exited.is_set():
            if control is not None and control.cancel_requested:
                result.cancelled = True
            else:
                left = next_deadline()
                if left is None or left > 0:
                    # Sleep until the process exits, a cancel or resume arrives, or the
                    # next timeout is due; then look again.
                    wakeup.clear()
                    if control is not None:
                        control.listen(wakeup)
                    timer = loop.call_later(left, wakeup.set) if left is not None else None
                    try:
                        await wakeup.wait()
                    finally:
                        if timer is not None:
                            timer.cancel()
                    continue
                if timeout_seconds is not None and running_time() >= timeout_seconds:
                    result.timed_out = True
                else:
                    result.idle_timed_out = True
            if control is not None:
                control._detach()
            await terminate_group(pgid, kill_grace_seconds)
            if not child.exited.is_set():
                with anyio.move_on_after(SETTLE_SECONDS):
                    await child.wait()
            break
    finally:
        if feeding is not None:
            feeding.cancel()

    result.duration_seconds = running_time()
    if control is not None:
        control._detach()
    # The leader is gone; anything it left in its group (a backgrounded grandchild) goes
    # too. That also closes the pipes the grandchild inherited, so the output ends.
    await terminate_group(pgid, kill_grace_seconds)
    if not child.drained.is_set():
        with anyio.move_on_after(SETTLE_SECONDS):
            await child.drained.wait()
    # Output pipes still open now are held by a process that left our group; stop reading
    # rather than wait for it.
    child.close_output()


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdin_data: bytes | None,
    log_path: Path,
    log_max_bytes: int,
    timeout_seconds: float | None,
    idle_timeout_seconds: float | None,
    kill_grace_seconds: float,
    control: RunControl | None = None,
    on_spawn: Callable[[ProcessGroupRef], Awaitable[None]] | None = None,
    stdout_tail_bytes: int = STDOUT_TAIL_BYTES,
) -> ProcessOutcome:
    """Run one sheet attempt; stdout+stderr go to a capped log at `log_path`.

    `env` is the complete environment. Never raises for a command that cannot start: the
    outcome carries `spawn_error` instead.
    """
    started_at = utcnow()
    tail = TailBuffer(stdout_tail_bytes)
    if control is not None:
        control.output = tail
    logs: list[CappedLog] = []

    def open_log() -> None:
        logs.append(CappedLog(log_path, log_max_bytes))
        if control is not None:
            control.log = logs[0]

    def on_output(chunk: bytes, is_stdout: bool) -> None:
        logs[0].write(chunk)
        if is_stdout:
            tail.write(chunk)

    try:
        execution = await _execute(
            argv,
            cwd=cwd,
            env=env,
            stdin_data=stdin_data,
            on_output=on_output,
            timeout_seconds=timeout_seconds,
            idle_timeout_seconds=idle_timeout_seconds,
            kill_grace_seconds=kill_grace_seconds,
            control=control,
            on_spawn=on_spawn,
            prepare=open_log,
        )
        log = logs[0]
        if execution.spawn_error is not None:
            log.write(f"[podium: cannot start {argv[0]!r}: {execution.spawn_error}]\n".encode())
    finally:
        for opened in logs:
            opened.close()
    return execution.outcome(
        started_at, tail, log_truncated=log.truncated, log_error=log.write_error
    )


async def run_captured(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout_seconds: float | None,
    kill_grace_seconds: float,
    capture_bytes: int = 64 * 1024,
    stdin_data: bytes | None = None,
) -> tuple[ProcessOutcome, str]:
    """Run a helper command (not a sheet) with output captured in memory, not logged.

    Returns the outcome and the last `capture_bytes` of stdout and stderr, interleaved.
    """
    started_at = utcnow()
    captured = TailBuffer(capture_bytes)
    stdout_tail = TailBuffer(STDOUT_TAIL_BYTES)

    def on_output(chunk: bytes, is_stdout: bool) -> None:
        captured.write(chunk)
        if is_stdout:
            stdout_tail.write(chunk)

    execution = await _execute(
        argv,
        cwd=cwd,
        env=env,
        stdin_data=stdin_data,
        on_output=on_output,
        timeout_seconds=timeout_seconds,
        idle_timeout_seconds=None,
        kill_grace_seconds=kill_grace_seconds,
        control=None,
        on_spawn=None,
    )
    return execution.outcome(started_at, stdout_tail), captured.text()


__all__ = [
    "ProcessGroupRef",
    "ProcessOutcome",
    "RunControl",
    "UnsafeKillError",
    "group_alive",
    "group_members",
    "groups_marked",
    "kill_recorded_group",
    "leader_matches",
    "run_captured",
    "run_process",
    "signal_group",
    "terminate_group",
]

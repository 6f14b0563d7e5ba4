"""Process groups, supervision and logs, against real subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from podium.core.runner import groups as groups_module
from podium.core.runner import process as process_module
from podium.core.runner.logs import (
    CappedLog,
    TailBuffer,
    read_log_range,
    read_log_tail,
    truncation_marker,
)
from podium.core.runner.process import (
    ProcessGroupRef,
    ProcessOutcome,
    RunControl,
    UnsafeKillError,
    group_members,
    kill_recorded_group,
    leader_matches,
    run_process,
    signal_group,
    terminate_group,
)

pytestmark = pytest.mark.timeout(60)

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


def alive(pid: int) -> bool:
    # Zombies count as gone: the sandbox's init may be slow to reap orphans.
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def run(tmp_path: Path, script: str, **kw: Any) -> ProcessOutcome:
    args: dict[str, Any] = {
        "cwd": tmp_path,
        "env": ENV,
        "stdin_data": None,
        "log_path": tmp_path / "logs" / "sheet.log",
        "log_max_bytes": 1 << 20,
        "timeout_seconds": 30.0,
        "idle_timeout_seconds": None,
        "kill_grace_seconds": 1.0,
    }
    args.update(kw)
    return await run_process(["bash", "-c", script], **args)


def complete_text(path: Path) -> str | None:
    text = path.read_text() if path.exists() else ""
    return text if text.endswith("\n") else None


async def wait_for_file(path: Path, seconds: float = 5.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (text := complete_text(path)) is not None:
            return text
        await anyio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


async def wait_for_spawn(pidfile: Path, refs: list[ProcessGroupRef]) -> None:
    """The grandchild wrote its pid and the runner announced the group: the child can write
    before the runner's `on_spawn` has run; a cancel in between is the case of
    test_native_asyncio_cancel_while_the_spawn_thread_runs_leaves_nothing (native) and of
    test_spawn_cancel (anyio), not these tests'."""
    await wait_for_file(pidfile)
    with anyio.fail_after(5):
        while not refs:
            await anyio.sleep(0.01)


def grandchild_script(pidfile: Path, tail: str = "sleep 1000") -> str:
    return f"sleep 1000 & echo $! > {pidfile}; {tail}"


def assert_nothing_left(pgid: int, grandchild: int) -> None:
    assert group_members(pgid) == []
    assert not alive(grandchild)


@pytest.fixture
def spawned_group() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "1000"], start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --- basic execution ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_exit_code_stdout_tail_and_shared_log(tmp_path: Path) -> None:
    out = await run(tmp_path, "echo out; echo err >&2; exit 3")
    assert out.exit_code == 3 and out.signal is None
    assert not (out.timed_out or out.idle_timed_out or out.cancelled or out.log_truncated)
    assert out.spawn_error is None
    assert out.stdout_tail == "out\n"
    log = (tmp_path / "logs" / "sheet.log").read_text()
    assert sorted(log.splitlines()) == ["err", "out"]
    assert out.ended_at >= out.started_at
    assert 0 <= out.duration_seconds < 5


@pytest.mark.anyio
async def test_running_time_counts_from_the_spawn_not_from_when_the_loop_hears_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load the worker thread hands a child back to the event loop late; the child runs
    meanwhile, and that time is its running time too (estimates and timeouts rely on it)."""
    real = process_module.create_time

    def slow_hand_back(pid: int) -> float:
        time.sleep(0.6)  # the sheet's `sleep 0.3` ends while the spawn is not handed back
        return real(pid)

    monkeypatch.setattr(process_module, "create_time", slow_hand_back)
    out = await run(tmp_path, "sleep 0.3")
    assert out.exit_code == 0
    assert out.duration_seconds >= 0.6, out.duration_seconds


@pytest.mark.anyio
async def test_signal_death(tmp_path: Path) -> None:
    out = await run(tmp_path, "kill -KILL $$")
    assert out.exit_code is None
    assert out.signal == signal.SIGKILL


@pytest.mark.anyio
async def test_env_is_the_complete_environment_and_cwd(tmp_path: Path) -> None:
    out = await run(tmp_path, 'echo "$FOO|${HOME-unset}|$PWD"', env={**ENV, "FOO": "bar"})
    assert out.stdout_tail == f"bar|unset|{tmp_path}\n"


@pytest.mark.anyio
async def test_stdin_is_dev_null(tmp_path: Path) -> None:
    start = time.monotonic()
    out = await run(tmp_path, "cat; readlink /proc/$$/fd/0", timeout_seconds=10.0)
    assert out.exit_code == 0
    assert out.stdout_tail == "/dev/null\n"
    assert time.monotonic() - start < 5


@pytest.mark.anyio
async def test_stdin_data_is_piped(tmp_path: Path) -> None:
    out = await run(tmp_path, "cat", stdin_data=b"hello\n")
    assert out.stdout_tail == "hello\n"
    big = b"x" * (1 << 20)  # more than a pipe buffer
    out = await run(tmp_path, "wc -c", stdin_data=big)
    assert out.stdout_tail.strip() == str(len(big))
    # A child that never reads its input must not hang the run.
    out = await run(tmp_path, "exit 0", stdin_data=big)
    assert out.exit_code == 0


@pytest.mark.anyio
async def test_stdout_tail_keeps_last_4k(tmp_path: Path) -> None:
    out = await run(tmp_path, "for i in $(seq 1 3000); do echo line$i; done")
    assert len(out.stdout_tail.encode()) <= 4096
    assert out.stdout_tail.endswith("line3000\n")


@pytest.mark.anyio
async def test_spawn_errors_are_returned(tmp_path: Path) -> None:
    log = tmp_path / "missing.log"
    out = await run_process(
        ["podium-no-such-executable-xyz"],
        cwd=tmp_path,
        env=ENV,
        stdin_data=None,
        log_path=log,
        log_max_bytes=1000,
        timeout_seconds=None,
        idle_timeout_seconds=None,
        kill_grace_seconds=1.0,
    )
    assert out.exit_code is None and out.signal is None
    assert out.spawn_error == "No such file or directory"
    assert "podium-no-such-executable-xyz" in log.read_text()

    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    out = await run_process(
        [str(script)],
        cwd=tmp_path,
        env=ENV,
        stdin_data=None,
        log_path=log,
        log_max_bytes=1000,
        timeout_seconds=None,
        idle_timeout_seconds=None,
        kill_grace_seconds=1.0,
    )
    assert out.exit_code is None
    assert out.spawn_error == "Permission denied"

    out = await run(tmp_path, "true", cwd=tmp_path / "no-such-dir")
    assert out.spawn_error is not None and "no-such-dir" in out.spawn_error


@pytest.mark.anyio
async def test_on_spawn_reports_own_group(tmp_path: Path) -> None:
    refs: list[ProcessGroupRef] = []
    matched: list[bool] = []

    async def on_spawn(ref: ProcessGroupRef) -> None:
        refs.append(ref)
        matched.append(leader_matches(ref))

    out = await run(tmp_path, "sleep 0.2", on_spawn=on_spawn)
    assert out.exit_code == 0
    [ref] = refs
    assert ref.pgid == ref.pid != os.getpgrp()
    assert matched == [True]
    assert not leader_matches(ref)  # the leader has exited since


@pytest.mark.anyio
async def test_on_spawn_error_propagates_unwrapped_and_kills_group(tmp_path: Path) -> None:
    refs: list[ProcessGroupRef] = []

    async def on_spawn(ref: ProcessGroupRef) -> None:
        refs.append(ref)
        raise RuntimeError("store unavailable")

    with pytest.raises(RuntimeError, match="store unavailable"):
        await run(tmp_path, "sleep 1000", on_spawn=on_spawn)
    assert group_members(refs[0].pgid) == []


@pytest.mark.anyio
async def test_unwritable_log_does_not_stall_the_sheet(tmp_path: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    out = await run(tmp_path, "head -c 1000000 /dev/zero; echo done", log_path=Path("/dev/full"))
    assert out.exit_code == 0
    assert out.stdout_tail.endswith("done\n")
    assert out.log_error is not None and "No space" in out.log_error


# --- leaving nothing behind -----------------------------------------------------------------


@pytest.mark.anyio
async def test_timeout_kills_group_including_grandchild(tmp_path: Path) -> None:
    pidfile = tmp_path / "gc.pid"
    refs: list[ProcessGroupRef] = []

    async def on_spawn(ref: ProcessGroupRef) -> None:
        refs.append(ref)

    start = time.monotonic()
    out = await run(
        tmp_path,
        grandchild_script(pidfile),
        timeout_seconds=1.0,
        kill_grace_seconds=1.0,
        on_spawn=on_spawn,
    )
    assert out.timed_out and not out.idle_timed_out and not out.cancelled
    assert out.exit_code is None and out.signal == signal.SIGTERM
    assert 1.0 <= out.duration_seconds < 3.0
    assert time.monotonic() - start < 4.0
    assert_nothing_left(refs[0].pgid, int(pidfile.read_text()))


@pytest.mark.anyio
async def test_normal_exit_kills_backgrounded_grandchild(tmp_path: Path) -> None:
    pidfile = tmp_path / "gc.pid"
    refs: list[ProcessGroupRef] = []

    async def on_spawn(ref: ProcessGroupRef) -> None:
        refs.append(ref)

    start = time.monotonic()
    out = await run(tmp_path, grandchild_script(pidfile, "exit 0"), on_spawn=on_spawn)
    assert out.exit_code == 0 and not out.timed_out
    assert time.monotonic() - start < 3.0
    assert_nothing_left(refs[0].pgid, int(pidfile.read_text()))


@pytest.mark.anyio
async def test_request_cancel_kills_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "gc.pid"
    control = RunControl()
    result: list[ProcessOutcome] = []
    refs: list[ProcessGroupRef] = []

    async def on_spawn(ref: ProcessGroupRef) -> None:
        refs.append(ref)

    async def runner() -> None:
        result.append(
            await run(tmp_path, grandchild_script(pidfile), control=control, on_spawn=on_spawn)
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner)
        await wait_for_spawn(pidfile, refs)
        control.request_cancel()
    [out] = result
    assert out.cancelled and not out.timed_out
    assert out.signal == signal.SIGTERM
    assert_nothing_left(refs[0].pgid, int(pidfile.read_text()))


@pytest.mark.anyio
async def test_cancel_requested_before_spawn(tmp_path: Path) -> None:
    control = RunControl()
    control.request_cancel()
    out = await run(tmp_path, "sleep 1000", control=control)
    assert out.cancelled
    assert out.exit_code is None


@pytest.mark.anyio
async def test_cancelling_the_awaiting_task_kills_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "gc.pid"
    refs: list[ProcessGroupRef] = []

    async def on_spawn(ref: ProcessGroupRef) -> None:
        refs.append(ref)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run(tmp_path, grandchild_script(pidfile), on_spawn=on_spawn))
        await wait_for_spawn(pidfile, refs)
        tg.cancel_scope.cancel()
    assert_nothing_left(refs[0].pgid, int(pidfile.read_text()))


@pytest.mark.anyio
async def test_native_asyncio_cancel_kills_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "gc.pid"
    refs: list[ProcessGroupRef] = []

    async def on_spawn(ref: ProcessGroupRef) -> None:
        refs.append(ref)

    task = asyncio.ensure_future(run(tmp_path, grandchild_script(pidfile), on_spawn=on_spawn))
    await wait_for_spawn(pidfile, refs)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_nothing_left(refs[0].pgid, int(pidfile.read_text()))


@pytest.mark.anyio
async def test_native_asyncio_cancel_while_the_spawn_thread_runs_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A native cancel breaks through anyio's shield while the worker thread is still
    spawning: the thread, finding the spawn abandoned, ends the group itself."""
    from podium.core.runner import process
    from podium.core.runner.child import Child

    real_spawn = Child.spawn.__func__  # type: ignore[attr-defined]
    spawned: list[int] = []
    go = threading.Event()

    def held_spawn(cls: type[Child], *args: Any, **kwargs: Any) -> Child:
        child: Child = real_spawn(cls, *args, **kwargs)
        spawned.append(child.pid)
        go.wait(10)
        return child

    monkeypatch.setattr(process.Child, "spawn", classmethod(held_spawn))
    task = asyncio.ensure_future(run(tmp_path, "sleep 1000 & sleep 1000"))
    with anyio.fail_after(10):
        while not spawned:
            await anyio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    go.set()
    with anyio.fail_after(10):
        while group_members(spawned[0]):
            await anyio.sleep(0.02)
    assert not alive(spawned[0])


@pytest.mark.anyio
async def test_native_asyncio_cancel_after_the_spawn_before_the_loop_resumes_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread handed the child over, but the cancel lands before the coroutine gets it:
    the caller ends the group before the CancelledError leaves run_process."""
    from podium.core.runner import process

    # The process layer's trip to its worker threads (`threads.run_sync`), held after the
    # thread has handed the child over.
    real_run_sync = process.threads.run_sync
    spawned: list[int] = []

    async def slow_to_resume(fn: Any, *args: Any) -> Any:
        result = await real_run_sync(fn, *args)
        if getattr(fn, "__name__", "") == "start" and result[0] is not None:
            spawned.append(result[0].pid)
            await anyio.sleep_forever()
        return result

    monkeypatch.setattr(process.threads, "run_sync", slow_to_resume)
    task = asyncio.ensure_future(run(tmp_path, "sleep 1000 & sleep 1000"))
    with anyio.fail_after(10):
        while not spawned:
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The group is SIGKILLed and its leader collected; the other member dies a moment later.
    assert not alive(spawned[0])
    with anyio.fail_after(10):
        while group_members(spawned[0]):
            await anyio.sleep(0.02)


@pytest.mark.anyio
async def test_sigterm_ignored_gets_sigkill_after_grace(tmp_path: Path) -> None:
    pidfile = tmp_path / "gc.pid"
    refs: list[ProcessGroupRef] = []

    async def on_spawn(ref: ProcessGroupRef) -> None:
        refs.append(ref)

    start = time.monotonic()
    out = await run(
        tmp_path,
        "trap '' TERM; " + grandchild_script(pidfile),
        timeout_seconds=0.5,
        kill_grace_seconds=0.5,
        on_spawn=on_spawn,
    )
    elapsed = time.monotonic() - start
    assert out.timed_out
    assert out.signal == signal.SIGKILL
    assert 1.0 <= elapsed < 4.0
    assert_nothing_left(refs[0].pgid, int(pidfile.read_text()))


# --- suspend, resume, idle ------------------------------------------------------------------

COUNTER = "i=0; while true; do i=$((i+1)); echo $i >> count.txt; sleep 0.1; done"


def count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.anyio
async def test_suspend_resume_and_timeout_counts_running_time_only(tmp_path: Path) -> None:
    counter = tmp_path / "count.txt"
    control = RunControl()
    result: list[ProcessOutcome] = []

    async def runner() -> None:
        result.append(await run(tmp_path, COUNTER, timeout_seconds=1.5, control=control))

    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner)
        await anyio.sleep(0.5)
        await control.suspend()
        assert control.suspended
        await anyio.sleep(0.2)  # let a write in flight land
        frozen = count_lines(counter)
        assert frozen > 0
        await anyio.sleep(1.8)
        assert count_lines(counter) == frozen  # stopped, and not timed out while stopped
        assert not result
        await control.resume()
        assert not control.suspended
        await anyio.sleep(0.4)
        assert count_lines(counter) > frozen
    [out] = result
    elapsed = time.monotonic() - start
    assert out.timed_out
    assert elapsed >= 3.4  # 1.5 s of running time plus 2 s suspended
    assert 1.5 <= out.duration_seconds < 2.5
    assert not control.suspended


@pytest.mark.anyio
async def test_suspend_requested_before_spawn(tmp_path: Path) -> None:
    counter = tmp_path / "count.txt"
    control = RunControl()
    await control.suspend()
    result: list[ProcessOutcome] = []

    async def runner() -> None:
        result.append(await run(tmp_path, COUNTER, timeout_seconds=0.3, control=control))

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner)
        await anyio.sleep(0.3)
        first = count_lines(counter)
        await anyio.sleep(0.5)
        assert count_lines(counter) == first <= 1
        assert not result  # suspended time does not count towards the timeout
        control.request_cancel()
    [out] = result
    assert out.cancelled and not out.timed_out


@pytest.mark.anyio
async def test_idle_timeout(tmp_path: Path) -> None:
    start = time.monotonic()
    out = await run(tmp_path, "echo started; sleep 1000", idle_timeout_seconds=0.5)
    assert out.idle_timed_out and not out.timed_out
    assert out.stdout_tail == "started\n"
    assert time.monotonic() - start < 3.0
    # Steady output keeps an idle timeout from firing.
    out = await run(
        tmp_path, "for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.1; done", idle_timeout_seconds=0.5
    )
    assert out.exit_code == 0 and not out.idle_timed_out


@pytest.mark.anyio
async def test_flood_is_capped_and_drained(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "sheet.log"
    cap = 1 << 20
    start = time.monotonic()
    out = await run(tmp_path, "head -c 52428800 /dev/zero", log_max_bytes=cap)
    assert out.exit_code == 0
    assert out.log_truncated
    assert time.monotonic() - start < 10
    marker = truncation_marker(cap)
    data = log.read_bytes()
    assert len(data) <= cap + len(marker)
    assert data.endswith(marker)


# --- group safety ---------------------------------------------------------------------------


def test_signal_group_refuses_unsafe_groups() -> None:
    for pgid in (-5, 0, 1, os.getpgrp()):
        with pytest.raises(UnsafeKillError):
            signal_group(pgid, 0)


def test_signal_group_missing_group(spawned_group: subprocess.Popen[bytes]) -> None:
    assert signal_group(spawned_group.pid, 0) is True
    assert group_members(spawned_group.pid) == [spawned_group.pid]
    os.killpg(spawned_group.pid, signal.SIGKILL)
    spawned_group.wait()
    assert signal_group(spawned_group.pid, 0) is False
    assert group_members(spawned_group.pid) == []


def test_leader_matches(spawned_group: subprocess.Popen[bytes]) -> None:
    pid = spawned_group.pid
    start = psutil.Process(pid).create_time()
    assert leader_matches(ProcessGroupRef(pid, pid, start))
    assert not leader_matches(ProcessGroupRef(pid, pid, start - 5))
    assert not leader_matches(ProcessGroupRef(pid, pid + 1, start))


@pytest.mark.parametrize("boot_time_moved_by", [-1.0, 1.0])
def test_a_leader_still_matches_after_the_kernel_boot_time_moved_a_second(
    spawned_group: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
    boot_time_moved_by: float,
) -> None:
    # /proc/stat's btime is whole seconds of wall clock: a clock step across a second
    # boundary moves it by one between the spawn that recorded a start and a later look.
    pid = spawned_group.pid
    recorded = ProcessGroupRef(pid, pid, groups_module.create_time(pid))
    moved = psutil.boot_time() + boot_time_moved_by
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: moved)
    monkeypatch.setattr(groups_module, "_BOOT_TIME", moved)
    assert leader_matches(recorded)
    assert not leader_matches(ProcessGroupRef(pid, pid, recorded.start_time + 0.5))
    assert not leader_matches(
        ProcessGroupRef(pid, pid, recorded.start_time - 2 * boot_time_moved_by)
    )


@pytest.mark.anyio
async def test_kill_recorded_group(spawned_group: subprocess.Popen[bytes]) -> None:
    pid = spawned_group.pid
    start = psutil.Process(pid).create_time()
    assert await kill_recorded_group(ProcessGroupRef(pid, pid, start + 100), 0.5) is False
    assert alive(pid)
    assert await kill_recorded_group(ProcessGroupRef(pid, pid, start), 0.5) is True
    assert spawned_group.wait(timeout=5) == -signal.SIGTERM


@pytest.mark.anyio
async def test_terminate_group_resumes_stopped_group_and_tolerates_gone(
    spawned_group: subprocess.Popen[bytes],
) -> None:
    os.killpg(spawned_group.pid, signal.SIGSTOP)
    await terminate_group(spawned_group.pid, 2.0)
    assert spawned_group.wait(timeout=5) == -signal.SIGTERM
    await terminate_group(spawned_group.pid, 0.1)  # already gone: no error


# --- logs -----------------------------------------------------------------------------------


def test_capped_log(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "x.log"
    with CappedLog(path, 10) as log:
        log.write(b"12345")
        assert path.read_bytes() == b"12345"  # visible to readers right away
        log.write(b"67890")
        assert not log.truncated
        log.write(b"abc")
        log.write(b"def")
        assert log.truncated and log.total_bytes == 16
    assert path.read_bytes() == b"1234567890" + truncation_marker(10)

    with CappedLog(path, 4) as log:
        log.write(b"abcdef")
    assert path.read_bytes() == b"abcd" + truncation_marker(4)


def test_tail_buffer() -> None:
    tail = TailBuffer(5)
    tail.write(b"abc")
    assert tail.text() == "abc"
    tail.write(b"defg")
    assert tail.text() == "cdefg"
    tail.write(b"0123456789")
    assert tail.text() == "56789"
    cut = TailBuffer(4)
    cut.write("xéxé".encode())  # 6 bytes; the last 4 start inside the first "é"
    assert cut.text() == "xé"


def test_read_log_tail(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("".join(f"line {i}\n" for i in range(1, 100001)))
    assert read_log_tail(path, 3) == "line 99998\nline 99999\nline 100000\n"
    assert read_log_tail(path, 0) == ""
    path.write_text("a\nb")
    assert read_log_tail(path, 1) == "b"
    assert read_log_tail(path, 10) == "a\nb"
    with pytest.raises(FileNotFoundError):
        read_log_tail(tmp_path / "nope.log", 5)


def test_read_log_range(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes("abé!".encode())  # é is 2 bytes: offsets 2 and 3
    assert read_log_range(path, 0, 100) == ("abé!", 5, False)
    # A limit that would cut é in half stops before it.
    assert read_log_range(path, 0, 3) == ("ab", 2, True)
    assert read_log_range(path, 2, 3) == ("é!", 5, False)
    assert read_log_range(path, 5, 10) == ("", 5, False)
    assert read_log_range(path, 99, 10) == ("", 5, False)

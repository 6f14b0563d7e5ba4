"""Starting a child process and talking to it without asyncio's subprocess transport.

Measured on the machine this was written on, per trivial sheet: Python 3.11's asyncio learns
of a child's exit through a watcher thread started per child (the event loop blocks until
that thread runs, about a millisecond), its transport adds a task and a few futures per pipe,
and `close_fds=True` costs one close(2) per possible descriptor in the child. Here the child
is a plain `subprocess.Popen` leading its own session; its exit is a pidfd and its output
pipes are non-blocking descriptors, all watched by the event loop's reader callbacks (a
thread waits only where pidfds do not exist). Descriptors are kept from children by marking
ours close-on-exec, once; a child gets the descriptor limit the conductor was started with
back (`descriptors`). The process layer runs on asyncio, as the MCP server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from podium.core.runner import cgroups, descriptors, reaper
from podium.core.runner.escapees import tagging

_CHUNK = 64 * 1024
_sealed_lock = threading.Lock()
_sealed = False


def seal_descriptors() -> None:
    """Mark every descriptor above stderr close-on-exec, so a child inherits only the three
    it is given. Python creates its own descriptors that way already; this catches the ones
    a parent process (an agent host) or a C library left inheritable."""
    global _sealed
    with _sealed_lock:
        if _sealed:
            return
        for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
            fd = int(name)
            if fd <= 2:
                continue
            with contextlib.suppress(OSError):
                flags = fcntl.fcntl(fd, fcntl.F_GETFD)
                if not flags & fcntl.FD_CLOEXEC:
                    fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        _sealed = True


class Child:
    """One child process, the leader of a new session (and so of a new process group).

    `watch(on_output)` starts delivering its output as it comes; `exited` is set once it has
    exited (and been reaped), `drained` once both output pipes are closed or abandoned."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._pidfd: int | None = None
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            with contextlib.suppress(OSError):
                self._pidfd = pidfd_open(popen.pid)
        self._files: dict[str, Any] = {}
        self.stdout = _take_fd(popen, "stdout", self._files)
        self.stderr = _take_fd(popen, "stderr", self._files)
        self.stdin = _take_fd(popen, "stdin", self._files)
        # asyncio events, not anyio's: these are set from reader callbacks, and anyio's cost a
        # backend lookup each, many times per sheet.
        self.exited = asyncio.Event()
        self.drained = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watched: set[int] = set()
        self._on_exit: Callable[[], None] | None = None

    @classmethod
    def spawn(
        cls, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], with_stdin: bool
    ) -> Child:
        """Start `argv`; raises OSError when it cannot start (missing executable or cwd)."""
        seal_descriptors()
        with tagging(env), cgroups.joined(env), reaper.spawning() as register:
            popen = _start(argv, cwd=cwd, env=env, with_stdin=with_stdin)
            # First: the sooner, the less the child runs with the conductor's raised limit.
            descriptors.restore_for_child(popen.pid)
            register(popen.pid)
        return cls(popen)

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def watch(self, on_output: Callable[[bytes, bool], None], on_exit: Callable[[], None]) -> None:
        """Deliver output chunks to `on_output(chunk, is_stdout)` as they arrive and call
        `on_exit()` once the process has exited. Must be called in the event loop."""
        loop = self._loop = asyncio.get_running_loop()
        self._on_exit = on_exit
        for fd, is_stdout in ((self.stdout, True), (self.stderr, False)):
            if fd is not None:
                self._watched.add(fd)
                loop.add_reader(fd, self._readable, fd, is_stdout, on_output)
        if not self._watched:
            self.drained.set()
        if self._pidfd is not None:
            loop.add_reader(self._pidfd, self._reap)
        else:
            loop.run_in_executor(None, self._popen.wait).add_done_callback(lambda _: self._reap())

    def _readable(self, fd: int, is_stdout: bool, on_output: Callable[[bytes, bool], None]) -> None:
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            on_output(data, is_stdout)
            return
        self._unwatch(fd)
        self._close("stdout" if fd == self.stdout else "stderr")

    def _unwatch(self, fd: int) -> None:
        if fd in self._watched:
            self._watched.discard(fd)
            if self._loop is not None:
                self._loop.remove_reader(fd)
            if not self._watched:
                self.drained.set()

    def _reap(self) -> None:
        if self.exited.is_set():
            return
        if self._pidfd is not None and self._loop is not None:
            self._loop.remove_reader(self._pidfd)
        self._popen.wait()  # it has exited: this only collects the status
        reaper.forget(self.pid)
        self.exited.set()
        if self._on_exit is not None:
            self._on_exit()

    async def wait(self) -> None:
        await self.exited.wait()

    async def feed(self, data: bytes) -> None:
        """Write `data` to the child's stdin and close it; a child that exits without reading
        its input is not an error."""
        fd = self.stdin
        if fd is None:
            return
        view = memoryview(data)
        try:
            while view:
                try:
                    written = os.write(fd, view)
                except BlockingIOError:
                    await anyio.wait_writable(fd)
                    continue
                view = view[written:]
        except OSError:
            pass
        finally:
            self._close("stdin")

    def close_output(self) -> None:
        """Stop reading (a process that left our group may hold the pipes open)."""
        for name in ("stdout", "stderr"):
            fd = getattr(self, name)
            if fd is not None:
                self._unwatch(fd)
                self._close(name)

    def abandon(self) -> None:
        """SIGKILL the whole group at once and collect the leader, without the event loop:
        for a child whose caller was cancelled before it could supervise it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self._popen.wait()  # SIGKILL cannot be ignored: this returns as soon as it lands
        reaper.forget(self.pid)
        self.close()

    def close(self) -> None:
        self.close_output()
        self._close("stdin")
        if self._pidfd is not None:
            if self._loop is not None and not self.exited.is_set():
                self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        # Reap it if it has exited, so no zombie of ours is left.
        if self._popen.poll() is not None:
            reaper.forget(self.pid)

    def _close(self, name: str) -> None:
        if getattr(self, name) is not None:
            setattr(self, name, None)
            with contextlib.suppress(OSError):
                self._files.pop(name).close()


def _start(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], with_stdin: bool
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(argv),
        # Never inherit our stdin: in stdio mode it is the MCP protocol stream.
        stdin=subprocess.PIPE if with_stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
        # Descriptors are close-on-exec (seal_descriptors); closing every possible one in
        # the child instead costs a millisecond per start.
        close_fds=False,
    )


def _take_fd(popen: subprocess.Popen[bytes], name: str, keep: dict[str, Any]) -> int | None:
    """The pipe's descriptor, made non-blocking; its file object is kept in `keep` (it owns
    the descriptor and closes it) and taken from Popen, which must not read or close it."""
    stream = getattr(popen, name)
    if stream is None:
        return None
    setattr(popen, name, None)
    keep[name] = stream
    fd: int = stream.fileno()
    os.set_blocking(fd, False)
    return fd

"""Finding, starting and stopping the home's conductor from another process.

One conductor per home, decided by the OS lock: a process that needs a conductor and finds
none spawns one (`podium start --child`, in its own session, output to conductor.log) and
waits for `conductor.json` to name a live lock holder. When two processes do that at once,
both children race for the lock; the loser exits with LOCKED_EXIT_CODE and both parents end
up attached to the winner.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import anyio
import psutil

from podium.core.config import ENV_PREFIX, PodiumConfig, setting_source
from podium.core.errors import PodiumError
from podium.core.home import ConductorInfo, ensure_home, read_conductor_info, read_lock_owner
from podium.core.store.urls import store_identity

# Exit code of a conductor child that found the home already locked (it lost a start race).
LOCKED_EXIT_CODE = 3
START_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.05
LOG_TAIL_LINES = 15


class NoConductorError(PodiumError):
    def __init__(self, home: Path) -> None:
        self.home = home
        super().__init__(f"no conductor is running on {home} (start one: podium start --detach)")


class NotAttachableError(PodiumError):
    def __init__(self, home: Path, info: ConductorInfo) -> None:
        self.info = info
        pid = info.pid
        super().__init__(
            f"Podium home {home} is owned by pid {pid}, an engine inside `podium serve "
            "--embedded` or `--transport sse`, which other processes cannot attach to; stop it "
            "or use another home (--home / PODIUM_HOME)"
        )


class TokenRefusedError(PodiumError):
    """The conductor named in conductor.json answered 401 to the token that file holds: the
    file was changed (or replaced) since that conductor wrote it."""

    def __init__(self, info: ConductorInfo) -> None:
        self.info = info
        super().__init__(
            f"the conductor (pid {info.pid}, {info.url}) refused the bearer token in "
            "conductor.json (HTTP 401): the file no longer matches the running conductor; "
            "`podium stop --force` stops it and the next command starts one with a new token"
        )


class StoreMismatchError(PodiumError):
    """The home's conductor runs on another store than this command's configuration names:
    attached, the command would read and change the conductor's store, not the one it was
    configured for."""

    def __init__(self, config: PodiumConfig, info: ConductorInfo) -> None:
        self.info = info
        mine = store_identity(config.store_url)
        source = setting_source(config, "store_url")
        theirs = info.store
        if source.startswith("set in environment variable"):
            fix = f"unset {ENV_PREFIX}STORE_URL or set it to the conductor's store"
        elif source.startswith("set in "):
            fix = f"set store_url in {source.removeprefix('set in ')} to the conductor's store"
        else:
            fix = f"set store_url (config.yaml or {ENV_PREFIX}STORE_URL) to the conductor's store"
        super().__init__(
            f"store mismatch: the conductor of {config.home} (pid {info.pid}) runs on "
            f"{theirs} (its store_url: {info.store_source or 'origin not recorded'}, when it "
            f"started), but this command's store_url is {mine} ({source}); nothing was done, "
            "so as not to act on the conductor's store in place of that one.\n"
            f"fix: {fix} (with its password, if it has one) to use the conductor's store; "
            "or stop the conductor (`podium stop`; `podium restart` starts it again with this "
            f"command's settings) to run on {mine}"
        )


def find_conductor(config: PodiumConfig, *, same_store: bool = True) -> ConductorInfo | None:
    """The home's running conductor if one can be attached to; raises if the home is owned by
    an engine that serves no attachable endpoint, or (with `same_store`, for everything but
    stopping it) if the conductor runs on another store than `config` names."""
    info = read_conductor_info(config)
    if info is not None and info.url is None:
        raise NotAttachableError(config.home, info)
    if same_store and info is not None:
        refuse_another_store(config, info)
    return info


def refuse_another_store(config: PodiumConfig, info: ConductorInfo) -> None:
    """Raise StoreMismatchError when the engine `info` names (attachable or embedded) runs
    on another store than `config` names."""
    # A conductor.json written before stores were recorded says nothing to compare.
    if info.store is not None and info.store != store_identity(config.store_url):
        raise StoreMismatchError(config, info)


def _spawn(config: PodiumConfig) -> tuple[int, int]:
    """A conductor child in its own session, stdin from /dev/null, output appended to
    conductor.log. Returns its pid and where in the log its output begins."""
    ensure_home(config)
    log_path = config.logs_dir / "conductor.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    argv = [sys.executable, "-m", "podium.server.cli", "--home", str(config.home), "start"]
    argv.append("--child")
    try:
        begins = os.fstat(log_fd).st_size
        pid = os.posix_spawn(
            sys.executable,
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(log_fd)
    return pid, begins


def reap(pid: int) -> int | None:
    """The exit code of our child `pid` once it has ended (collecting it), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return -1
    return os.waitstatus_to_exitcode(status) if done else None


def _log_tail(config: PodiumConfig, begins: int) -> str:
    """The last lines the failed child wrote to conductor.log (from offset `begins`): the
    log holds earlier runs' lines too, which say nothing about this failure."""
    try:
        with open(config.logs_dir / "conductor.log", "rb") as log:
            if os.fstat(log.fileno()).st_size >= begins:
                log.seek(begins)  # else the log was rotated meanwhile: all of it is new
            lines = log.read().decode(errors="replace").splitlines()
    except OSError:
        return "(the log cannot be read)"
    if not lines:
        return "(it wrote nothing there)"
    return "\n".join(lines[-LOG_TAIL_LINES:])


async def ensure_conductor(
    config: PodiumConfig, *, within: float = START_TIMEOUT_SECONDS
) -> tuple[ConductorInfo, bool]:
    """The home's conductor, started detached when none runs. Returns it and whether this
    call started it."""
    info = find_conductor(config)
    if info is not None:
        return info, False
    child: int | None
    child, begins = _spawn(config)
    deadline = time.monotonic() + within
    while True:
        info = find_conductor(config)
        if info is not None:
            return info, info.pid == child
        if child is not None and (code := reap(child)) is not None:
            if code != LOCKED_EXIT_CODE:
                raise PodiumError(
                    f"the conductor of {config.home} failed to start (exit code {code}); "
                    f"its log ({config.logs_dir / 'conductor.log'}) ends with:\n"
                    + _log_tail(config, begins)
                )
            # Another process holds the lock: wait for it to publish conductor.json. If it
            # went away without doing so, try again (the lock decides again).
            child = None
        if child is None and _lock_free_hint(config):
            child, begins = _spawn(config)
        if time.monotonic() > deadline:
            owner = read_lock_owner(config.lock_path)
            raise PodiumError(
                f"no conductor answered on {config.home} within {within:.0f}s"
                + (f" (the home is locked by pid {owner})" if owner else "")
                + f"; see {config.logs_dir / 'conductor.log'}"
            )
        await anyio.sleep(POLL_SECONDS)


def _lock_free_hint(config: PodiumConfig) -> bool:
    """True when the last lock holder is gone, so a new child may win the lock."""
    owner = read_lock_owner(config.lock_path)
    return owner is None or not psutil.pid_exists(owner)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def stop_conductor(info: ConductorInfo, within: float) -> bool:
    """Ask the conductor to stop gracefully (SIGTERM, as systemd would) and wait for it."""
    try:
        os.kill(info.pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + within
    while alive(info.pid):
        if time.monotonic() > deadline:
            return False
        reap(info.pid)
        await anyio.sleep(POLL_SECONDS)
    return True

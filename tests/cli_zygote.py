"""`podium` commands for tests at the cost of a fork: a parent that has imported the CLI once
forks one child per command, so a command costs no interpreter start and no imports (about
0.7 s of CPU each, most of it the MCP SDK; the suite runs a few hundred).

The child is a real process, as `subprocess.run([podium, ...])` makes one: its own pid, the
caller's environment and working directory, stdin on /dev/null, stdout and stderr in files
of its own, its exit code from `main()`'s SystemExit. Only the imports are shared, and the
installed entry point is not what runs: tests that start `podium` as a program (stdio
bridges, pexpect, `podium run` signalled, the conductor child itself) still exec it.

Protocol (JSON lines): the test writes {"argv", "env", "cwd", "out", "err"} to the zygote's
stdin; it answers {"pid": N} once forked and {"pid": N, "code": C} once it reaped the child.
The zygote is single-threaded, so forking it is safe.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

_HERE = Path(__file__).resolve()


def _child(request: dict[str, Any]) -> None:
    code = 70
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, request["out"]), (2, request["err"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        from podium.server.cli import main

        try:
            main(request["argv"], prog_name="podium")
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            if isinstance(exit_.code, str):
                sys.stderr.write(exit_.code + "\n")
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):  # a closed stream cannot be flushed
                stream.flush()
        os._exit(code)


def _serve() -> None:
    # Everything a command may import, once: the CLI and its commands, the MCP client, and
    # the engine the reads use when no conductor runs.
    import importlib

    import podium.core.conductor
    import podium.server.app
    import podium.server.remote
    from podium.server.cli import COMMAND_MODULES

    for module in COMMAND_MODULES:
        importlib.import_module(f"podium.server.{module}")
    del podium
    assert threading.active_count() == 1, threading.enumerate()  # fork needs one thread
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "code": os.waitstatus_to_exitcode(status)}), flush=True)


class _Zygote:
    """The zygote of this test process, started on first use."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.lock = threading.Lock()
        atexit.register(self.close)

    def _ensure(self) -> subprocess.Popen[str]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, str(_HERE)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=str(_HERE.parent),
            )
        return self.proc

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            _close_pipes(proc)

    def _abandon(self, pid: int | None) -> None:
        """Kill the command and the zygote (a new one starts on the next call)."""
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            _close_pipes(proc)

    def run(
        self, argv: list[str], env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        with self.lock, tempfile.TemporaryDirectory(prefix="podium-cli-") as scratch:
            out, err = Path(scratch) / "out", Path(scratch) / "err"
            proc = self._ensure()
            assert proc.stdin is not None and proc.stdout is not None
            request = {"argv": argv, "env": env, "cwd": os.getcwd(), "out": str(out),
                       "err": str(err)}  # fmt: skip
            pid: int | None = None
            try:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
                pid = json.loads(_read_line(proc.stdout, timeout))["pid"]
                code = json.loads(_read_line(proc.stdout, timeout))["code"]
            except TimeoutError:
                # As subprocess.run does: the command is killed and the caller told.
                self._abandon(pid)
                raise subprocess.TimeoutExpired(["podium", *argv], timeout) from None
            except BaseException:
                # Interrupted (a test's timeout): the zygote's answers are out of step now.
                self._abandon(pid)
                raise
            return subprocess.CompletedProcess(
                ["podium", *argv],
                code,
                out.read_text(encoding="utf-8"),
                err.read_text(encoding="utf-8"),
            )


def _close_pipes(proc: subprocess.Popen[str]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _read_line(stream: IO[str], timeout: float) -> str:
    """One line from the zygote, or TimeoutError after `timeout` seconds."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not got:
        raise TimeoutError
    if not got[0]:
        raise RuntimeError("the CLI zygote exited")
    return got[0]


_zygote = _Zygote()


PODIUM = str(Path(sys.executable).with_name("podium"))
# PODIUM_TEST_CLI=exec runs every command as its own program instead, as before the zygote.
EXEC = os.environ.get("PODIUM_TEST_CLI") == "exec"


def run_podium(
    argv: list[str], env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """`subprocess.run([podium, *argv], env=env, capture_output=True, text=True,
    stdin=DEVNULL, timeout=timeout)`, forked from the zygote."""
    if EXEC:
        return subprocess.run(
            [PODIUM, *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    return _zygote.run(list(argv), dict(env), timeout)


if __name__ == "__main__":
    _serve()

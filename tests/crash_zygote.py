"""A parent for the crash matrix's conductors: it imports everything once, then forks one
child per request, so a crash point costs a fork rather than an interpreter start.

Usage: python tests/crash_zygote.py  (then JSON lines on stdin: {"home", "tmp", "point"})

For each request it answers two JSON lines on stdout: {"pid": N} once the child is forked,
then {"pid": N, "signal": S, "exit": E} once it has reaped it. The child runs
`crash_matrix.child_main` with its stdin on /dev/null and its stdout and stderr appended to
<tmp>/conductor-<point>.log; it is expected to die by SIGKILL. The zygote is single-threaded,
so forking it is safe.
"""

from __future__ import annotations

import json
import os
import sys

import crash_matrix
import structlog


def _child(request: dict[str, str]) -> None:
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        log = os.open(
            os.path.join(request["tmp"], f"conductor-{request['point']}.log"),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND,
            0o600,
        )
        os.dup2(log, 1)
        os.dup2(log, 2)
        crash_matrix.child_main(request["home"], request["tmp"], request["point"])
    except BaseException as exc:
        os.write(2, f"child failed: {exc!r}\n".encode())
    finally:
        os._exit(3)


def main() -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        answer = {
            "pid": pid,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        }
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()

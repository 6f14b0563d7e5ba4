"""The conductor side of the crash matrix (tests/test_crash_matrix.py): one scenario per
point, each driving a real `Conductor` to that point and killing its own process there with
SIGKILL, exactly where a crash hurts most.

Run in a process forked from `crash_zygote.py` (imports paid once), never in the test's own.
Every sheet appends `start <mark>` and `end <mark>` to SIDE (outside any workspace), where
the mark is its attempt's `PODIUM_ATTEMPT_OF` (home|job|sheet|attempt): the test reads them
as side-effect counters. A sheet told to hold waits while its hold file exists; the test
removes the hold files once the conductor is dead.
"""

from __future__ import annotations

import os
import random
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from podium.core import conductor as conductor_module
from podium.core import housekeeping as housekeeping_module
from podium.core import snapshots as snapshots_module
from podium.core.conductor import Conductor
from podium.core.config import load_config
from podium.core.engine import dispatch as dispatch_module
from podium.core.engine.writer import Writer
from podium.core.models import JobStatus, PauseReason, SheetStatus, WaitingReason
from podium.core.store.base import WriteBatch

POINTS = [
    "submit",
    "after-spawn",
    "mid-sheet",
    "validation",
    "between-transitions",
    "backoff",
    "pause",
    "cancel",
    "rate-limit-wait",
    "clear",
    "snapshot",
    "modify",
    "shutdown",
    "recovery",
]
JOB = "chain"
CONFIG_YAML = "kill_grace_seconds: 1\nmax_rate_limit_wait_seconds: 0.5\n"
LIMITED_PROFILE = """
name: limited
description: bash, rate limited on its first call in a workspace
written_for: "GNU bash 5"
executable: bash
args: ["-c", "{prompt}"]
prompt_via: argv
check: {version_args: ["--version"]}
patterns:
  streams: [stderr]
  rate_limit:
    - regex: "rate limit, retry after (?P<secs>[0-9]+) seconds"
      retry_after_group: secs
"""


def prepare_home(home: Path) -> None:
    """The same configuration for every conductor of a point (the crashed one and the ones
    after it), read from the home as an operator would set it."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.yaml").write_text(CONFIG_YAML)
    (home / "instruments").mkdir(exist_ok=True)
    (home / "instruments" / "limited.yaml").write_text(LIMITED_PROFILE)


def hold_file(tmp: Path, sheet: int) -> Path:
    return tmp / f"hold-{sheet}"


def sheet_script(tmp: Path, num: int, body: str = "") -> str:
    side = shlex.quote(str(tmp / "side.txt"))
    hold = shlex.quote(str(hold_file(tmp, num)))
    return "\n".join(
        [
            f'echo "start $PODIUM_ATTEMPT_OF" >> {side}',
            body,
            f"while [ -e {hold} ]; do sleep 0.02; done",
            f'echo "end $PODIUM_ATTEMPT_OF" >> {side}',
            f"touch done-{num}.txt",
        ]
    )


def chain_spec(
    tmp: Path,
    sheets: int = 3,
    bodies: dict[int, str] | None = None,
    validations: dict[int, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    out = []
    for n in range(1, sheets + 1):
        sheet: dict[str, Any] = {
            "name": f"s{n}",
            "prompt": sheet_script(tmp, n, (bodies or {}).get(n, "")),
            "validations": [
                {"type": "file_exists", "path": f"done-{n}.txt"},
                *(validations or {}).get(n, []),
            ],
        }
        if n > 1:
            sheet["depends_on"] = [f"s{n - 1}"]
        out.append(sheet)
    return {
        "name": "chain",
        "retry": {"max_retries": 1, "base_delay_seconds": 0.5, "jitter": False},
        "sheets": out,
    }


def fail_once_body(tmp: Path) -> str:
    flag = shlex.quote(str(tmp / "failed-once"))
    return f"if [ ! -e {flag} ]; then touch {flag}; exit 1; fi"


def daemon_body(tmp: Path) -> str:
    """A process that leaves the sheet's group (and session) before the crash."""
    up = shlex.quote(str(tmp / "daemon-up"))
    return f"setsid sleep 60 </dev/null >/dev/null 2>&1 &\ntouch {up}"


def validating_check(tmp: Path) -> dict[str, Any]:
    flag = shlex.quote(str(tmp / "validating"))
    hold = shlex.quote(str(tmp / "hold-validation"))
    command = f"touch {flag}; while [ -e {hold} ]; do sleep 0.02; done"
    return {"type": "command_succeeds", "command": command, "timeout_seconds": 60}


def limited_spec(tmp: Path) -> dict[str, Any]:
    side = shlex.quote(str(tmp / "side.txt"))
    flag = shlex.quote(str(tmp / "limited-once"))
    script = "\n".join(
        [
            f'echo "start $PODIUM_ATTEMPT_OF" >> {side}',
            f"if [ ! -e {flag} ]; then touch {flag}; "
            "echo 'rate limit, retry after 30 seconds' >&2; exit 1; fi",
            f'echo "end $PODIUM_ATTEMPT_OF" >> {side}',
        ]
    )
    return {"name": "limited", "instrument": "limited", "sheets": [{"prompt": script}]}


def dag_spec(tmp: Path) -> dict[str, Any]:
    """Two branches that meet, one sheet failing once (a retry), for kills at random moments."""
    deps = {1: [], 2: [1], 3: [1], 4: [2], 5: [3], 6: [4, 5]}
    sheets = []
    for n, on in deps.items():
        body = fail_once_body(tmp) if n == 3 else "sleep 0.05"
        sheets.append(
            {
                "name": f"s{n}",
                "prompt": sheet_script(tmp, n, body),
                "validations": [{"type": "file_exists", "path": f"done-{n}.txt"}],
                "depends_on": [f"s{d}" for d in on],
            }
        )
    return {
        "name": "dag",
        "retry": {"max_retries": 1, "base_delay_seconds": 0.1, "jitter": False},
        "concurrency": {"max_parallel_sheets": 2},
        "sheets": sheets,
    }


def modified_spec(tmp: Path) -> dict[str, Any]:
    """The chain with a fourth sheet added at the end (a modify may only add at the end)."""
    return chain_spec(tmp, sheets=4)


def quick_spec(tmp: Path, name: str = "quick") -> dict[str, Any]:
    side = shlex.quote(str(tmp / "side.txt"))
    script = f'echo "start $PODIUM_ATTEMPT_OF" >> {side}; echo "end $PODIUM_ATTEMPT_OF" >> {side}'
    return {"name": name, "sheets": [{"prompt": script}]}


def holds_for(point: str) -> list[int]:
    """The sheets whose hold file exists when the crashed conductor starts."""
    return {
        "after-spawn": [1],
        "mid-sheet": [2],
        "pause": [2],
        "cancel": [2],
        "modify": [1],
        "shutdown": [2],
        "recovery": [2],
    }.get(point, [])


# ----- dying ------------------------------------------------------------------------------


def die() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


Predicate = Callable[[Sequence[WriteBatch]], bool]


def die_after_commit(
    predicate: Predicate, before_dying: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Every store the conductor opens dies right after the first durable commit that
    `predicate` picks (the rows are in; nothing the commit would set off has happened)."""
    real_open = conductor_module.open_store

    async def open_hooked(config: Any) -> Any:
        store = await real_open(config)
        real_write = store.write

        async def write(batches: Sequence[WriteBatch]) -> Any:
            written = await real_write(batches)
            if predicate(batches):
                await written.durable()
                if before_dying is not None:
                    await before_dying()
                die()
            return written

        store.write = write
        return store

    conductor_module.open_store = open_hooked  # type: ignore[assignment]


def die_before_op(name: str) -> None:
    real_run = Writer.run

    async def run(self: Writer, op: Any) -> Any:
        if op.name == name:
            die()
        return await real_run(self, op)

    Writer.run = run  # type: ignore[method-assign]


def die_at_spawn(sheet_num: int) -> None:
    """Dies as the sheet's process is spawned, before its group is recorded: only the mark
    in its environment tells recovery whose it is."""
    real = dispatch_module.run_attempt

    async def run_attempt(plan: Any, control: Any, **kwargs: Any) -> Any:
        if plan.sheet_num == sheet_num:

            async def on_spawn(ref: Any) -> None:
                die()

            kwargs["on_spawn"] = on_spawn
        return await real(plan, control, **kwargs)

    dispatch_module.run_attempt = run_attempt  # type: ignore[assignment]


def sheets_in(batches: Sequence[WriteBatch]) -> list[Any]:
    return [s for b in batches for s in b.sheets]


def jobs_in(batches: Sequence[WriteBatch]) -> list[Any]:
    return [j for b in batches for j in b.jobs]


async def wait_for(path: Path, timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        while not path.exists():
            await anyio.sleep(0.01)


async def wait_started(tmp: Path, job_id: str, sheet_num: int, timeout: float = 20) -> None:
    side = tmp / "side.txt"
    needle = f"|{job_id}|{sheet_num}|"
    with anyio.fail_after(timeout):
        while not (
            side.exists()
            and any(
                needle in line and line.startswith("start")
                for line in side.read_text().splitlines()
            )
        ):
            await anyio.sleep(0.01)


async def wait_terminal(conductor: Conductor, job_id: str) -> None:
    with anyio.fail_after(30):
        while not (await conductor.get_job(job_id)).status.is_terminal:
            await anyio.sleep(0.02)


# ----- the scenarios ----------------------------------------------------------------------


async def scenario(home: Path, tmp: Path, point: str) -> None:
    config = load_config(home=home, overrides={}, env={})
    submit: dict[str, Any] | None = chain_spec(tmp)
    if point == "submit":
        die_after_commit(lambda bs: any(b.new_jobs for b in bs))
    elif point == "after-spawn":
        die_at_spawn(1)
    elif point == "mid-sheet":
        submit = chain_spec(tmp, bodies={2: daemon_body(tmp)})

        async def daemon_up() -> None:
            await wait_for(tmp / "daemon-up")

        # Once the running sheet's group is recorded, and its daemon has left the group.
        die_after_commit(
            lambda bs: any(a.sheet_num == 2 and a.pgid for b in bs for a in b.attempts),
            daemon_up,
        )
    elif point == "validation":
        submit = chain_spec(tmp, validations={2: [validating_check(tmp)]})
    elif point == "between-transitions":
        die_after_commit(
            lambda bs: any(
                s.sheet_num == 1 and s.status is SheetStatus.COMPLETED for s in sheets_in(bs)
            )
        )
    elif point == "backoff":
        submit = chain_spec(tmp, bodies={2: fail_once_body(tmp)})
        die_after_commit(
            lambda bs: any(s.waiting_reason is WaitingReason.RETRY_BACKOFF for s in sheets_in(bs))
        )
    elif point == "cancel":
        die_after_commit(lambda bs: any(j.status is JobStatus.CANCELLED for j in jobs_in(bs)))
    elif point == "rate-limit-wait":
        submit = limited_spec(tmp)
        die_after_commit(lambda bs: any(b.holds for b in bs))
    elif point == "modify":
        die_after_commit(lambda bs: any(j.pending_resume is not None for j in jobs_in(bs)))
    elif point == "shutdown":
        die_after_commit(
            lambda bs: any(j.pause_reason is PauseReason.SHUTDOWN for j in jobs_in(bs))
        )
    elif point == "recovery":
        # The second conductor after a mid-sheet crash: dies after ending what the first
        # left running, before its reconciliation is committed.
        die_before_op("recover")
        submit = None
    elif point in ("clear", "snapshot"):
        submit = None
    elif point.startswith("random-"):
        submit = dag_spec(tmp)
    conductor = Conductor(config)
    await conductor.start()
    if submit is not None:
        await conductor.submit_job(spec=submit, job_id=JOB)
    if point == "validation":
        await wait_for(tmp / "validating")
        die()
    elif point == "pause":
        await wait_started(tmp, JOB, 2)
        await conductor.pause_job(JOB, immediate=True)
        die()
    elif point in ("cancel", "shutdown"):
        await wait_started(tmp, JOB, 2)
        await (conductor.cancel_job(JOB) if point == "cancel" else conductor.stop())
    elif point == "modify":
        await wait_started(tmp, JOB, 1)
        await conductor.resume_job(JOB, spec=modified_spec(tmp))
    elif point == "clear":
        ids = [(await conductor.submit_job(spec=quick_spec(tmp, f"q{n}"))).job_id for n in range(4)]
        for job_id in ids:
            await wait_terminal(conductor, job_id)
        await conductor.engine.hooks_settled()
        real_rmtree = housekeeping_module.shutil.rmtree
        calls = [0]

        def rmtree_then_die(*args: Any, **kwargs: Any) -> None:
            real_rmtree(*args, **kwargs)
            calls[0] += 1
            if calls[0] == 3:  # one job's logs and snapshots gone, and the next one's logs
                die()

        housekeeping_module.shutil.rmtree = rmtree_then_die  # type: ignore[assignment]
        await conductor.clear_jobs(all_jobs=True)
    elif point == "snapshot":
        real_copy = snapshots_module.shutil.copytree

        def copy_then_die(*args: Any, **kwargs: Any) -> Any:
            real_copy(*args, **kwargs)
            die()

        snapshots_module.shutil.copytree = copy_then_die  # type: ignore[assignment]
        await conductor.submit_job(spec=quick_spec(tmp), job_id=JOB)
    elif point.startswith("random-"):
        # A moment nobody chose: somewhere in the run of the DAG (about 1 s in all).
        await anyio.sleep(random.Random(point).uniform(0.05, 1.0))
        die()
    with anyio.fail_after(30):
        await anyio.sleep_forever()


def child_main(home: str, tmp: str, point: str) -> None:
    """In the forked child: run the point's scenario; it must end in SIGKILL."""
    anyio.run(scenario, Path(home), Path(tmp), point)
    os._exit(3)  # the scenario returned: it never reached its point

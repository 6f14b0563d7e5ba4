"""Every cell of the control-call table (SPEC §6), plus submit idempotency and start: false."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import wait_for_job, wait_until

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.errors import ConflictError, InvalidTransitionError, NotFoundError, SpecError
from podium.core.models import JobStatus, PauseReason, SheetStatus

pytestmark = pytest.mark.anyio

SLEEPY = {"name": "sleepy", "sheets": [{"prompt": "sleep 30"}]}
QUICK = {"name": "quick", "sheets": [{"prompt": "true"}]}
FAILING = {"name": "failing", "retry": {"max_retries": 0}, "sheets": [{"prompt": "exit 1"}]}


@pytest.fixture
async def one_slot(make_config: Callable[..., PodiumConfig]) -> AsyncIterator[Conductor]:
    """A conductor with one sheet slot, so a second job stays `queued`."""
    async with Conductor(make_config(max_concurrent_sheets=1)) as c:
        yield c


async def running_job(c: Conductor, spec: dict[str, Any] = SLEEPY) -> str:
    job = await c.submit_job(spec=spec)
    await wait_for_job(c, job.job_id, statuses=("running",))

    async def sheet_running() -> bool:
        detail = await c.get_job(job.job_id)
        return detail.sheets[0].status is SheetStatus.RUNNING

    await wait_until(sheet_running)
    return job.job_id


async def queued_job(c: Conductor) -> str:
    await running_job(c)
    job = await c.submit_job(spec=QUICK)
    await anyio.sleep(0.2)
    assert (await c.get_job(job.job_id)).status is JobStatus.QUEUED
    return job.job_id


async def paused_job(c: Conductor) -> str:
    job = await c.submit_job(spec=QUICK, start=False)
    return job.job_id


async def completed_job(c: Conductor) -> str:
    job = await c.submit_job(spec=QUICK)
    assert (await wait_for_job(c, job.job_id)).status is JobStatus.COMPLETED
    return job.job_id


async def failed_job(c: Conductor) -> str:
    job = await c.submit_job(spec=FAILING)
    assert (await wait_for_job(c, job.job_id)).status is JobStatus.FAILED
    return job.job_id


async def cancelled_job(c: Conductor) -> str:
    job_id = await paused_job(c)
    await c.cancel_job(job_id)
    return job_id


# ----- pause ----------------------------------------------------------------------------------


async def test_pause_queued_job(one_slot: Conductor) -> None:
    job_id = await queued_job(one_slot)
    summary = await one_slot.pause_job(job_id)
    assert summary.status is JobStatus.PAUSED and summary.pause_reason is PauseReason.USER


async def test_pause_running_job_lets_running_sheet_finish(conductor: Conductor) -> None:
    spec = {
        "name": "two",
        "concurrency": {"max_parallel_sheets": 1},
        "sheets": [{"prompt": "sleep 0.6; echo one > one.txt"}, {"prompt": "echo two > two.txt"}],
    }
    job_id = await running_job(conductor, spec)
    summary = await conductor.pause_job(job_id)
    assert summary.status is JobStatus.PAUSED

    async def first_done() -> bool:
        return (await conductor.get_job(job_id)).sheets[0].status is SheetStatus.COMPLETED

    await wait_until(first_done)
    await anyio.sleep(0.5)
    detail = await conductor.get_job(job_id)
    assert detail.status is JobStatus.PAUSED
    assert detail.sheets[1].status is SheetStatus.PENDING  # no new sheet started
    workspace = Path(detail.workspace)
    assert not (workspace / "two.txt").exists()

    resumed = await conductor.resume_job(job_id)
    assert resumed.status in (JobStatus.QUEUED, JobStatus.RUNNING)
    assert (await wait_for_job(conductor, job_id)).status is JobStatus.COMPLETED
    assert (workspace / "one.txt").read_text() == "one\n"
    assert (workspace / "two.txt").read_text() == "two\n"


async def test_pause_immediate_stops_and_resume_continues(conductor: Conductor) -> None:
    spec = {
        "name": "counter",
        "sheets": [{"prompt": "for i in $(seq 1 30); do echo $i >> count.txt; sleep 0.05; done"}],
    }
    job_id = await running_job(conductor, spec)
    workspace = Path((await conductor.get_job(job_id)).workspace)
    await wait_until(lambda: _exists(workspace / "count.txt"))
    await conductor.pause_job(job_id, immediate=True)
    await anyio.sleep(0.2)
    frozen = (workspace / "count.txt").read_text()
    await anyio.sleep(0.5)
    assert (workspace / "count.txt").read_text() == frozen  # the count stopped growing
    assert len(frozen.split()) < 30

    await conductor.resume_job(job_id)
    detail = await wait_for_job(conductor, job_id)
    assert detail.status is JobStatus.COMPLETED
    assert (workspace / "count.txt").read_text().split() == [str(i) for i in range(1, 31)]


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_pause_paused_is_noop(conductor: Conductor) -> None:
    job_id = await paused_job(conductor)
    before = await conductor.get_job(job_id)
    summary = await conductor.pause_job(job_id)
    assert summary.status is JobStatus.PAUSED and summary.pause_reason is PauseReason.NOT_STARTED
    assert (await conductor.get_job(job_id)) == before


@pytest.mark.parametrize("make_job", [completed_job, failed_job, cancelled_job])
async def test_pause_terminal_is_error(conductor: Conductor, make_job: Any) -> None:
    job_id = await make_job(conductor)
    with pytest.raises(InvalidTransitionError, match="only queued or running jobs can be paused"):
        await conductor.pause_job(job_id)


# ----- resume ---------------------------------------------------------------------------------


async def test_resume_queued_is_noop(one_slot: Conductor) -> None:
    job_id = await queued_job(one_slot)
    assert (await one_slot.resume_job(job_id)).status is JobStatus.QUEUED


async def test_resume_running_is_noop(conductor: Conductor) -> None:
    job_id = await running_job(conductor)
    assert (await conductor.resume_job(job_id)).status is JobStatus.RUNNING


async def test_resume_running_with_changed_spec_modifies(conductor: Conductor) -> None:
    spec = {
        "name": "modify",
        "sheets": [
            # Runs until the test lets it end: the modify must find it running.
            {
                "name": "first",
                "prompt": "until [ -e go ]; do sleep 0.02; done; echo old > first.txt",
            },
            {"name": "second", "depends_on": ["first"], "prompt": "echo old > second.txt"},
        ],
    }
    job_id = await running_job(conductor, spec)
    changed = {
        "name": "modify",
        "sheets": [
            {"name": "first", "prompt": "echo new > first.txt"},
            {"name": "second", "depends_on": ["first"], "prompt": "echo new > second.txt"},
        ],
    }
    summary = await conductor.resume_job(job_id, spec=changed)
    assert summary.status is JobStatus.PAUSED  # graceful pause until the running sheet ends
    # The new spec is stored at once, so a crash before the automatic resume cannot lose it.
    stored = (await conductor.get_job(job_id, include_spec=True)).spec or {}
    assert "new" in stored["sheets"][1]["prompt"]
    running = await conductor.get_job(job_id)
    assert running.sheets[0].status is SheetStatus.RUNNING
    (Path(running.workspace) / "go").touch()
    detail = await wait_for_job(conductor, job_id)
    assert detail.status is JobStatus.COMPLETED
    workspace = Path(detail.workspace)
    assert (workspace / "first.txt").read_text() == "old\n"  # it was running: not re-run
    assert (workspace / "second.txt").read_text() == "new\n"
    spec_now = (await conductor.get_job(job_id, include_spec=True)).spec or {}
    assert "new" in spec_now["sheets"][1]["prompt"]


async def test_resume_paused_starts_not_started_job(conductor: Conductor) -> None:
    job_id = await paused_job(conductor)
    summary = await conductor.resume_job(job_id)
    assert summary.status is JobStatus.QUEUED and summary.pause_reason is None
    assert (await wait_for_job(conductor, job_id)).status is JobStatus.COMPLETED


async def test_resume_completed_is_error(conductor: Conductor) -> None:
    job_id = await completed_job(conductor)
    with pytest.raises(InvalidTransitionError, match="completed"):
        await conductor.resume_job(job_id)


async def test_resume_failed_retries_failed_sheets(conductor: Conductor) -> None:
    spec = {
        "name": "flaky",
        "retry": {"max_retries": 0},
        "on_failure": "continue",
        "sheets": [
            {"prompt": "echo ok >> good.txt"},
            {"prompt": "test -f marker || { touch marker; exit 1; }"},
            {"prompt": "echo after >> after.txt", "depends_on": [2]},
        ],
    }
    job = await conductor.submit_job(spec=spec)
    detail = await wait_for_job(conductor, job.job_id)
    assert detail.status is JobStatus.FAILED
    assert [s.status for s in detail.sheets] == [
        SheetStatus.COMPLETED,
        SheetStatus.FAILED,
        SheetStatus.SKIPPED,
    ]
    summary = await conductor.resume_job(job.job_id)
    assert summary.status is JobStatus.QUEUED and summary.error is None
    detail = await wait_for_job(conductor, job.job_id)
    assert detail.status is JobStatus.COMPLETED
    workspace = Path(detail.workspace)
    assert (workspace / "good.txt").read_text() == "ok\n"  # completed sheet never re-ran
    assert (workspace / "after.txt").read_text() == "after\n"
    assert detail.sheets[1].attempts == 2


async def test_resume_failed_without_retry_stays_failed(conductor: Conductor) -> None:
    job_id = await failed_job(conductor)
    summary = await conductor.resume_job(job_id, retry_failed=False)
    assert summary.status is JobStatus.FAILED
    detail = await conductor.get_job(job_id)
    assert detail.sheets[0].status is SheetStatus.FAILED and detail.sheets[0].attempts == 1


@pytest.mark.parametrize("ended", ["failed", "cancelled"])
async def test_resume_without_retry_of_an_ended_job_keeps_its_run_times(
    conductor: Conductor, ended: str
) -> None:
    """With nothing left to run, the job ends again at once: the run it had keeps its
    start and end (a start time of null on a job that ran, or an end moved to now, would
    misreport when and how long it ran)."""
    if ended == "failed":
        job_id = await failed_job(conductor)
    else:
        job_id = await running_job(conductor)
        await conductor.cancel_job(job_id)
    before = await conductor.get_job(job_id)
    assert before.started_at is not None and before.completed_at is not None
    summary = await conductor.resume_job(job_id, retry_failed=False)
    after = await conductor.get_job(job_id)
    for view in (summary, after):
        assert view.status.value == ended
        assert (view.started_at, view.completed_at) == (before.started_at, before.completed_at)
        assert view.error == before.error


async def test_resume_cancelled_reruns_cancelled_sheets(conductor: Conductor) -> None:
    job_id = await cancelled_job(conductor)
    assert (await conductor.get_job(job_id)).sheets[0].status is SheetStatus.CANCELLED
    assert (await conductor.resume_job(job_id)).status is JobStatus.QUEUED
    assert (await wait_for_job(conductor, job_id)).status is JobStatus.COMPLETED


async def test_resume_with_bad_changed_spec_leaves_job_unchanged(conductor: Conductor) -> None:
    # A named sheet: it is matched by name, so renaming it is a change the check refuses (an
    # unnamed one is matched by number, and may be given a name).
    named = {"name": "quick", "sheets": [{"name": "only", "prompt": "true"}]}
    job_id = (await conductor.submit_job(spec=named, start=False)).job_id
    before = await conductor.get_job(job_id, include_spec=True)
    with pytest.raises(SpecError):
        await conductor.resume_job(job_id, spec={"name": "quick", "sheets": [{"promt": "x"}]})
    with pytest.raises(SpecError, match="cannot rename"):
        await conductor.resume_job(
            job_id, spec={"name": "quick", "sheets": [{"name": "renamed", "prompt": "true"}]}
        )
    assert await conductor.get_job(job_id, include_spec=True) == before


# ----- cancel ---------------------------------------------------------------------------------


async def test_cancel_queued_job(one_slot: Conductor) -> None:
    job_id = await queued_job(one_slot)
    summary = await one_slot.cancel_job(job_id)
    assert summary.status is JobStatus.CANCELLED
    assert (await one_slot.get_job(job_id)).sheets[0].status is SheetStatus.CANCELLED


async def test_cancel_running_job_kills_grandchild(conductor: Conductor, tmp_path: Path) -> None:
    import psutil

    pid_file = tmp_path / "grandchild.pid"
    spec = {"name": "tree", "sheets": [{"prompt": f"sleep 1000 & echo $! > {pid_file}; wait"}]}
    job_id = await running_job(conductor, spec)
    await wait_until(lambda: _exists(pid_file))
    grandchild = int(pid_file.read_text())
    with anyio.fail_after(conductor.config.kill_grace_seconds + 2.5):
        summary = await conductor.cancel_job(job_id)
    assert summary.status is JobStatus.CANCELLED
    detail = await conductor.get_job(job_id)
    assert detail.sheets[0].status is SheetStatus.CANCELLED
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == "zombie"
    history, _ = await conductor.get_execution_history(job_id)
    assert history[-1].outcome is not None and history[-1].outcome.value == "cancelled"


async def test_cancel_paused_job(conductor: Conductor) -> None:
    job_id = await paused_job(conductor)
    assert (await conductor.cancel_job(job_id)).status is JobStatus.CANCELLED


async def test_cancel_cancelled_is_noop(conductor: Conductor) -> None:
    job_id = await cancelled_job(conductor)
    before = await conductor.get_job(job_id)
    assert (await conductor.cancel_job(job_id)).status is JobStatus.CANCELLED
    assert await conductor.get_job(job_id) == before


@pytest.mark.parametrize("make_job", [completed_job, failed_job])
async def test_cancel_finished_is_error(conductor: Conductor, make_job: Any) -> None:
    job_id = await make_job(conductor)
    with pytest.raises(InvalidTransitionError, match="already"):
        await conductor.cancel_job(job_id)


@pytest.mark.parametrize("call", ["pause_job", "resume_job", "cancel_job", "get_job"])
async def test_unknown_job_is_not_found(conductor: Conductor, call: str) -> None:
    with pytest.raises(NotFoundError, match="job 'ghost' not found"):
        await getattr(conductor, call)("ghost")


# ----- submit ---------------------------------------------------------------------------------


async def test_submit_same_job_id_same_spec_returns_existing(conductor: Conductor) -> None:
    first = await conductor.submit_job(spec=QUICK, job_id="fixed-1", start=False)
    again = await conductor.submit_job(spec=QUICK, job_id="fixed-1", start=False)
    assert first.created and not again.created
    assert again.job_id == "fixed-1" and again.submitted_at == first.submitted_at
    with pytest.raises(ConflictError, match="different spec"):
        await conductor.submit_job(spec=FAILING, job_id="fixed-1")
    assert len((await conductor.list_jobs())[0]) == 1


async def test_submit_default_job_id_and_labels(conductor: Conductor) -> None:
    import re

    job = await conductor.submit_job(spec={**QUICK, "labels": ["nightly"]}, start=False)
    assert re.fullmatch(r"quick-\d{8}T\d{6}-[0-9a-f]{4}", job.job_id)
    assert job.labels == ["nightly"]
    jobs, _ = await conductor.list_jobs(label="nightly")
    assert [j.job_id for j in jobs] == [job.job_id]
    assert (await conductor.list_jobs(label="other"))[0] == []


async def test_deadline_fails_job_and_stops_sheets(conductor: Conductor) -> None:
    spec = {"name": "late", "deadline_seconds": 0.5, "sheets": [{"prompt": "sleep 30"}]}
    job = await conductor.submit_job(spec=spec)
    with anyio.fail_after(10):
        detail = await wait_for_job(conductor, job.job_id)
    assert detail.status is JobStatus.FAILED
    assert "deadline" in (detail.error or "")

    async def sheet_stopped() -> bool:
        return (await conductor.get_job(job.job_id)).sheets[0].status is SheetStatus.CANCELLED

    await wait_until(sheet_stopped, timeout=conductor.config.kill_grace_seconds + 3)
    detail = await conductor.get_job(job.job_id)
    assert detail.status is JobStatus.FAILED
    assert detail.sheets[0].error_category is not None
    assert detail.sheets[0].error_category.value == "deadline"


async def test_status_read_never_changes_state(conductor: Conductor) -> None:
    job_id = await failed_job(conductor)
    first = await conductor.get_job(job_id, include_spec=True)
    for _ in range(3):
        await conductor.get_job(job_id)
        await conductor.list_jobs()
        await conductor.status()
    assert await conductor.get_job(job_id, include_spec=True) == first


async def test_an_op_deciding_on_running_sheets_never_shares_a_group_with_their_start(
    conductor: Conductor,
) -> None:
    """A start's running entries exist only once it is committed: an op that decides on the
    sheets running here (cancel, pause, a deadline), queued behind a start of the same job,
    goes into the next group and sees them; an op that does not (a result) may share it."""
    from podium.core.engine.tx import Op, Tx

    submitted = await conductor.submit_job(
        spec={"name": "held", "sheets": [{"prompt": "true"}]}, start=False
    )
    job_id = submitted.job_id
    writer = conductor.engine.writer
    seen: list[str] = []

    def start(tx: Tx) -> None:
        tx.starts_sheets(job_id)
        tx.edit_job(job_id).error = "started"
        tx.after(lambda: seen.append("started"))

    def decide(tx: Tx) -> None:
        seen.append("decided after start" if "started" in seen else "decided before start")
        tx.edit_job(job_id).error = None

    def other(tx: Tx) -> None:
        seen.append("other after start" if "started" in seen else "other in the same group")

    commits = writer.commits
    async with anyio.create_task_group() as tg:
        # Queued in this order within one turn of the loop: one group, but for the deferral.
        tg.start_soon(writer.run, Op(start, jobs=[job_id], name="start"))
        tg.start_soon(writer.run, Op(other, jobs=[job_id], name="other"))
        tg.start_soon(writer.run, Op(decide, jobs=[job_id], name="decide", sees_running=True))
    assert seen == ["other in the same group", "started", "decided after start"]
    assert writer.commits == commits + 2

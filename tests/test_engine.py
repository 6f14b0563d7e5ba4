"""End-to-end engine tests: real SQLite file, real subprocesses (Issue 2 must-shows)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from cli_zygote import run_podium
from helpers import wait_for_job

from podium.core.checkpoint import read_checkpoint
from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.errors import SpecError
from podium.core.models import ErrorCategory, JobStatus, Outcome, SheetStatus
from podium.core.store.open import open_store

pytestmark = pytest.mark.anyio

DAG_SPEC: dict[str, Any] = {
    "name": "dag",
    "sheets": [
        {
            "name": "list",
            "prompt": "ls / > listing.txt && echo listed",
            "validations": [{"type": "file_exists", "path": "listing.txt"}],
        },
        {
            "name": "count",
            "depends_on": ["list"],
            "prompt": "wc -l < listing.txt | tr -d ' ' > count.txt",
            "validations": [{"type": "content_regex", "path": "count.txt", "pattern": "^[0-9]+$"}],
        },
        {
            "name": "report",
            "depends_on": [1, "count"],
            "prompt": "echo '{{ outputs[1] | trim }}:' $(cat count.txt) > report.txt",
            "validations": [
                {"type": "content_contains", "path": "report.txt", "pattern": "listed:"},
                {"type": "command_succeeds", "command": "test -s report.txt"},
            ],
        },
    ],
}


async def test_three_sheet_dag_runs_and_state_survives_reopen(conductor: Conductor) -> None:
    submitted = await conductor.submit_job(spec=DAG_SPEC)
    detail = await wait_for_job(conductor, submitted.job_id)

    assert detail.status is JobStatus.COMPLETED
    assert detail.completed_sheets == 3 and detail.failed_sheets == 0
    assert [s.status for s in detail.sheets] == [SheetStatus.COMPLETED] * 3
    assert detail.sheets[2].depends_on == [1, 2]
    workspace = Path(submitted.workspace)
    assert (workspace / "report.txt").read_text().startswith("listed: ")
    history, total = await conductor.get_execution_history(submitted.job_id)
    assert total == 3
    assert [(h.sheet_num, h.attempt, h.outcome) for h in history] == [
        (1, 1, Outcome.COMPLETED),
        (2, 1, Outcome.COMPLETED),
        (3, 1, Outcome.COMPLETED),
    ]
    assert all(h.exit_code == 0 and h.log_path and Path(h.log_path).exists() for h in history)
    assert [v.passed for v in history[2].validations] == [True, True]

    in_process = (await read_checkpoint(conductor.store, submitted.job_id)).model_dump(  # type: ignore[union-attr]
        mode="json"
    )
    script = textwrap.dedent(
        f"""
        import anyio, json
        from pathlib import Path
        from podium.core.checkpoint import read_checkpoint
        from podium.core.config import load_config
        from podium.core.store.open import open_store
        async def main():
            store = await open_store(load_config(home=Path({str(conductor.config.home)!r})))
            detail = await read_checkpoint(store, {submitted.job_id!r})
            print(json.dumps(detail.model_dump(mode="json")))
            await store.close()
        anyio.run(main)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == in_process


async def test_exit_zero_but_failed_validation_retries_then_fails(conductor: Conductor) -> None:
    spec = {
        "name": "never-valid",
        "retry": {"max_retries": 2, "base_delay_seconds": 0.05, "jitter": False},
        "sheets": [
            {
                "prompt": "echo attempt >> attempts.txt",
                "validations": [{"type": "file_exists", "path": "never.txt"}],
            },
            {"prompt": "echo dependent", "depends_on": [1]},
        ],
    }
    submitted = await conductor.submit_job(spec=spec)
    detail = await wait_for_job(conductor, submitted.job_id)

    assert detail.status is JobStatus.FAILED
    first, second = detail.sheets
    assert first.status is SheetStatus.FAILED
    assert first.error_category is ErrorCategory.VALIDATION_FAILED
    assert first.attempts == 3
    assert "never.txt" in (first.last_error or "")
    assert second.status is SheetStatus.SKIPPED
    assert (Path(submitted.workspace) / "attempts.txt").read_text().count("attempt") == 3
    history, total = await conductor.get_execution_history(submitted.job_id, sheet_num=1)
    assert total == 3
    assert [h.attempt for h in history] == [1, 2, 3]
    assert all(h.exit_code == 0 and h.outcome is Outcome.FAILED for h in history)
    assert all(h.validations and not h.validations[0].passed for h in history)


async def test_timeout_kills_grandchild(conductor: Conductor, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    spec = {
        "name": "slow",
        "retry": {"max_retries": 0},
        "instrument_config": {"timeout_seconds": 1},
        "sheets": [{"prompt": f"sleep 1000 & echo $! > {pid_file}; sleep 1000"}],
    }
    submitted = await conductor.submit_job(spec=spec)
    detail = await wait_for_job(conductor, submitted.job_id, timeout=20)

    assert detail.status is JobStatus.FAILED
    assert detail.sheets[0].error_category is ErrorCategory.TIMEOUT
    history, _ = await conductor.get_execution_history(submitted.job_id)
    assert history[0].outcome is Outcome.TIMEOUT
    grandchild = int(pid_file.read_text())
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == "zombie"


async def test_flooding_sheet_log_is_capped(make_config: Callable[..., PodiumConfig]) -> None:
    cap = 1024 * 1024
    async with Conductor(make_config(log_max_bytes=cap)) as conductor:
        spec = {"name": "flood", "sheets": [{"prompt": "head -c 52428800 /dev/zero | tr '\\0' x"}]}
        submitted = await conductor.submit_job(spec=spec)
        detail = await wait_for_job(conductor, submitted.job_id, timeout=60)
        assert detail.status is JobStatus.COMPLETED
        history, _ = await conductor.get_execution_history(submitted.job_id)
        log_path = Path(history[0].log_path or "")
        size = log_path.stat().st_size
        assert cap < size <= cap + 200
        assert b"log truncated" in log_path.read_bytes()[-200:]


async def test_bad_spec_reports_every_error_and_writes_nothing(conductor: Conductor) -> None:
    spec = {
        "name": "Bad Name",
        "promt": "typo",
        "sheets": [
            {"name": "a", "prompt": "echo {{ nope }}", "depends_on": ["a"]},
            {"name": "b", "prompt": "echo", "depends_on": ["ghost"], "retries": 3},
        ],
    }
    with pytest.raises(SpecError) as info:
        await conductor.submit_job(spec=spec)
    paths = {e.path for e in info.value.errors}
    assert {"name", "promt", "sheets.1.retries"} <= paths
    assert len(str(info.value).splitlines()) == len(info.value.errors)
    jobs, _ = await conductor.list_jobs()
    assert jobs == []
    assert not any(conductor.config.workspaces_dir.iterdir())


async def test_workspace_outside_allowed_roots_is_refused(conductor: Conductor) -> None:
    from podium.core.errors import PathNotAllowedError

    for workspace in ("/etc/podium-test", "../../escape"):
        with pytest.raises(PathNotAllowedError, match="workspace"):
            await conductor.submit_job(
                spec={"name": "x", "workspace": workspace, "sheets": [{"prompt": "true"}]}
            )
    assert (await conductor.list_jobs())[0] == []


async def test_podium_run_cli_exit_codes(tmp_path: Path, home: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "name: cli\nworkspace: ws\nsheets:\n  - prompt: echo hi > hi.txt\n"
        "    validations: [{type: file_exists, path: hi.txt}]\n"
    )
    env = {**os.environ, "PODIUM_HOME": str(home)}
    ok = run_podium(["run", str(spec)], env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "completed" in ok.stdout and (tmp_path / "ws" / "hi.txt").exists()

    spec.write_text("name: cli\nretry: {max_retries: 0}\nsheets:\n  - prompt: exit 3\n")
    bad = run_podium(["run", str(spec)], env, timeout=60)
    assert bad.returncode == 1
    assert "exited with code 3" in bad.stdout

    spec.write_text("name: cli\nsheets:\n  - prompt: echo hi\n    depends_on: [9]\n")
    invalid = run_podium(["run", str(spec)], env, timeout=60)
    assert invalid.returncode == 2
    assert "sheets.0.depends_on.0" in invalid.stderr


async def test_reopened_store_has_no_running_state_left(conductor: Conductor) -> None:
    submitted = await conductor.submit_job(spec=DAG_SPEC)
    await wait_for_job(conductor, submitted.job_id)
    store = await open_store(conductor.config)
    try:
        assert await store.in_flight_attempts() == []
        assert await store.count_running_sheets() == 0
        for job in await store.active_jobs():
            statuses = {s.status for s in await store.get_sheets(job.job_id)}
            assert not statuses & {SheetStatus.RUNNING, SheetStatus.WAITING}, job.job_id
    finally:
        await store.close()


async def test_spec_error_answer_is_capped(conductor: Conductor) -> None:
    spec = {"name": "many", "sheets": [{"prompt": "true", "oops": i} for i in range(300)]}
    with pytest.raises(SpecError) as info:
        await conductor.submit_job(spec=spec)
    assert info.value.total == 300
    assert len(info.value.errors) == 101
    assert "200 more errors not shown" in str(info.value).splitlines()[-1]

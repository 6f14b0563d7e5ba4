"""`diagnose` on the shapes beyond a sheet that failed by itself (issue 18), through the MCP
tool of a real in-memory client: a rejected approval, a job failed by its deadline, a sheet
waiting out a rate limit, a fan-out whose instances all fail, a job cancelled mid-run. Each
next step must be one that helps: following it does what it says."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for_job, wait_until
from mcp import Client
from mcp_types import Implementation
from test_approvals import finished, gate_spec, wait_gate
from test_insight_states import install_metered
from test_transports import call

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.diagnosis import MAX_NEXT_STEPS
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(
    make_config: Callable[..., PodiumConfig], home: Path, tmp_path: Path
) -> AsyncIterator[Client]:
    """A client of a conductor whose home has `metered`, a fake AI CLI that hits a long
    rate limit when its prompt starts with "limited"."""
    install_metered(home, tmp_path, counts_cost=False)
    async with Conductor(make_config(max_concurrent_sheets=4)) as conductor:
        server = PodiumServer(conductor)
        info = Implementation(name="reviewer", version="1.0")
        async with server.running(), Client(server.mcp, client_info=info) as c:
            yield c


def resume_steps(diagnosis: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in diagnosis["next_steps"] if s["tool"] == "resume"]


async def sheet_status(client: Client, job_id: str, sheet: int) -> str:
    detail = await call(client, "status", {"job_id": job_id})
    return str(detail["sheets"][sheet - 1]["status"])


async def test_a_rejected_gate_says_who_rejected_it_and_that_a_resume_asks_again(
    client: Client,
) -> None:
    job_id = (await call(client, "submit_job", {"spec": gate_spec("turned-down")}))["job_id"]
    await wait_gate(client, job_id)
    await call(
        client,
        "approve",
        {"job_id": job_id, "sheet": "ask", "decision": "reject", "note": "wait for QA sign-off"},
    )
    assert (await finished(client, job_id))["status"] == "failed"

    diagnosis = await call(client, "diagnose", {"job_id": job_id})
    [gate] = diagnosis["failing"]
    assert gate["name"] == "ask" and gate["error_category"] == "rejected"
    assert gate["decided_by"] == "reviewer 1.0" and gate["note"] == "wait for QA sign-off"
    assert "rejected by reviewer 1.0" in gate["cause"], gate["cause"]
    assert "wait for QA sign-off" in gate["cause"]
    assert "the run failed" not in gate["cause"]
    assert "rejected by reviewer 1.0" in diagnosis["verdict"]
    # A gate runs nothing: it has no log to read, and no spec fix makes a person say yes.
    assert all(s["tool"] != "logs" for s in diagnosis["next_steps"]), diagnosis["next_steps"]
    assert all("corrected spec" not in s["action"] for s in diagnosis["next_steps"])
    [resume] = resume_steps(diagnosis)
    assert "ask sheet 2 again" in resume["action"], resume
    assert resume["cli"] == f"podium resume {job_id}"

    # The step does what it says: the gate asks again, and an approval completes the job.
    await call(client, "resume", resume["arguments"])
    await wait_gate(client, job_id)
    await call(client, "approve", {"job_id": job_id, "sheet": "ask", "decision": "approve"})
    assert (await finished(client, job_id))["status"] == "completed"


async def test_a_gate_rejected_while_its_job_still_runs_says_to_resume_once_it_ends(
    client: Client,
) -> None:
    spec = gate_spec("still-going")
    spec["on_failure"] = "continue"
    spec["sheets"].append({"name": "long", "prompt": "sleep 30"})
    job_id = (await call(client, "submit_job", {"spec": spec}))["job_id"]
    await wait_gate(client, job_id)
    await call(client, "approve", {"job_id": job_id, "sheet": 2, "decision": "reject"})

    async def gate_failed() -> bool:
        return await sheet_status(client, job_id, 2) == "failed"

    await wait_until(gate_failed, timeout=20)
    diagnosis = await call(client, "diagnose", {"job_id": job_id})
    assert diagnosis["status"] == "running"
    [gate] = diagnosis["failing"]
    assert "rejected by reviewer 1.0 (no note)" in gate["cause"], gate["cause"]
    # A resume of a running job does nothing: the step says when it applies.
    [resume] = resume_steps(diagnosis)
    assert resume["action"].startswith("once the job has ended"), resume
    await call(client, "cancel", {"job_id": job_id})


async def test_a_job_failed_by_its_deadline_names_the_sheets_the_deadline_stopped(
    client: Client,
) -> None:
    spec = {
        "name": "too-slow",
        "deadline_seconds": 1,
        "sheets": [
            {"name": "work", "prompt": "echo 'working hard'; sleep 30"},
            {"name": "after", "depends_on": ["work"], "prompt": "true"},
        ],
    }
    job_id = (await call(client, "submit_job", {"spec": spec}))["job_id"]
    assert (await finished(client, job_id))["status"] == "failed"

    async def work_stopped() -> bool:
        return await sheet_status(client, job_id, 1) == "cancelled"

    await wait_until(work_stopped, timeout=20)

    diagnosis = await call(client, "diagnose", {"job_id": job_id})
    assert diagnosis["error"].startswith("deadline")
    by_name = {s["name"]: s for s in diagnosis["failing"]}
    assert set(by_name) == {"work", "after"}, diagnosis["failing"]
    assert {s["error_category"] for s in by_name.values()} == {"deadline"}
    assert "while it ran" in by_name["work"]["cause"]
    assert "before it started" in by_name["after"]["cause"]
    assert "2 deadline" in diagnosis["verdict"], diagnosis["verdict"]
    actions = [s["action"] for s in diagnosis["next_steps"]]
    # One line for the deadline that stopped both, naming the field to raise.
    [line] = [a for a in actions if "deadline_seconds" in a]
    assert "sheets 1, 2" in line and "new clock" in line, line
    assert any(
        s["arguments"] == {"job_id": job_id, "retry_failed": True} for s in resume_steps(diagnosis)
    ), diagnosis["next_steps"]


async def test_a_sheet_waiting_out_a_rate_limit_is_told_it_runs_again_by_itself(
    client: Client,
) -> None:
    spec = {"name": "held", "instrument": "metered", "sheets": [{"prompt": "limited"}]}
    job_id = (await call(client, "submit_job", {"spec": spec}))["job_id"]

    async def waiting() -> bool:
        return await sheet_status(client, job_id, 1) == "waiting"

    await wait_until(waiting, timeout=20)
    diagnosis = await call(client, "diagnose", {"job_id": job_id})
    assert diagnosis["status"] == "running"
    [sheet] = diagnosis["failing"]
    assert sheet["status"] == "waiting" and "stayed" not in sheet["cause"], sheet["cause"]
    assert "is rate limited" in sheet["cause"]
    # The job runs: a resume would do nothing, and the sheet runs again by itself.
    assert resume_steps(diagnosis) == [], diagnosis["next_steps"]
    assert any("runs again by itself" in s["action"] for s in diagnosis["next_steps"])
    # One hold, one way to lift it.
    lifts = [s for s in diagnosis["next_steps"] if s["tool"] == "clear_rate_limits"]
    assert [s["arguments"] for s in lifts] == [{"instrument": "metered"}], lifts
    await call(client, "cancel", {"job_id": job_id})
    await call(client, "clear_rate_limits", {})


async def test_many_failing_fan_out_instances_keep_the_steps_that_resume(
    client: Client,
) -> None:
    spec = {
        "name": "wide",
        "on_failure": "continue",
        "retry": {"max_retries": 0},
        "concurrency": {"max_parallel_sheets": 4},
        "sheets": [
            {
                "name": "shard",
                "fan_out": 12,
                "prompt": "echo 'shard {{ instance }} broke' >&2; exit 4",
            },
            {"name": "merge", "depends_on": ["shard"], "prompt": "true"},
        ],
    }
    job_id = (await call(client, "submit_job", {"spec": spec}))["job_id"]
    assert (await finished(client, job_id))["status"] == "failed"

    diagnosis = await call(client, "diagnose", {"job_id": job_id})
    assert diagnosis["failing_total"] == 12
    steps = diagnosis["next_steps"]
    assert len(steps) <= MAX_NEXT_STEPS
    # The cap cuts the sheets' own advice, saying so, never the steps that end the trouble.
    arguments = [s["arguments"] for s in resume_steps(diagnosis)]
    assert {"job_id": job_id, "retry_failed": True} in arguments, steps
    assert {"job_id": job_id, "spec": "<the corrected spec>"} in arguments, steps
    assert any("more step(s)" in s["action"] for s in steps), steps


async def test_a_job_cancelled_mid_run_says_which_sheets_were_cancelled(client: Client) -> None:
    spec = {
        "name": "cut-short",
        "sheets": [
            {"name": "quick", "prompt": "true"},
            {"name": "long", "depends_on": ["quick"], "prompt": "sleep 30"},
            {"name": "last", "depends_on": ["long"], "prompt": "true"},
        ],
    }
    job_id = (await call(client, "submit_job", {"spec": spec}))["job_id"]

    async def long_runs() -> bool:
        return await sheet_status(client, job_id, 2) == "running"

    await wait_until(long_runs, timeout=20)
    await call(client, "cancel", {"job_id": job_id})
    diagnosis = await call(client, "diagnose", {"job_id": job_id})
    assert diagnosis["verdict"] == "cancelled: 1/3 sheets completed; 2 cancelled (sheets 2, 3)"
    [resume] = resume_steps(diagnosis)
    assert resume["arguments"] == {"job_id": job_id, "retry_failed": True}


async def test_a_job_stopped_at_approval_gates_says_who_must_decide_and_how(
    client: Client,
) -> None:
    """Five gates of a batch-form spec wait: each is listed with its question, and the
    next steps are the `approve` calls (the decision left to the person asked), a few of
    them and a pointer to the rest, both while the job runs and once it is paused."""
    spec = {
        "name": "five-gates",
        "instrument": "approval",
        "sheet": {"size": 1, "total_items": 5},
        "prompt": {"template": "Publish item {{ start_item }}?"},
    }
    job_id = (await call(client, "submit_job", {"spec": spec}))["job_id"]
    for sheet in range(1, 6):
        await wait_gate(client, job_id, sheet)

    diagnosis = await call(client, "diagnose", {"job_id": job_id})
    assert [(w["reason"], w["detail"]) for w in diagnosis["waiting"]] == [
        ("approval", f"asks: Publish item {n}?") for n in range(1, 6)
    ]
    asks = [s for s in diagnosis["next_steps"] if s["tool"] == "approve"]
    assert [s["arguments"]["sheet"] for s in asks] == [1, 2, 3], diagnosis["next_steps"]
    first = asks[0]
    assert "'Publish item 1?'" in first["action"] and "ask them" in first["action"]
    assert first["arguments"] == {"job_id": job_id, "sheet": 1, "decision": "<approve or reject>"}
    assert first["cli"] == f"podium approve {job_id} 1 [--reject] [--note TEXT]"
    assert any(
        s["cli"] == "podium approve --list" and s["action"].startswith("2 more")
        for s in diagnosis["next_steps"]
    ), diagnosis["next_steps"]

    # The step, with the person's decision filled in, does what it says.
    await call(client, "approve", {**first["arguments"], "decision": "approve"})
    assert await sheet_status(client, job_id, 1) == "completed"

    await call(client, "pause", {"job_id": job_id})
    paused = await call(client, "diagnose", {"job_id": job_id})
    tools = [s["tool"] for s in paused["next_steps"]]
    # Decisions can be made while the job is paused; it goes on once resumed.
    assert tools[0] == "resume" and tools.count("approve") == 3, paused["next_steps"]
    await call(client, "cancel", {"job_id": job_id})


async def test_more_failing_sheets_than_listed_are_all_counted_and_all_resumed(
    client: Client,
) -> None:
    """15 of 24 sheets fail, more than the 10 the answer lists: the verdict counts all 15
    and the resume steps name them all (a resume re-runs every failed sheet, not only the
    listed ones)."""
    spec = {
        "name": "mostly-broken",
        "on_failure": "continue",
        "retry": {"max_retries": 0},
        "sheet": {"size": 1, "total_items": 24},
        "prompt": {
            "template": "{% if sheet_num % 8 < 5 %}echo 'item {{ sheet_num }} broke' >&2; "
            "exit 1{% else %}true{% endif %}"
        },
    }
    job_id = (await call(client, "submit_job", {"spec": spec}))["job_id"]
    assert (await finished(client, job_id))["status"] == "failed"

    diagnosis = await call(client, "diagnose", {"job_id": job_id})
    failed = [n for n in range(1, 25) if n % 8 < 5]
    assert diagnosis["failing_total"] == len(failed) == 15
    assert len(diagnosis["failing"]) == 10 and diagnosis["truncated"]
    assert "failing sheets by cause: 15 failed" in diagnosis["verdict"], diagnosis["verdict"]
    steps = resume_steps(diagnosis)
    assert len(steps) == 2, diagnosis["next_steps"]
    for step in steps:
        assert "15 sheets (1, 2, 3, 4, 8, 9, 10, 11, 12, 16, ...)" in step["action"], step


async def test_a_sheet_whose_log_hit_its_cap_says_its_log_was_truncated(
    make_config: Callable[..., PodiumConfig],
) -> None:
    spec = {
        "name": "flooded",
        "retry": {"max_retries": 0},
        "sheets": [{"prompt": "yes flood | head -c 200000; echo 'Error: boom' >&2; exit 1"}],
    }
    async with Conductor(make_config(log_max_bytes=4096)) as conductor:
        job = await conductor.submit_job(spec=spec)
        assert (await wait_for_job(conductor, job.job_id)).status.value == "failed"
        diagnosis = await conductor.diagnose(job.job_id)
    [sheet] = diagnosis.failing
    assert "log was truncated at 4096 bytes (log_max_bytes)" in sheet.cause, sheet.cause
    assert sheet.log_excerpt is not None
    assert any("log truncated at 4096 bytes" in line for line in sheet.log_excerpt.lines)


async def test_a_cancelled_job_whose_instrument_is_still_held_says_so_in_its_rerun_step(
    client: Client,
) -> None:
    spec = {"name": "held-then-cut", "instrument": "metered", "sheets": [{"prompt": "limited"}]}
    job_id = (await call(client, "submit_job", {"spec": spec}))["job_id"]

    async def waiting() -> bool:
        return await sheet_status(client, job_id, 1) == "waiting"

    await wait_until(waiting, timeout=20)
    await call(client, "cancel", {"job_id": job_id})
    diagnosis = await call(client, "diagnose", {"job_id": job_id})
    [held] = diagnosis["rate_limits"]
    [resume] = resume_steps(diagnosis)
    assert "'metered' is still held by a rate limit" in resume["action"], resume
    assert f"until {held['until']}" in resume["action"], resume
    assert "clear_rate_limits" in resume["action"], resume
    lifts = [s for s in diagnosis["next_steps"] if s["tool"] == "clear_rate_limits"]
    assert [s["arguments"] for s in lifts] == [{"instrument": "metered"}], diagnosis
    await call(client, "clear_rate_limits", {})

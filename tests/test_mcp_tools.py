"""The MCP surface (SPEC §7) through a real in-memory MCP client, in both protocol eras.

Every test runs twice: `auto` (protocol 2026-07-28, `subscriptions/listen`) and `legacy`
(a real 2025-11-25 initialize handshake, `resources/subscribe`). Tools, arguments, output
fields and resource URIs are asserted by the names the spec makes public.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import CallToolResult, ResourceUpdatedNotification, TextContent

from podium.core.conductor import Conductor
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio

TOOLS = {
    "submit_job",
    "validate_spec",
    "list_jobs",
    "status",
    "pause",
    "resume",
    "cancel",
    "clear",
    "clear_rate_limits",
    "snapshots",
    "logs",
    "diagnose",
    "estimate",
    "show_job",
    "show_jobs",
    "approve",
    "run_job",
}
READ_ONLY = {
    "status", "list_jobs", "logs", "snapshots", "validate_spec", "diagnose", "estimate",
    "show_job", "show_jobs",
}  # fmt: skip
DESTRUCTIVE = {"cancel", "clear"}
MUST_BE_IDEMPOTENT = {"pause", "resume", "cancel", "approve"} | READ_ONLY

SUMMARY_FIELDS = {
    "job_id",
    "name",
    "status",
    "total_sheets",
    "completed_sheets",
    "failed_sheets",
    "submitted_at",
    "started_at",
    "completed_at",
    "pause_reason",
    "error",
    "labels",
}
DETAIL_FIELDS = SUMMARY_FIELDS | {"workspace", "priority", "sheets_total_matching", "sheets"}
SHEET_FIELDS = {
    "sheet_num",
    "name",
    "status",
    "attempts",
    "depends_on",
    "instrument",
    "started_at",
    "completed_at",
    "duration_seconds",
    "last_error",
    "error_category",
    "waiting_reason",
    "waiting_until",
    "output_tail",
    "log_uri",
}
CONDUCTOR_FIELDS = {
    "version",
    "pid",
    "uptime_seconds",
    "home",
    "jobs_by_status",
    "running_sheets",
    "pressure_level",
    "memory_mb",
    "rate_limits",
    "ready",
    "instruments",
    "instrument_errors",
}
SNAPSHOT_FIELDS = {"snapshot_id", "job_id", "created_at", "path", "files", "size_bytes"}
LOG_FIELDS = {"text", "sheet_num", "attempt", "truncated", "next_offset"}
HISTORY_FIELDS = {
    "sheet_num",
    "attempt",
    "started_at",
    "ended_at",
    "exit_code",
    "duration_seconds",
    "outcome",
    "error_category",
    "validations",
    "log_path",
}
TEMPLATES = {
    "podium://jobs/{job_id}/checkpoint",
    "podium://jobs/{job_id}/history",
    "podium://jobs/{job_id}/logs",
    "podium://jobs/{job_id}/sheets/{sheet_num}/log",
    "podium://snapshots/{job_id}/{snapshot_id}",
}
TERMINAL = {"completed", "failed", "cancelled"}
SDK_PREFIX = "Error executing tool"
TIME_FIELDS = ("submitted_at", "started_at", "completed_at")

TWO_SHEETS: dict[str, Any] = {
    "name": "two",
    "labels": ["mcp-test"],
    "instrument_config": {"env": {"SECRET": "hunter2"}},
    "sheets": [
        {"name": "first", "prompt": "echo alpha"},
        {"name": "second", "depends_on": ["first"], "prompt": "echo beta"},
    ],
}
QUICK: dict[str, Any] = {"name": "quick", "sheets": [{"prompt": "echo quick"}]}
SLEEPY: dict[str, Any] = {"name": "sleepy", "sheets": [{"prompt": "sleep 30"}]}
FAILING: dict[str, Any] = {
    "name": "failing",
    "retry": {"max_retries": 0},
    "sheets": [{"prompt": "echo doomed; exit 3"}],
}


@dataclass
class Harness:
    client: Client
    conductor: Conductor
    home: Path
    mode: str
    updates: list[str] = field(default_factory=list)  # legacy resource-updated URIs


@pytest.fixture(params=["auto", "legacy"])
async def mcp(request: pytest.FixtureRequest, conductor: Conductor) -> AsyncIterator[Harness]:
    mode: str = request.param
    updates: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updates.append(str(message.params.uri))

    server = PodiumServer(conductor)
    async with (
        server.running(),
        Client(server.mcp, mode=mode, message_handler=on_message) as client,
    ):
        if mode == "legacy":
            assert client.protocol_version == "2025-11-25"
        yield Harness(client, conductor, conductor.config.home, mode, updates)


# ----- helpers --------------------------------------------------------------------------------


def text_of(result: CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, TextContent))


async def ok(h: Harness, tool: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    result = await h.client.call_tool(tool, args or {})
    assert not result.is_error, text_of(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None, f"{tool} gave no structured output"
    return content


async def fails(h: Harness, tool: str, args: dict[str, Any]) -> str:
    """The call is a tool error with a readable message; returns the message."""
    result = await h.client.call_tool(tool, args)
    message = text_of(result)
    assert result.is_error, f"{tool}({args}) succeeded: {result.structured_content}"
    assert message.strip(), f"{tool}({args}) failed with an empty message"
    assert "Traceback" not in message and 'File "' not in message, message
    assert SDK_PREFIX not in message, message
    return message


async def wait_status(
    h: Harness, job_id: str, wanted: set[str] = TERMINAL, timeout: float = 20
) -> dict[str, Any]:
    """Follow a job with the long-poll (the way an agent should) until it reaches `wanted`
    or ends."""
    with anyio.fail_after(timeout):
        while True:
            detail = await ok(h, "status", {"job_id": job_id, "sheet_limit": 1000})
            if detail["status"] in wanted | TERMINAL:
                return detail
            # A long-poll wakes on a change after it began; a change that landed between the
            # read above and the poll is seen by the next read, so waits for a status that
            # does not last (e.g. `running`) poll often.
            wait = 2.0 if wanted <= TERMINAL else 0.1
            await ok(h, "status", {"job_id": job_id, "wait_seconds": wait})


async def wait_sheet_running(h: Harness, job_id: str) -> None:
    with anyio.fail_after(10):
        while (await ok(h, "status", {"job_id": job_id}))["sheets"][0]["status"] != "running":
            await anyio.sleep(0.05)


async def finished_job(h: Harness, spec: dict[str, Any] = TWO_SHEETS) -> dict[str, Any]:
    job = await ok(h, "submit_job", {"spec": spec})
    return await wait_status(h, job["job_id"])


def assert_times(record: dict[str, Any], *names: str) -> None:
    for name in names:
        value = record[name]
        if value is not None:
            assert isinstance(value, str) and value.endswith("Z"), f"{name}={value!r}"


def assert_summary(summary: dict[str, Any]) -> None:
    missing = SUMMARY_FIELDS - summary.keys()
    assert not missing, f"job summary lacks {sorted(missing)}"
    assert_times(summary, *TIME_FIELDS)
    assert summary["submitted_at"] is not None


def sheet_spec(prompts: list[str], name: str = "many", **extra: Any) -> dict[str, Any]:
    return {"name": name, "sheets": [{"prompt": p} for p in prompts], **extra}


# ----- tools/list -----------------------------------------------------------------------------


async def test_list_tools_exact_surface_and_truthful_annotations(mcp: Harness) -> None:
    tools = {t.name: t for t in (await mcp.client.list_tools()).tools}
    assert set(tools) == TOOLS
    for name, tool in tools.items():
        assert tool.description and len(tool.description) > 40, name
        assert tool.title, f"{name} has no title"
        assert tool.input_schema.get("type") == "object", name
        assert tool.output_schema, f"{name} has no output schema"
        a = tool.annotations
        assert a is not None, f"{name} has no annotations"
        hints = {
            "read_only_hint": a.read_only_hint,
            "destructive_hint": a.destructive_hint,
            "idempotent_hint": a.idempotent_hint,
            "open_world_hint": a.open_world_hint,
        }
        unset = [k for k, v in hints.items() if v is None]
        assert not unset, f"{name}: {unset} not set explicitly"
        assert a.read_only_hint is (name in READ_ONLY), name
        assert a.destructive_hint is (name in DESTRUCTIVE), name
        assert a.open_world_hint is False, name
        if name in MUST_BE_IDEMPOTENT:
            assert a.idempotent_hint is True, name
    # The input schemas carry the argument names of SPEC §7.
    props = {n: set(t.input_schema.get("properties", {})) for n, t in tools.items()}
    assert props["submit_job"] >= {"spec", "spec_yaml", "path", "job_id", "start"}
    assert props["validate_spec"] >= {"spec", "spec_yaml", "path"}
    assert props["list_jobs"] >= {"status", "name", "label", "limit", "cursor"}
    assert props["status"] >= {
        "job_id",
        "wait_seconds",
        "sheet_status",
        "sheet_offset",
        "sheet_limit",
        "include_spec",
    }
    assert props["pause"] >= {"job_id", "immediate"}
    assert props["resume"] >= {"job_id", "spec", "spec_yaml", "path", "retry_failed"}
    assert props["cancel"] >= {"job_id"}
    assert props["clear"] >= {"job_ids", "statuses", "older_than_hours", "all"}
    assert props["clear_rate_limits"] >= {"instrument"}
    assert props["snapshots"] >= {"job_id"}
    assert props["logs"] >= {"job_id", "sheet", "attempt", "tail_lines", "offset"}
    # Output schemas name the contract's fields.
    schemas = {n: t.output_schema or {} for n, t in tools.items()}
    out = {n: set(schema.get("properties", {})) for n, schema in schemas.items()}
    assert out["submit_job"] >= SUMMARY_FIELDS | {"workspace"}
    for name in ("pause", "resume", "cancel"):
        assert out[name] >= SUMMARY_FIELDS, name
    assert out["list_jobs"] >= {"jobs", "next_cursor"}
    assert out["show_jobs"] >= {"jobs", "next_cursor"}
    assert out["show_job"] >= DETAIL_FIELDS
    assert out["validate_spec"] >= {"valid", "errors", "sheets"}
    assert out["clear"] >= {"deleted", "job_ids"}
    assert out["clear_rate_limits"] >= {"cleared"}
    assert out["snapshots"] >= {"snapshots"}
    assert out["logs"] >= LOG_FIELDS
    variants = [set(v.get("properties", {})) for v in schemas["status"]["anyOf"]]
    assert any(v >= DETAIL_FIELDS for v in variants)
    assert any(v >= CONDUCTOR_FIELDS for v in variants)


# ----- submit_job -----------------------------------------------------------------------------


async def test_submit_job_with_spec_object_returns_summary_and_workspace(mcp: Harness) -> None:
    job = await ok(mcp, "submit_job", {"spec": QUICK})
    assert_summary(job)
    assert job["name"] == "quick"
    assert job["status"] in {"queued", "running", "completed"}
    assert job["total_sheets"] == 1
    assert re.fullmatch(r"quick-\d{8}T\d{6}-[0-9a-f]{4}", job["job_id"]), job["job_id"]
    workspace = Path(job["workspace"])
    assert workspace == mcp.home / "workspaces" / job["job_id"]
    assert workspace.is_dir()
    done = await wait_status(mcp, job["job_id"])
    assert done["status"] == "completed"
    assert_times(done, "started_at", "completed_at")
    assert done["started_at"] is not None and done["completed_at"] is not None


async def test_submit_job_with_spec_yaml(mcp: Harness) -> None:
    yaml_text = "name: from-yaml\nlabels: [y]\nsheets:\n  - prompt: echo from yaml\n"
    job = await ok(mcp, "submit_job", {"spec_yaml": yaml_text, "job_id": "yaml-1"})
    assert_summary(job)
    assert (job["job_id"], job["name"], job["labels"]) == ("yaml-1", "from-yaml", ["y"])
    assert "workspace" in job
    assert (await wait_status(mcp, "yaml-1"))["status"] == "completed"


async def test_submit_job_with_path_inside_the_workspaces_root(mcp: Harness) -> None:
    spec_file = mcp.home / "workspaces" / "specs" / "job.yaml"
    spec_file.parent.mkdir(parents=True)
    spec_file.write_text("name: from-file\nworkspace: out\nsheets:\n  - prompt: pwd\n")
    job = await ok(mcp, "submit_job", {"path": str(spec_file)})
    assert_summary(job)
    assert job["name"] == "from-file"
    # A relative workspace resolves against the spec file's directory (SPEC §3).
    assert Path(job["workspace"]) == spec_file.parent / "out"
    done = await wait_status(mcp, job["job_id"])
    assert done["status"] == "completed"
    assert done["sheets"][0]["output_tail"].strip() == str(spec_file.parent / "out")


async def test_submit_job_start_false_registers_it_paused_not_started(mcp: Harness) -> None:
    job = await ok(mcp, "submit_job", {"spec": QUICK, "start": False})
    assert (job["status"], job["pause_reason"]) == ("paused", "not_started")
    await anyio.sleep(0.3)
    detail = await ok(mcp, "status", {"job_id": job["job_id"]})
    assert (detail["status"], detail["pause_reason"]) == ("paused", "not_started")
    assert detail["sheets"][0]["status"] == "pending"
    assert detail["sheets"][0]["attempts"] == 0


async def test_resubmit_same_job_id_and_spec_returns_the_same_job(mcp: Harness) -> None:
    first = await ok(mcp, "submit_job", {"spec": QUICK, "job_id": "again", "start": False})
    second = await ok(mcp, "submit_job", {"spec": QUICK, "job_id": "again", "start": False})
    assert second["job_id"] == first["job_id"] == "again"
    assert second["submitted_at"] == first["submitted_at"]
    assert second["workspace"] == first["workspace"]
    listed = await ok(mcp, "list_jobs", {"name": "quick"})
    assert [j["job_id"] for j in listed["jobs"]] == ["again"]
    other = dict(QUICK, sheets=[{"prompt": "echo different"}])
    message = await fails(mcp, "submit_job", {"spec": other, "job_id": "again"})
    assert "job_id" in message and "'again'" in message and "different spec" in message


# ----- status -------------------------------------------------------------------------------


async def test_status_of_a_finished_job_has_every_detail_field(mcp: Harness) -> None:
    done = await finished_job(mcp)
    assert done["status"] == "completed"
    detail = await ok(mcp, "status", {"job_id": done["job_id"]})
    missing = DETAIL_FIELDS - detail.keys()
    assert not missing, f"job detail lacks {sorted(missing)}"
    assert_summary(detail)
    assert detail["workspace"].endswith(done["job_id"])
    assert detail["priority"] == 5
    assert detail["sheets_total_matching"] == 2
    assert (detail["completed_sheets"], detail["failed_sheets"]) == (2, 0)
    assert detail["labels"] == ["mcp-test"]
    assert detail.get("spec") is None  # only with include_spec
    first, second = detail["sheets"]
    for sheet in (first, second):
        missing = SHEET_FIELDS - sheet.keys()
        assert not missing, f"sheet lacks {sorted(missing)}"
        assert_times(sheet, "started_at", "completed_at", "waiting_until")
        assert sheet["status"] == "completed"
        assert sheet["attempts"] == 1 and isinstance(sheet["attempts"], int)
        assert sheet["instrument"] == "shell"
        assert sheet["duration_seconds"] is not None and sheet["duration_seconds"] >= 0
        assert sheet["last_error"] is None and sheet["error_category"] is None
        assert sheet["waiting_reason"] is None and sheet["waiting_until"] is None
    assert (first["sheet_num"], first["name"], first["depends_on"]) == (1, "first", [])
    assert (second["sheet_num"], second["name"], second["depends_on"]) == (2, "second", [1])
    assert "alpha" in first["output_tail"] and "beta" in second["output_tail"]
    assert first["log_uri"] == f"podium://jobs/{done['job_id']}/sheets/1/log"

    with_spec = await ok(mcp, "status", {"job_id": done["job_id"], "include_spec": True})
    assert with_spec["spec"]["name"] == "two"
    assert "SECRET" in with_spec["spec"]["instrument_config"]["env"]
    assert "hunter2" not in json.dumps(with_spec)


async def test_status_without_job_id_is_the_conductor_status(mcp: Harness) -> None:
    await ok(mcp, "submit_job", {"spec": QUICK, "start": False})
    status = await ok(mcp, "status")
    missing = CONDUCTOR_FIELDS - status.keys()
    assert not missing, f"conductor status lacks {sorted(missing)}"
    assert status["home"] == str(mcp.home)
    assert status["ready"] is True
    assert status["jobs_by_status"].get("paused") == 1
    assert isinstance(status["running_sheets"], int)
    assert isinstance(status["pid"], int) and status["uptime_seconds"] >= 0
    assert status["pressure_level"] in {"none", "low", "medium", "high", "critical"}
    assert status["rate_limits"] == []
    shell = [i for i in status["instruments"] if i["name"] == "shell"]
    assert shell and shell[0]["available"] is True and "version" in shell[0]


async def test_status_wait_returns_early_when_the_job_status_changes(mcp: Harness) -> None:
    spec = sheet_spec(["sleep 1.5"], name="napper")
    job = await ok(mcp, "submit_job", {"spec": spec})
    assert (await wait_status(mcp, job["job_id"], {"running"}))["status"] == "running"
    started = time.monotonic()
    detail = await ok(mcp, "status", {"job_id": job["job_id"], "wait_seconds": 10})
    elapsed = time.monotonic() - started
    assert detail["status"] == "completed"
    assert 0.2 < elapsed < 5, f"the long-poll took {elapsed:.1f}s for a ~1.5s sheet"


async def test_status_wait_sends_progress_notifications(mcp: Harness) -> None:
    job = await ok(mcp, "submit_job", {"spec": QUICK, "start": False})
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    started = time.monotonic()
    result = await mcp.client.call_tool(
        "status", {"job_id": job["job_id"], "wait_seconds": 5.6}, progress_callback=on_progress
    )
    elapsed = time.monotonic() - started
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    assert result.structured_content["status"] == "paused"
    assert elapsed >= 5.5, "a long-poll with no change must wait its full time"
    assert seen, "no progress notification during a 5.6 s wait (tick is every 5 s)"
    done, total, message = seen[0]
    assert total == 5.6 and 4.5 <= done <= 5.6
    assert message and job["job_id"] in message and "paused" in message


async def test_status_wait_does_not_block_other_calls(mcp: Harness) -> None:
    job = await ok(mcp, "submit_job", {"spec": QUICK, "start": False})
    order: list[str] = []
    results: dict[str, dict[str, Any]] = {}

    async def long_poll() -> None:
        results["poll"] = await ok(mcp, "status", {"job_id": job["job_id"], "wait_seconds": 15})
        order.append("status")

    started = time.monotonic()
    with anyio.fail_after(12):
        async with anyio.create_task_group() as tg:
            tg.start_soon(long_poll)
            await anyio.sleep(0.3)  # the long-poll is waiting now
            listed = await ok(mcp, "list_jobs")
            order.append("list_jobs")
            assert [j["job_id"] for j in listed["jobs"]] == [job["job_id"]]
            assert time.monotonic() - started < 3
            # A status change ends the long-poll early.
            await ok(mcp, "resume", {"job_id": job["job_id"]})
    assert order == ["list_jobs", "status"]
    assert results["poll"]["status"] != "paused"
    assert time.monotonic() - started < 8


async def test_status_detail_is_never_torn(mcp: Harness) -> None:
    """The job and its sheets in one answer come from one committed state: polled while
    jobs run, the counts match the sheets and the job status matches the sheet statuses."""
    spec = sheet_spec(["sleep 0.03"] * 6, name="torn", concurrency={"max_parallel_sheets": 2})
    pending = {(await ok(mcp, "submit_job", {"spec": spec}))["job_id"] for _ in range(3)}
    reads = 0
    with anyio.fail_after(20):
        while pending:
            for job_id in sorted(pending):
                detail = await ok(mcp, "status", {"job_id": job_id})
                reads += 1
                statuses = [s["status"] for s in detail["sheets"]]
                view = (detail["status"], statuses)
                assert detail["completed_sheets"] == statuses.count("completed"), view
                assert detail["failed_sheets"] == statuses.count("failed"), view
                if "running" in statuses:
                    assert detail["status"] == "running", view
                all_done = all(
                    s in {"completed", "failed", "skipped", "cancelled"} for s in statuses
                )
                assert all_done == (detail["status"] in TERMINAL), view
                if detail["status"] in TERMINAL:
                    pending.discard(job_id)
    assert reads > 10


async def test_status_wait_without_job_id_returns_on_any_job_change(mcp: Harness) -> None:
    job = await ok(mcp, "submit_job", {"spec": QUICK, "start": False})
    results: dict[str, Any] = {}

    async def long_poll() -> None:
        started = time.monotonic()
        results["status"] = await ok(mcp, "status", {"wait_seconds": 10})
        results["elapsed"] = time.monotonic() - started

    with anyio.fail_after(8):
        async with anyio.create_task_group() as tg:
            tg.start_soon(long_poll)
            await anyio.sleep(0.3)
            assert "status" not in results, "the long-poll returned without any change"
            await ok(mcp, "resume", {"job_id": job["job_id"]})
    assert results["status"].keys() >= CONDUCTOR_FIELDS
    assert 0.2 < results["elapsed"] < 5


async def test_status_sheet_paging_and_filter(mcp: Harness) -> None:
    prompts = ["exit 1" if n % 5 == 0 else "true" for n in range(1, 31)]
    spec = sheet_spec(prompts, on_failure="continue", retry={"max_retries": 0})
    job = await ok(mcp, "submit_job", {"spec": spec})
    assert job["total_sheets"] == 30
    await wait_status(mcp, job["job_id"])

    page = await ok(mcp, "status", {"job_id": job["job_id"], "sheet_limit": 10, "sheet_offset": 10})
    assert [s["sheet_num"] for s in page["sheets"]] == list(range(11, 21))
    assert page["sheets_total_matching"] == 30
    assert page["total_sheets"] == 30

    failed = await ok(mcp, "status", {"job_id": job["job_id"], "sheet_status": ["failed"]})
    assert [s["sheet_num"] for s in failed["sheets"]] == [5, 10, 15, 20, 25, 30]
    assert failed["sheets_total_matching"] == 6
    assert all(s["status"] == "failed" for s in failed["sheets"])
    assert failed["sheets"][0]["last_error"] and failed["sheets"][0]["error_category"]

    both = await ok(
        mcp,
        "status",
        {
            "job_id": job["job_id"],
            "sheet_status": ["completed"],
            "sheet_offset": 20,
            "sheet_limit": 10,
        },
    )
    assert both["sheets_total_matching"] == 24
    assert [s["sheet_num"] for s in both["sheets"]] == [26, 27, 28, 29]


# ----- validate_spec --------------------------------------------------------------------------


async def test_validate_spec_reports_sheets_or_every_error(mcp: Harness) -> None:
    report = await ok(mcp, "validate_spec", {"spec": TWO_SHEETS})
    assert set(report) >= {"valid", "errors", "sheets"}
    assert report["valid"] is True and report["errors"] == []
    assert report["sheets"] == [
        {"sheet_num": 1, "name": "first", "depends_on": [], "instrument": "shell"},
        {"sheet_num": 2, "name": "second", "depends_on": [1], "instrument": "shell"},
    ]
    yaml_report = await ok(
        mcp, "validate_spec", {"spec_yaml": "name: y\nsheets: [{prompt: 'true'}]"}
    )
    assert yaml_report["valid"] is True and len(yaml_report["sheets"]) == 1

    bad = {
        "name": "Bad Name!",
        "priority": 11,
        "sheets": [
            {"prompt": "true", "retries": 3},
            {"prompt": "true", "validations": [{"type": "content_regex", "path": "x"}]},
        ],
    }
    report = await ok(mcp, "validate_spec", {"spec": bad})
    assert report["valid"] is False and report["sheets"] == []
    assert all(set(e) >= {"path", "message"} for e in report["errors"])
    paths = {e["path"] for e in report["errors"]}
    assert paths >= {"name", "priority", "sheets.0.retries", "sheets.1.validations.0.pattern"}

    dag = {
        "name": "dag",
        "sheets": [
            {"prompt": "true", "depends_on": [2]},
            {"prompt": "true", "depends_on": [1]},
            {"prompt": "true", "depends_on": ["nope"]},
        ],
    }
    report = await ok(mcp, "validate_spec", {"spec": dag})
    assert report["valid"] is False
    messages = "\n".join(f"{e['path']}: {e['message']}" for e in report["errors"])
    assert "cycle" in messages and "sheets.2.depends_on" in messages, messages
    # Nothing was submitted.
    assert (await ok(mcp, "list_jobs"))["jobs"] == []


# ----- list_jobs ----------------------------------------------------------------------------


async def test_list_jobs_filters_and_pages_with_a_cursor(mcp: Harness) -> None:
    ids = []
    for n in range(5):
        spec = dict(QUICK, name=f"lj-{n % 2}", labels=[f"l{n % 2}"])
        ids.append((await ok(mcp, "submit_job", {"spec": spec, "start": False}))["job_id"])
    pages: list[list[str]] = []
    cursor = None
    while True:
        args: dict[str, Any] = {"limit": 2}
        if cursor:
            args["cursor"] = cursor
        page = await ok(mcp, "list_jobs", args)
        assert set(page) >= {"jobs", "next_cursor"}
        for summary in page["jobs"]:
            assert_summary(summary)
        pages.append([j["job_id"] for j in page["jobs"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 5, "cursor paging does not end"
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [j for p in pages for j in p] == list(reversed(ids))  # newest first, no repeats

    by_name = await ok(mcp, "list_jobs", {"name": "lj-1"})
    assert {j["job_id"] for j in by_name["jobs"]} == {ids[1], ids[3]}
    by_label = await ok(mcp, "list_jobs", {"label": "l0"})
    assert {j["job_id"] for j in by_label["jobs"]} == {ids[0], ids[2], ids[4]}
    by_status = await ok(mcp, "list_jobs", {"status": ["completed", "failed"]})
    assert by_status["jobs"] == [] and by_status["next_cursor"] is None
    assert len((await ok(mcp, "list_jobs", {"status": ["paused"]}))["jobs"]) == 5


# ----- pause / resume / cancel ----------------------------------------------------------------


async def test_pause_resume_cancel_happy_paths(mcp: Harness) -> None:
    job = await ok(mcp, "submit_job", {"spec": SLEEPY})
    job_id = job["job_id"]
    await wait_status(mcp, job_id, {"running"})
    await wait_sheet_running(mcp, job_id)

    paused = await ok(mcp, "pause", {"job_id": job_id, "immediate": True})
    assert_summary(paused)
    assert (paused["status"], paused["pause_reason"]) == ("paused", "user")
    again = await ok(mcp, "pause", {"job_id": job_id})  # idempotent no-op
    assert (again["status"], again["pause_reason"]) == ("paused", "user")

    resumed = await ok(mcp, "resume", {"job_id": job_id})
    assert_summary(resumed)
    assert resumed["status"] in {"queued", "running"}
    assert resumed["pause_reason"] is None

    cancelled = await ok(mcp, "cancel", {"job_id": job_id})
    assert_summary(cancelled)
    assert cancelled["status"] == "cancelled"
    assert cancelled["completed_at"] is not None
    detail = await ok(mcp, "status", {"job_id": job_id})
    assert detail["sheets"][0]["status"] == "cancelled"
    assert (await ok(mcp, "cancel", {"job_id": job_id}))["status"] == "cancelled"  # no-op

    # A cancelled job can be resumed; its cancelled sheet re-runs.
    quick = await ok(mcp, "submit_job", {"spec": QUICK, "start": False})
    await ok(mcp, "cancel", {"job_id": quick["job_id"]})
    back = await ok(mcp, "resume", {"job_id": quick["job_id"]})
    assert back["status"] in {"queued", "running", "completed"}
    assert (await wait_status(mcp, quick["job_id"]))["status"] == "completed"


async def test_resume_failed_job_retries_by_default(mcp: Harness) -> None:
    done = await finished_job(mcp, FAILING)
    assert done["status"] == "failed" and done["error"]
    assert done["sheets"][0]["error_category"] == "failed"
    assert "exit" in done["sheets"][0]["last_error"]
    resumed = await ok(mcp, "resume", {"job_id": done["job_id"]})
    assert resumed["status"] in {"queued", "running", "failed"}
    again = await wait_status(mcp, done["job_id"])
    assert again["status"] == "failed"
    assert again["sheets"][0]["attempts"] == 2


# ----- clear, clear_rate_limits, snapshots, logs ------------------------------------------------


async def test_clear_deletes_finished_jobs_only(mcp: Harness) -> None:
    done = await finished_job(mcp, QUICK)
    waiting = await ok(mcp, "submit_job", {"spec": QUICK, "start": False})
    result = await ok(mcp, "clear", {"all": True})
    assert set(result) >= {"deleted", "job_ids"}
    assert result["deleted"] == 1 and result["job_ids"] == [done["job_id"]]
    listed = [j["job_id"] for j in (await ok(mcp, "list_jobs"))["jobs"]]
    assert listed == [waiting["job_id"]]
    assert Path(done["workspace"]).is_dir(), "clear must never delete workspaces"
    assert not (mcp.home / "logs" / done["job_id"]).exists()
    assert (await ok(mcp, "snapshots", {}))["snapshots"] == []
    message = await fails(mcp, "status", {"job_id": done["job_id"]})
    assert done["job_id"] in message

    failed = await finished_job(mcp, FAILING)
    by_status = await ok(mcp, "clear", {"statuses": ["failed"]})
    assert by_status == {**by_status, "deleted": 1, "job_ids": [failed["job_id"]]}
    by_id = await ok(mcp, "clear", {"job_ids": [waiting["job_id"]]})
    assert by_id["deleted"] == 0 and by_id["job_ids"] == []


async def test_clear_rate_limits_with_none_active(mcp: Harness) -> None:
    assert await ok(mcp, "clear_rate_limits") == {"cleared": []}
    assert (await ok(mcp, "clear_rate_limits", {"instrument": "shell"}))["cleared"] == []
    message = await fails(mcp, "clear_rate_limits", {"instrument": "no-such-cli"})
    assert "instrument" in message and "no-such-cli" in message and "shell" in message


async def test_snapshots_of_finished_jobs(mcp: Harness) -> None:
    first = await finished_job(mcp, QUICK)
    second = await finished_job(mcp)
    listing = await ok(mcp, "snapshots")
    snaps = listing["snapshots"]
    assert [s["job_id"] for s in snaps] == [second["job_id"], first["job_id"]]  # newest first
    for snap in snaps:
        missing = SNAPSHOT_FIELDS - snap.keys()
        assert not missing, f"snapshot lacks {sorted(missing)}"
        assert ":" not in snap["snapshot_id"]
        assert_times(snap, "created_at")
        assert Path(snap["path"]).is_dir()
        assert Path(snap["path"]).is_relative_to(mcp.home / "snapshots")
        assert snap["files"] and all(not Path(f).is_absolute() for f in snap["files"])
        assert "checkpoint.json" in snap["files"]
        assert snap["size_bytes"] > 0
    assert "hunter2" not in json.dumps(listing)
    spec_json = Path(snaps[0]["path"]) / "spec.json"
    assert "hunter2" not in spec_json.read_text()
    only = await ok(mcp, "snapshots", {"job_id": first["job_id"]})
    assert [s["job_id"] for s in only["snapshots"]] == [first["job_id"]]


async def test_logs_tail_combined_and_offset_paging(mcp: Harness) -> None:
    spec = sheet_spec(["for i in $(seq 1 50); do echo line-$i; done; echo err-out >&2", "echo b"])
    done = await finished_job(mcp, spec)
    job_id = done["job_id"]

    chunk = await ok(mcp, "logs", {"job_id": job_id, "sheet": 1})
    missing = LOG_FIELDS - chunk.keys()
    assert not missing, f"logs lacks {sorted(missing)}"
    assert (chunk["sheet_num"], chunk["attempt"]) == (1, 1)
    assert "line-1\n" in chunk["text"] and "line-50" in chunk["text"]
    assert "err-out" in chunk["text"]
    assert chunk["truncated"] is False
    assert isinstance(chunk["next_offset"], int) and chunk["next_offset"] > 0

    tail = await ok(mcp, "logs", {"job_id": job_id, "sheet": 1, "tail_lines": 3})
    assert "line-1\n" not in tail["text"] and tail["text"].count("\n") <= 3
    assert tail["truncated"] is True

    first = await ok(mcp, "logs", {"job_id": job_id, "sheet": 1, "offset": 0})
    assert first["text"].startswith("line-1\n")
    assert first["next_offset"] == len(first["text"].encode())
    rest = await ok(mcp, "logs", {"job_id": job_id, "sheet": 1, "offset": first["next_offset"]})
    assert rest["text"] == ""

    explicit = await ok(mcp, "logs", {"job_id": job_id, "sheet": 2, "attempt": 1})
    assert explicit["text"].strip().endswith("b")

    combined = await ok(mcp, "logs", {"job_id": job_id})
    assert set(combined) >= LOG_FIELDS
    assert "line-50" in combined["text"] and "b" in combined["text"]
    assert "sheet 1" in combined["text"] and "sheet 2" in combined["text"]


# ----- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "extra"),
    [
        ("status", {}),
        ("pause", {}),
        ("resume", {}),
        ("cancel", {}),
        ("logs", {}),
        ("logs", {"sheet": 1}),
        ("snapshots", {}),
    ],
)
async def test_unknown_job_is_a_readable_error(
    mcp: Harness, tool: str, extra: dict[str, Any]
) -> None:
    message = await fails(mcp, tool, {"job_id": "no-such-job", **extra})
    assert "'no-such-job'" in message and "job" in message
    assert "Input should" not in message


async def test_bad_spec_reports_every_error_in_one_answer(mcp: Harness) -> None:
    bad = {
        "name": "Bad Name!",
        "priority": 0,
        "sheets": [
            {"prompt": "true", "bogus_field": 1},
            {"prompt": "true", "validations": [{"type": "file_exists"}]},
        ],
    }
    message = await fails(mcp, "submit_job", {"spec": bad})
    lines = [line for line in message.splitlines() if line.strip()]
    assert len(lines) >= 4, message
    line_re = re.compile(r"^[A-Za-z0-9_.<>]+: .+")
    assert all(line_re.match(line) for line in lines), message
    starts = {line.split(":", 1)[0] for line in lines}
    assert starts >= {"name", "priority", "sheets.0.bogus_field", "sheets.1.validations.0.path"}
    assert (await ok(mcp, "list_jobs"))["jobs"] == []

    message = await fails(
        mcp,
        "submit_job",
        {
            "spec": {
                "name": "t",
                "sheets": [{"prompt": "echo {{ nope }}"}, {"prompt": "true", "depends_on": [5]}],
            }
        },
    )
    assert "nope" in message and "sheets.1.depends_on" in message, message
    assert (await ok(mcp, "list_jobs"))["jobs"] == []

    message = await fails(mcp, "submit_job", {"spec_yaml": "name: [unclosed"})
    assert "YAML" in message or "yaml" in message


async def test_wrong_transitions_are_errors(mcp: Harness) -> None:
    completed = (await finished_job(mcp, QUICK))["job_id"]
    failed = (await finished_job(mcp, FAILING))["job_id"]

    message = await fails(mcp, "pause", {"job_id": completed})
    assert completed in message and "completed" in message and "paused" in message
    message = await fails(mcp, "resume", {"job_id": completed})
    assert completed in message and "completed" in message and "resume" in message
    message = await fails(mcp, "cancel", {"job_id": failed})
    assert failed in message and "failed" in message and "cancel" in message
    message = await fails(mcp, "pause", {"job_id": failed})
    assert failed in message and "failed" in message
    # Nothing changed.
    assert (await ok(mcp, "status", {"job_id": completed}))["status"] == "completed"
    assert (await ok(mcp, "status", {"job_id": failed}))["status"] == "failed"


async def test_unknown_argument_is_named_with_a_suggestion(mcp: Harness) -> None:
    job = await ok(mcp, "submit_job", {"spec": QUICK, "start": False})
    message = await fails(mcp, "status", {"jobid": job["job_id"]})
    assert "jobid" in message and "job_id" in message
    assert "did you mean 'job_id'" in message
    assert SDK_PREFIX not in message
    message = await fails(mcp, "cancel", {"job_id": job["job_id"], "force": True})
    assert "force" in message and "cancel" in message
    # The misspelt call did nothing.
    assert (await ok(mcp, "status", {"job_id": job["job_id"]}))["status"] == "paused"
    message = await fails(mcp, "submit_job", {"specyaml": "name: x"})
    assert "specyaml" in message and "spec_yaml" in message


@pytest.mark.parametrize(
    ("tool", "args", "field"),
    [
        ("status", {"wait_seconds": 99}, "wait_seconds"),
        ("status", {"wait_seconds": -1}, "wait_seconds"),
        ("status", {"sheet_limit": 1001}, "sheet_limit"),
        ("status", {"sheet_offset": -1}, "sheet_offset"),
        ("list_jobs", {"limit": 0}, "limit"),
        ("list_jobs", {"limit": 501}, "limit"),
        ("list_jobs", {"status": ["sleeping"]}, "status"),
        ("logs", {"job_id": "x", "sheet": 0}, "sheet"),
        ("pause", {}, "job_id"),
    ],
)
async def test_out_of_range_argument_is_a_readable_error(
    mcp: Harness, tool: str, args: dict[str, Any], field: str
) -> None:
    message = await fails(mcp, tool, args)
    assert message.startswith(f"{field}"), message
    assert "pydantic" not in message and "errors.pydantic.dev" not in message
    assert SDK_PREFIX not in message


async def test_exactly_one_spec_source(mcp: Harness) -> None:
    message = await fails(mcp, "submit_job", {"spec": QUICK, "spec_yaml": "name: quick"})
    assert "exactly one" in message and "spec" in message and "spec_yaml" in message
    message = await fails(mcp, "submit_job", {})
    assert "exactly one" in message
    message = await fails(mcp, "validate_spec", {"spec": QUICK, "path": "/x.yaml"})
    assert "exactly one" in message
    assert (await ok(mcp, "list_jobs"))["jobs"] == []


async def test_clear_needs_a_filter_and_never_clears_active_jobs(mcp: Harness) -> None:
    message = await fails(mcp, "clear", {})
    assert "job_ids" in message and "statuses" in message and "all" in message
    paused = await ok(mcp, "submit_job", {"spec": QUICK, "start": False})
    message = await fails(mcp, "clear", {"statuses": ["paused"]})
    assert "statuses" in message and "paused" in message
    assert (await ok(mcp, "status", {"job_id": paused["job_id"]}))["status"] == "paused"


async def test_bad_cursor_is_an_error(mcp: Harness) -> None:
    message = await fails(mcp, "list_jobs", {"cursor": "not-a-cursor"})
    assert "cursor" in message and "not-a-cursor" in message


async def test_logs_for_a_missing_sheet_or_attempt(mcp: Harness) -> None:
    done = await finished_job(mcp, QUICK)
    message = await fails(mcp, "logs", {"job_id": done["job_id"], "sheet": 7})
    assert "sheet" in message and "7" in message and done["job_id"] in message
    message = await fails(mcp, "logs", {"job_id": done["job_id"], "sheet": 1, "attempt": 5})
    assert "attempt" in message and "5" in message
    # A sheet that has not run yet has an empty log (so it can be polled), not an error.
    waiting = await ok(mcp, "submit_job", {"spec": QUICK, "start": False})
    empty = await ok(mcp, "logs", {"job_id": waiting["job_id"], "sheet": 1})
    assert empty["text"] == "" and empty["attempt"] is None and empty["truncated"] is False


async def test_field_dag_and_template_errors_in_one_answer(mcp: Harness) -> None:
    bad = {
        "name": "Bad Name!",
        "sheets": [{"prompt": "echo {{ nope }}"}, {"prompt": "true", "depends_on": [9]}],
    }
    message = await fails(mcp, "submit_job", {"spec": bad})
    assert "name: " in message
    assert "sheets.1.depends_on" in message, message
    assert "nope" in message, message


# The SDK wraps every ToolError as "Error executing tool <name>: <message>"; SPEC §7 says
# the message is the engine's own (server/guard.py removes the prefix from the wire result).
ENGINE_ERRORS = [
    ("status", {"job_id": "no-such-job"}),
    ("submit_job", {"spec": {"name": "Bad Name!", "sheets": []}}),
    ("clear", {}),
    ("list_jobs", {"cursor": "bogus"}),
    ("submit_job", {"path": "/etc/hostname"}),
]


@pytest.mark.parametrize(("tool", "args"), ENGINE_ERRORS)
async def test_tool_errors_carry_no_sdk_prefix(
    mcp: Harness, tool: str, args: dict[str, Any]
) -> None:
    message = await fails(mcp, tool, args)
    assert SDK_PREFIX not in message, message


# ----- confinement ----------------------------------------------------------------------------


def assert_names_roots(message: str, home: Path) -> None:
    assert "allowed roots" in message, message
    assert str((home / "workspaces").resolve()) in message, message


async def test_spec_path_is_confined_to_the_allowed_roots(mcp: Harness, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "spec.yaml").write_text("name: sneaky\nsheets: [{prompt: 'true'}]\n")
    link = mcp.home / "workspaces" / "link.yaml"
    link.symlink_to(outside / "spec.yaml")
    linked_dir = mcp.home / "workspaces" / "linked"
    linked_dir.symlink_to(outside, target_is_directory=True)

    for path in (
        "../../etc/passwd",
        "/etc/hostname",
        str(link),
        str(linked_dir / "spec.yaml"),
        str(mcp.home / "workspaces" / ".." / "podium.db"),
    ):
        for tool in ("submit_job", "validate_spec"):
            message = await fails(mcp, tool, {"path": path})
            assert "path" in message and repr(path) in message, message
            assert_names_roots(message, mcp.home)
            assert "root:" not in message  # /etc/passwd was not read
    resumable = await ok(mcp, "submit_job", {"spec": QUICK, "start": False})
    message = await fails(mcp, "resume", {"job_id": resumable["job_id"], "path": str(link)})
    assert_names_roots(message, mcp.home)
    listed = (await ok(mcp, "list_jobs"))["jobs"]
    assert [j["job_id"] for j in listed] == [resumable["job_id"]]


async def test_spec_workspace_is_confined(mcp: Harness, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    for workspace in (str(elsewhere), "../escape", "ok/../../../escape", "/"):
        spec = dict(QUICK, workspace=workspace)
        message = await fails(mcp, "submit_job", {"spec": spec})
        assert "workspace" in message, message
        assert_names_roots(message, mcp.home)
    assert not elsewhere.exists() and not (mcp.home / "escape").exists()
    assert (await ok(mcp, "list_jobs"))["jobs"] == []
    inside = await ok(mcp, "submit_job", {"spec": dict(QUICK, workspace="sub/dir")})
    assert Path(inside["workspace"]) == mcp.home / "workspaces" / "sub" / "dir"


async def test_a_literal_validation_path_out_of_the_workspace_is_a_spec_error(
    mcp: Harness,
) -> None:
    """Known before anything runs, so refused at validate and submit, naming the field;
    paths that only lexically pass through `..` stay valid."""
    validations = [
        {"type": "file_exists", "path": "ok/../fine.txt"},
        {"type": "content_contains", "path": "../outside.txt", "pattern": "SECRET"},
        {"type": "file_modified", "path": "a/b/../../../up.txt"},
        {"type": "file_exists", "path": "..hidden"},
    ]
    spec = {
        "name": "escape",
        "validations": [{"type": "file_exists", "path": ".."}],
        "sheets": [{"prompt": "true", "validations": validations}],
    }
    report = await ok(mcp, "validate_spec", {"spec": spec})
    assert report["valid"] is False
    assert {e["path"] for e in report["errors"]} == {
        "sheets.0.validations.1.path",
        "sheets.0.validations.2.path",
        "validations.0.path",
    }, report["errors"]
    assert all("climbs out of the workspace" in e["message"] for e in report["errors"])
    refused = await mcp.client.call_tool("submit_job", {"spec": spec})
    assert refused.is_error
    assert (await ok(mcp, "list_jobs"))["jobs"] == []


async def test_validation_path_escaping_the_workspace_fails_the_sheet(mcp: Harness) -> None:
    (mcp.home / "workspaces" / "outside.txt").write_text("TOP SECRET\n")
    # A templated path is only known once rendered: the runner refuses where it leads.
    escaping = "{{ '..' }}/outside.txt"
    spec = {
        "name": "escape",
        "retry": {"max_retries": 0},
        "sheets": [
            {
                "prompt": "true",
                "validations": [
                    {"type": "content_contains", "path": escaping, "pattern": "SECRET"}
                ],
            }
        ],
    }
    done = await finished_job(mcp, spec)
    assert done["status"] == "failed"
    sheet = done["sheets"][0]
    assert sheet["status"] == "failed"
    assert sheet["error_category"] == "validation_failed"
    assert "../outside.txt" in sheet["last_error"] and "escapes" in sheet["last_error"]
    history = json.loads(await read_text(mcp, f"podium://jobs/{done['job_id']}/history"))
    (entry,) = history["entries"]
    (check,) = entry["validations"]
    assert check["passed"] is False and "escapes" in check["detail"]


async def test_resource_uris_cannot_escape(mcp: Harness) -> None:
    done = await finished_job(mcp, QUICK)
    job_id = done["job_id"]
    for uri in (
        "podium://jobs/../checkpoint",
        "podium://jobs/../../etc/history",
        f"podium://jobs/{job_id}/sheets/../../../etc/log",
        "podium://snapshots/../../etc",
        f"podium://snapshots/{job_id}/..",
        f"podium://snapshots/..%2F{job_id}/x",
        "podium://jobs/%2E%2E/logs",
    ):
        with pytest.raises(MCPError) as info:
            await mcp.client.read_resource(uri)
        assert str(info.value).strip(), uri
        assert "Traceback" not in str(info.value)


# ----- resources ------------------------------------------------------------------------------


async def read_text(h: Harness, uri: str, mime: str = "application/json") -> str:
    result = await h.client.read_resource(uri)
    (content,) = result.contents
    assert content.mime_type == mime, f"{uri}: {content.mime_type}"
    text = getattr(content, "text", None)
    assert isinstance(text, str), uri
    return text


async def test_resources_and_templates_are_listed(mcp: Harness) -> None:
    resources = {str(r.uri): r for r in (await mcp.client.list_resources()).resources}
    assert {"podium://conductor/status", "podium://jobs"} <= set(resources)
    for uri in ("podium://conductor/status", "podium://jobs"):
        assert resources[uri].mime_type == "application/json"
        assert resources[uri].description
    templates = {
        t.uri_template: t for t in (await mcp.client.list_resource_templates()).resource_templates
    }
    assert set(templates) >= TEMPLATES
    for uri in TEMPLATES:
        assert templates[uri].description, uri
        expected = "text/plain" if uri.endswith(("/logs", "/log")) else "application/json"
        assert templates[uri].mime_type == expected, uri


async def test_read_every_resource_of_a_finished_job(mcp: Harness) -> None:
    done = await finished_job(mcp)
    job_id = done["job_id"]
    assert done["status"] == "completed"

    status = json.loads(await read_text(mcp, "podium://conductor/status"))
    assert status.keys() >= CONDUCTOR_FIELDS
    jobs = json.loads(await read_text(mcp, "podium://jobs"))
    assert [j["job_id"] for j in jobs["jobs"]] == [job_id]
    assert jobs["jobs"][0].keys() >= SUMMARY_FIELDS

    raw = await read_text(mcp, f"podium://jobs/{job_id}/checkpoint")
    assert "hunter2" not in raw
    checkpoint = json.loads(raw)
    assert checkpoint.keys() >= DETAIL_FIELDS | {"spec"}
    assert [s["sheet_num"] for s in checkpoint["sheets"]] == [1, 2]
    assert all(s.keys() >= SHEET_FIELDS for s in checkpoint["sheets"])
    assert checkpoint["spec"]["name"] == "two"
    assert set(checkpoint["spec"]["instrument_config"]["env"]) == {"SECRET"}
    assert_times(checkpoint, *TIME_FIELDS)

    history = json.loads(await read_text(mcp, f"podium://jobs/{job_id}/history"))
    entries = history["entries"]
    assert [(e["sheet_num"], e["attempt"]) for e in entries] == [(1, 1), (2, 1)]
    for entry in entries:
        assert entry.keys() >= HISTORY_FIELDS
        assert entry["outcome"] == "completed" and entry["exit_code"] == 0
        assert entry["validations"] == []
        assert entry["log_path"] and Path(entry["log_path"]).is_file()
        assert_times(entry, "started_at", "ended_at")

    combined = await read_text(mcp, f"podium://jobs/{job_id}/logs", "text/plain")
    assert "alpha" in combined and "beta" in combined
    sheet_log = await read_text(mcp, f"podium://jobs/{job_id}/sheets/2/log", "text/plain")
    assert "beta" in sheet_log and "alpha" not in sheet_log
    log_uri = checkpoint["sheets"][0]["log_uri"]
    assert "alpha" in await read_text(mcp, log_uri, "text/plain")

    (snap,) = (await ok(mcp, "snapshots", {"job_id": job_id}))["snapshots"]
    manifest = json.loads(
        await read_text(mcp, f"podium://snapshots/{job_id}/{snap['snapshot_id']}")
    )
    assert manifest.keys() >= SNAPSHOT_FIELDS
    assert manifest["snapshot_id"] == snap["snapshot_id"] and manifest["files"] == snap["files"]


@pytest.mark.parametrize(
    ("template", "named"),
    [
        ("podium://jobs/{missing}/checkpoint", "{missing}"),
        ("podium://jobs/{missing}/history", "{missing}"),
        ("podium://jobs/{missing}/logs", "{missing}"),
        ("podium://jobs/{missing}/sheets/1/log", "{missing}"),
        ("podium://jobs/{job}/sheets/9/log", "9"),
        ("podium://jobs/{job}/sheets/zero/log", "zero"),
        ("podium://snapshots/{missing}/20990101T000000000000Z", "{missing}"),
        ("podium://snapshots/{job}/20990101T000000000000Z", "20990101T000000000000Z"),
    ],
)
async def test_unknown_job_sheet_or_snapshot_resource_is_not_found(
    mcp: Harness, template: str, named: str
) -> None:
    job = await ok(mcp, "submit_job", {"spec": QUICK, "job_id": "known-job", "start": False})
    values = {"missing": "ghost-job", "job": job["job_id"]}
    with pytest.raises(MCPError) as info:
        await mcp.client.read_resource(template.format(**values))
    message = str(info.value)
    assert named.format(**values) in message, message
    assert any(w in message for w in ("not found", "no job", "no sheet", "not a sheet")), message
    assert "Error creating resource" not in message


# ----- change notifications -----------------------------------------------------------------


async def legacy_subscribe(h: Harness, uri: str) -> None:
    # The SDK flags resources/subscribe as gone in 2026-07-28, even on a 2025-11-25 session.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        await h.client.subscribe_resource(uri)


async def expect_update(h: Harness, uri: str, action: Any, timeout: float = 5) -> None:
    """Subscribe to `uri` in the client's protocol era, run `action`, and require an update
    notification for exactly that URI within `timeout` seconds."""
    if h.mode == "legacy":
        await legacy_subscribe(h, uri)
        await action()
        with anyio.fail_after(timeout):
            while uri not in h.updates:
                await anyio.sleep(0.05)
        return
    async with h.client.listen(resource_subscriptions=[uri]) as sub:
        await action()
        with anyio.fail_after(timeout):
            async for event in sub:
                if getattr(event, "uri", None) == uri:
                    return
        pytest.fail(f"subscription to {uri} ended without an update")


async def test_checkpoint_subscribers_are_notified(mcp: Harness) -> None:
    job = await ok(mcp, "submit_job", {"spec": QUICK, "start": False})
    uri = f"podium://jobs/{job['job_id']}/checkpoint"
    await anyio.sleep(1.2)  # past the notifier's quiet period for this URI

    async def resume() -> None:
        await ok(mcp, "resume", {"job_id": job["job_id"]})

    await expect_update(mcp, uri, resume)
    assert (await wait_status(mcp, job["job_id"]))["status"] == "completed"


async def test_jobs_list_subscribers_are_notified_on_submit(mcp: Harness) -> None:
    async def submit() -> None:
        await ok(mcp, "submit_job", {"spec": QUICK, "start": False})

    await expect_update(mcp, "podium://jobs", submit)


async def test_no_update_for_an_unrelated_job(mcp: Harness) -> None:
    """The notification is per URI: a subscriber to one job hears nothing about another."""
    mine = await ok(mcp, "submit_job", {"spec": QUICK, "start": False})
    uri = f"podium://jobs/{mine['job_id']}/checkpoint"
    await anyio.sleep(1.2)
    heard: list[str] = []
    if mcp.mode == "legacy":
        await legacy_subscribe(mcp, uri)
        await finished_job(mcp, QUICK)
        await anyio.sleep(1.2)
        heard = [u for u in mcp.updates if u == uri]
    else:
        async with mcp.client.listen(resource_subscriptions=[uri]) as sub:
            await finished_job(mcp, QUICK)
            with anyio.move_on_after(1.2):
                async for event in sub:
                    heard.append(str(getattr(event, "uri", "")))
    assert heard == []


async def test_list_jobs_answers_what_the_summary_models_dump(mcp: Harness) -> None:
    """The listing builds its JSON straight from the rows: it must be, field for field, the
    JSON of the `JobSummary` models the other tools return, for jobs in every state."""
    labelled = dict(QUICK, name="labelled", labels=["a", "b"])
    done = await ok(mcp, "submit_job", {"spec": labelled})
    failed = await ok(mcp, "submit_job", {"spec": FAILING})
    paused = await ok(mcp, "submit_job", {"spec": QUICK, "start": False})
    cancelled = await ok(mcp, "submit_job", {"spec": QUICK, "start": False})
    await ok(mcp, "cancel", {"job_id": cancelled["job_id"]})
    await wait_status(mcp, done["job_id"])
    await wait_status(mcp, failed["job_id"])

    result = await mcp.client.call_tool("list_jobs", {"limit": 3})
    listed = result.structured_content
    assert listed is not None and len(listed["jobs"]) == 3 and listed["next_cursor"]
    summaries, cursor = await mcp.conductor.list_jobs(limit=3)
    assert listed == {
        "jobs": [s.model_dump(mode="json") for s in summaries],
        "next_cursor": cursor,
    }
    rest = await ok(mcp, "list_jobs", {"cursor": listed["next_cursor"]})
    jobs = {j["job_id"]: j for j in [*listed["jobs"], *rest["jobs"]]}
    assert len(jobs) == 4
    # The same summary as a model-built answer (pause returns the job's summary).
    assert jobs[paused["job_id"]] == await ok(mcp, "pause", {"job_id": paused["job_id"]})
    assert jobs[done["job_id"]]["labels"] == ["a", "b"]
    assert jobs[failed["job_id"]]["status"] == "failed"
    assert jobs[cancelled["job_id"]]["completed_at"].endswith("Z")
    text = text_of(result)
    assert text == json.dumps(listed, separators=(",", ":"), ensure_ascii=False)

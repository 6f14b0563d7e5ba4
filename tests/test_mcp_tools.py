"""The MCP tools (SPEC §7) through a real in-memory MCP client, in both protocol eras: every
test runs twice (`auto` and `legacy`, see mcp_harness). Tools, arguments and output fields are
asserted by the names the spec makes public."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp_harness import (
    CONDUCTOR_FIELDS,
    DESTRUCTIVE,
    DETAIL_FIELDS,
    FAILING,
    LOG_FIELDS,
    MUST_BE_IDEMPOTENT,
    QUICK,
    READ_ONLY,
    SHEET_FIELDS,
    SLEEPY,
    SNAPSHOT_FIELDS,
    SUMMARY_FIELDS,
    TERMINAL,
    TOOLS,
    TWO_SHEETS,
    Harness,
    assert_summary,
    assert_times,
    fails,
    finished_job,
    mcp,
    ok,
    sheet_spec,
    text_of,
    wait_sheet_running,
    wait_status,
)

pytestmark = pytest.mark.anyio
__all__ = ["mcp"]  # fixture used by name below


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

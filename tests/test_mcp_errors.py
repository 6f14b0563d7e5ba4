"""Tool errors and confinement through a real in-memory MCP client, in both protocol eras:
every bad argument, unknown job or path outside the allowed roots is a specific tool error,
never a traceback or the SDK's prefix."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from mcp_harness import (
    FAILING,
    QUICK,
    SDK_PREFIX,
    Harness,
    fails,
    finished_job,
    mcp,
    ok,
    read_text,
)
from mcp_types import INVALID_PARAMS, CallToolResult, Request

pytestmark = pytest.mark.anyio
__all__ = ["mcp"]  # fixture used by name below


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


class RawToolCall(Request[dict[str, Any], str]):
    """A tools/call whose params the client does not check, to send what a buggy agent might."""

    name_param = "name"


@pytest.mark.parametrize("arguments", [[], ["job_id"], "job_id=x", 5, True])
async def test_arguments_that_are_not_an_object_are_named(mcp: Harness, arguments: Any) -> None:
    # The SDK alone answers "Invalid request parameters" with empty data: nothing to act on.
    request = RawToolCall(method="tools/call", params={"name": "status", "arguments": arguments})
    with pytest.raises(MCPError) as info:
        await mcp.client.session.send_request(request, CallToolResult)
    message = info.value.error.message
    assert info.value.error.code == INVALID_PARAMS
    assert message.startswith("arguments: must be an object"), message
    assert "job_id" in message and "wait_seconds" in message, message


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

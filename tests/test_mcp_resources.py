"""The MCP resources and their change notifications (SPEC §7) through a real in-memory MCP
client, in both protocol eras (`resources/subscribe` and `subscriptions/listen`)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_harness import (
    CONDUCTOR_FIELDS,
    DETAIL_FIELDS,
    FAILING,
    HISTORY_FIELDS,
    QUICK,
    SHEET_FIELDS,
    SNAPSHOT_FIELDS,
    SUMMARY_FIELDS,
    TEMPLATES,
    TIME_FIELDS,
    Harness,
    assert_times,
    finished_job,
    mcp,
    ok,
    read_text,
    text_of,
    wait_status,
)

pytestmark = pytest.mark.anyio
__all__ = ["mcp"]  # fixture used by name below


# ----- resources ------------------------------------------------------------------------------


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
        ("podium://jobs/{job}/sheets/99999999999999999999/log", "99999999999999999999"),
        ("podium://jobs/{job}/sheets/zero/log", "zero"),
        # Unicode digits pass str.isdigit() but not int(): "²" once gave -32603 ValueError.
        ("podium://jobs/{job}/sheets/\u00b2/log", "\u00b2"),
        ("podium://jobs/{job}/sheets/1\u00b2/log", "1\u00b2"),
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


@pytest.mark.parametrize("sheet", ["0", "99999999999999999999", "zero", "\u00b2", "1"])
async def test_a_sheet_log_of_an_unknown_job_says_the_job_is_not_found(
    mcp: Harness, sheet: str
) -> None:
    # Not "sheet '0' of job 'ghost-job' not found", which reads as if the job existed.
    with pytest.raises(MCPError) as info:
        await mcp.client.read_resource(f"podium://jobs/ghost-job/sheets/{sheet}/log")
    assert "job_id: job 'ghost-job' not found" in str(info.value), str(info.value)


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


async def test_an_unsubscribed_legacy_client_hears_no_more_updates(mcp: Harness) -> None:
    if mcp.mode != "legacy":
        pytest.skip("resources/unsubscribe is the 2025-11-25 era's")
    job = await ok(mcp, "submit_job", {"spec": QUICK, "start": False})
    uri = f"podium://jobs/{job['job_id']}/checkpoint"
    await anyio.sleep(1.2)  # past the notifier's quiet period for the submit's update
    await legacy_subscribe(mcp, uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        await mcp.client.unsubscribe_resource(uri)
        await mcp.client.unsubscribe_resource(uri)  # twice is harmless
    await ok(mcp, "resume", {"job_id": job["job_id"]})
    assert (await wait_status(mcp, job["job_id"]))["status"] == "completed"
    # Something else this client still hears, sent after the job's last change.
    await expect_update(mcp, "podium://jobs", lambda: ok(mcp, "submit_job", {"spec": QUICK}))
    assert uri not in mcp.updates

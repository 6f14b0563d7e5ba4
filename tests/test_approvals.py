"""Approval sheets (SPEC §4, issue 12): a gate that waits for a person, decided with the
`approve` tool (both protocol eras, real in-memory MCP clients), `podium approve` (the CLI
against a real conductor process), recorded in history; rejection, timeout, a restart, and
the errors an agent can act on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import wait_for_job
from mcp import Client
from mcp_types import Implementation
from test_conductor import conductor_client
from test_transports import call, make_home, podium_cli, read_text

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio


def gate_spec(name: str = "gate", **gate: Any) -> dict[str, Any]:
    """build -> ask (approval, asking with build's output) -> ship (writes the note)."""
    return {
        "name": name,
        "retry": {"max_retries": 0},
        "sheets": [
            {"name": "build", "prompt": "echo v1.2.3"},
            {
                "name": "ask",
                "depends_on": ["build"],
                "instrument": "approval",
                "prompt": "Ship {{ outputs.build | trim }} to production?",
                **gate,
            },
            {
                "name": "ship",
                "depends_on": ["ask"],
                "prompt": "printf '%s' {{ outputs.ask | shell_quote }} > shipped.txt",
            },
        ],
    }


async def wait_gate(client: Client, job_id: str, sheet: int = 2) -> dict[str, Any]:
    """Follow the job (long-poll, no tight loop) until sheet `sheet` waits for approval. The
    long-poll wakes on a change of the job's status, which a gate opening is not (the job
    stays running): a short one, or each look sleeps its whole wait out."""
    with anyio.fail_after(20):
        while True:
            detail = await call(client, "status", {"job_id": job_id, "wait_seconds": 1})
            row = detail["sheets"][sheet - 1]
            if row["status"] == "waiting" and row["waiting_reason"] == "approval":
                return detail
            assert detail["status"] in ("queued", "running"), detail


async def finished(client: Client, job_id: str) -> dict[str, Any]:
    with anyio.fail_after(20):
        while True:
            detail = await call(client, "status", {"job_id": job_id, "wait_seconds": 5})
            if detail["status"] in ("completed", "failed", "cancelled"):
                return detail


@pytest.fixture(params=["auto", "legacy"])
async def client(request: pytest.FixtureRequest, conductor: Conductor) -> AsyncIterator[Client]:
    server = PodiumServer(conductor)
    info = Implementation(name="reviewer-app", version="3.1")
    async with (
        server.running(),
        Client(server.mcp, mode=request.param, client_info=info) as c,
    ):
        yield c


async def test_approve_lets_the_job_go_on_and_history_records_who_and_why(
    client: Client, conductor: Conductor
) -> None:
    job = await call(client, "submit_job", {"spec": gate_spec()})
    job_id = job["job_id"]
    detail = await wait_gate(client, job_id)
    gate = detail["sheets"][1]
    # The question is the rendered prompt, with the ancestor's output in it.
    assert gate["output_tail"] == "Ship v1.2.3 to production?"
    assert gate["waiting_until"] is not None and gate["instrument"] == "approval"
    assert detail["sheets"][2]["status"] == "pending"
    assert detail["status"] == "running"

    # Pending approvals are in the conductor status and in their own resource.
    status = await call(client, "status", {})
    assert status["pending_approvals_total"] == 1
    [pending] = status["pending_approvals"]
    assert pending["job_id"] == job_id and pending["sheet_num"] == 2 and pending["name"] == "ask"
    assert pending["question"] == "Ship v1.2.3 to production?"
    listed = json.loads(await read_text(client, "podium://approvals"))
    assert [a["job_id"] for a in listed["approvals"]] == [job_id] and listed["total"] == 1

    summary = await call(
        client,
        "approve",
        {"job_id": job_id, "sheet": "ask", "decision": "approve", "note": "release notes ok"},
    )
    assert summary["job_id"] == job_id
    done = await finished(client, job_id)
    assert done["status"] == "completed", done
    # A dependent reads the decision's note as the gate's output.
    workspace = Path(done["workspace"])
    assert (workspace / "shipped.txt").read_text() == "release notes ok"

    history = json.loads(await read_text(client, f"podium://jobs/{job_id}/history"))
    [entry] = [e for e in history["entries"] if e["sheet_num"] == 2]
    assert entry["outcome"] == "completed" and entry["decision"] == "approve"
    assert entry["decided_by"] == "reviewer-app 3.1"
    assert entry["note"] == "release notes ok"
    assert entry["exit_code"] is None and entry["duration_seconds"] >= 0
    # Nothing waits any more.
    assert (await call(client, "status", {}))["pending_approvals"] == []


async def test_reject_fails_the_gate_as_rejected_and_skips_what_depends_on_it(
    client: Client,
) -> None:
    job_id = (await call(client, "submit_job", {"spec": gate_spec()}))["job_id"]
    await wait_gate(client, job_id)
    await call(
        client,
        "approve",
        {"job_id": job_id, "sheet": 2, "decision": "reject", "note": "not on a Friday"},
    )
    done = await finished(client, job_id)
    assert done["status"] == "failed"
    gate, ship = done["sheets"][1], done["sheets"][2]
    assert gate["status"] == "failed" and gate["error_category"] == "rejected"
    assert "not on a Friday" in gate["last_error"] and "reviewer-app" in gate["last_error"]
    assert ship["status"] == "skipped"
    history = json.loads(await read_text(client, f"podium://jobs/{job_id}/history"))
    [entry] = [e for e in history["entries"] if e["sheet_num"] == 2]
    assert entry["decision"] == "reject" and entry["error_category"] == "rejected"
    assert entry["outcome"] == "failed" and entry["note"] == "not on a Friday"


async def test_decisions_that_cannot_apply_say_why(client: Client) -> None:
    spec = gate_spec()
    # The gate cannot open before its dependency has run: the job starts paused.
    job_id = (await call(client, "submit_job", {"spec": spec, "start": False}))["job_id"]

    async def refused(arguments: dict[str, Any]) -> str:
        result = await client.call_tool("approve", arguments)
        assert result.is_error, result
        text = result.content[0].text  # type: ignore[union-attr]
        assert "Traceback" not in text
        return str(text)

    assert "not waiting for approval" in await refused(
        {"job_id": job_id, "sheet": "ask", "decision": "approve"}
    )
    assert "only sheets with `instrument: approval`" in await refused(
        {"job_id": job_id, "sheet": 1, "decision": "approve"}
    )
    assert "no sheet named 'asc'" in await refused(
        {"job_id": job_id, "sheet": "asc", "decision": "approve"}
    )
    assert "has no sheet 9" in await refused({"job_id": job_id, "sheet": 9, "decision": "reject"})
    assert "not found" in await refused({"job_id": "nope", "sheet": 1, "decision": "approve"})
    assert "decision" in await refused({"job_id": job_id, "sheet": 2, "decision": "maybe"})
    assert "desicion: unknown argument" in await refused(
        {"job_id": job_id, "sheet": 2, "desicion": "approve"}
    )

    await call(client, "resume", {"job_id": job_id})
    await wait_gate(client, job_id)
    await call(client, "approve", {"job_id": job_id, "sheet": 2, "decision": "approve"})
    # The same decision again is a no-op (control calls are idempotent) ...
    again = await call(client, "approve", {"job_id": job_id, "sheet": 2, "decision": "approve"})
    assert again["job_id"] == job_id
    # ... the opposite one is refused, naming the decision that stands.
    message = await refused({"job_id": job_id, "sheet": 2, "decision": "reject"})
    assert "already decided (approve by reviewer-app 3.1)" in message
    assert (await finished(client, job_id))["status"] == "completed"


async def test_timeout_seconds_bounds_the_wait(client: Client) -> None:
    spec = gate_spec(instrument_config={"timeout_seconds": 0.5})
    job_id = (await call(client, "submit_job", {"spec": spec}))["job_id"]
    done = await finished(client, job_id)
    assert done["status"] == "failed"
    gate = done["sheets"][1]
    assert gate["status"] == "failed" and gate["error_category"] == "timeout"
    assert "timeout_seconds" in gate["last_error"]
    assert done["sheets"][2]["status"] == "skipped"


async def test_a_rejected_gate_asks_again_on_resume(client: Client) -> None:
    job_id = (await call(client, "submit_job", {"spec": gate_spec()}))["job_id"]
    await wait_gate(client, job_id)
    await call(client, "approve", {"job_id": job_id, "sheet": 2, "decision": "reject"})
    assert (await finished(client, job_id))["status"] == "failed"
    await call(client, "resume", {"job_id": job_id})
    await wait_gate(client, job_id)
    await call(client, "approve", {"job_id": job_id, "sheet": 2, "decision": "approve"})
    assert (await finished(client, job_id))["status"] == "completed"
    history = json.loads(await read_text(client, f"podium://jobs/{job_id}/history"))
    decisions = [(e["attempt"], e["decision"]) for e in history["entries"] if e["sheet_num"] == 2]
    assert decisions == [(1, "reject"), (2, "approve")]


async def test_a_pending_approval_survives_a_restart(config_for_restart: PodiumConfig) -> None:
    config = config_for_restart
    first = Conductor(config)
    await first.start()
    try:
        submitted = await first.submit_job(spec=gate_spec())
        job_id = submitted.job_id
        await wait_for_job(first, job_id, statuses=("running",))
        with anyio.fail_after(20):
            while (await first.get_job(job_id)).sheets[1].waiting_reason is None:
                await anyio.sleep(0.05)
    finally:
        await first.stop()

    second = Conductor(config)
    await second.start()
    try:
        detail = await second.get_job(job_id)
        gate = detail.sheets[1]
        assert gate.status.value == "waiting" and gate.waiting_reason is not None
        assert gate.waiting_reason.value == "approval"
        assert gate.output_tail == "Ship v1.2.3 to production?"
        assert (await second.status()).pending_approvals[0].job_id == job_id
        await second.approvals.approve(job_id, "ask", "approve", decided_by="restarted-client")
        if (await second.get_job(job_id)).status.value == "paused":
            await second.resume_job(job_id)
        done = await wait_for_job(second, job_id)
        assert done.status.value == "completed"
    finally:
        await second.stop()


@pytest.fixture
def config_for_restart(make_config: Any) -> PodiumConfig:
    config: PodiumConfig = make_config()
    return config


async def test_podium_approve_from_the_command_line(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    assert podium_cli(home, "start", "--detach").returncode == 0
    async with conductor_client(home) as client:
        approved = (await call(client, "submit_job", {"spec": gate_spec("yes")}))["job_id"]
        rejected = (await call(client, "submit_job", {"spec": gate_spec("no")}))["job_id"]
        await wait_gate(client, approved)
        await wait_gate(client, rejected)

        listing = podium_cli(home, "approve", "--list", "--json")
        assert listing.returncode == 0, listing.stderr
        waiting = {a["job_id"] for a in json.loads(listing.stdout)["approvals"]}
        assert waiting == {approved, rejected}

        yes = podium_cli(home, "approve", approved, "ask", "--note", "go")
        assert yes.returncode == 0, yes.stderr
        no = podium_cli(home, "approve", rejected, "2", "--reject", "--note", "wait for QA")
        assert no.returncode == 0, no.stderr
        assert (await finished(client, approved))["status"] == "completed"
        failed = await finished(client, rejected)
        assert failed["status"] == "failed"
        assert failed["sheets"][1]["error_category"] == "rejected"

        history = json.loads(await read_text(client, f"podium://jobs/{rejected}/history"))
        [entry] = [e for e in history["entries"] if e["sheet_num"] == 2]
        assert entry["decided_by"].startswith("podium-cli (") and entry["note"] == "wait for QA"

        # A decision on a sheet that no longer waits is an error in the CLI's words.
        late = podium_cli(home, "approve", rejected, "ask")
        said = " ".join(late.stderr.split())
        assert late.returncode != 0 and "not waiting for approval" in said, said
        assert said.startswith("podium: SHEET: sheet 2 (ask)") and "Traceback" not in said


async def test_a_pending_approval_survives_kill_9(tmp_path: Path, make_config: Any) -> None:
    """The gate opens in a conductor process that is then SIGKILLed; the next conductor
    finds the approval still waiting (not reset like interrupted work) and takes a decision."""
    import os
    import signal
    import sqlite3

    from test_recovery import conductor_process, poll

    config: PodiumConfig = make_config()
    db = config.home / "podium.db"

    def gate_open() -> bool:
        if not db.exists():
            return False
        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "SELECT waiting_reason FROM sheets WHERE job_id = 'gated' AND sheet_num = 2"
            ).fetchone()
        return row is not None and row[0] == "approval"

    with conductor_process(config.home, tmp_path, gate_spec(), job_id="gated") as proc:
        poll(gate_open, 30, "the approval gate to open")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    after = Conductor(config)
    await after.start()
    try:
        gate = (await after.get_job("gated")).sheets[1]
        assert gate.status.value == "waiting" and gate.output_tail == "Ship v1.2.3 to production?"
        assert [a.job_id for a in (await after.status()).pending_approvals] == ["gated"]
        await after.approvals.approve(
            "gated", 2, "reject", note="found a bug", decided_by="after-crash"
        )
        failed = await wait_for_job(after, "gated")
        assert failed.sheets[1].error_category is not None
        assert failed.sheets[1].error_category.value == "rejected"
    finally:
        await after.stop()


async def test_a_gate_asked_again_then_cancelled_takes_no_decision(client: Client) -> None:
    """Rejected, asked again on resume, then cancelled with its job: the earlier rejection no
    longer stands, so repeating it is not a no-op that reports success, and the refusal says
    the sheet is cancelled without claiming it was decided."""
    job_id = (await call(client, "submit_job", {"spec": gate_spec()}))["job_id"]
    await wait_gate(client, job_id)
    await call(client, "approve", {"job_id": job_id, "sheet": "ask", "decision": "reject"})
    assert (await finished(client, job_id))["status"] == "failed"
    await call(client, "resume", {"job_id": job_id})
    await wait_gate(client, job_id)
    await call(client, "cancel", {"job_id": job_id})
    for decision in ("reject", "approve"):
        result = await client.call_tool(
            "approve", {"job_id": job_id, "sheet": "ask", "decision": decision}
        )
        assert result.is_error, (decision, result.structured_content)
        text = result.content[0].text  # type: ignore[union-attr]
        assert "is cancelled, not waiting for approval" in text
        assert "already decided" not in text, text
    detail = await call(client, "status", {"job_id": job_id})
    assert detail["status"] == "cancelled" and detail["sheets"][1]["status"] == "cancelled"


async def test_a_sheet_named_oddly_is_refused_and_the_gate_still_waits(client: Client) -> None:
    """`sheet` takes a number or a name: JSON `true` is neither (it must not mean sheet 1,
    here the gate itself), a superscript digit is a name, and a number past any job's size
    is a sheet that does not exist; each error names `sheet`, and the gate keeps waiting."""
    spec = {
        "name": "first-gate",
        "sheets": [
            {"name": "go", "instrument": "approval", "prompt": "Go?"},
            {"name": "then", "depends_on": ["go"], "prompt": "echo then"},
        ],
    }
    job_id = (await call(client, "submit_job", {"spec": spec}))["job_id"]
    await wait_gate(client, job_id, sheet=1)
    for sheet in (True, False, "²", 10**30, "99999999999999999999999", 1.0e300):
        result = await client.call_tool(
            "approve", {"job_id": job_id, "sheet": sheet, "decision": "approve"}
        )
        assert result.is_error, (sheet, result.structured_content)
        text = result.content[0].text  # type: ignore[union-attr]
        assert text.startswith("sheet"), (sheet, text)
        assert "int()" not in text and "SQLite" not in text, (sheet, text)
    gate = (await call(client, "status", {"job_id": job_id}))["sheets"][0]
    assert gate["status"] == "waiting" and gate["attempts"] == 0


async def test_validations_on_an_approval_sheet_are_refused_at_submit(client: Client) -> None:
    """A gate runs nothing, so nothing of it can be validated: its own `validations` would be
    ignored and an approval would pass them unchecked. They are a spec error naming the field;
    job-level validations (meant for the sheets that run) do not apply to gates."""
    spec = {
        "name": "checked-gate",
        "validations": [{"type": "file_exists", "path": "report.txt"}],
        "sheets": [
            {"name": "report", "prompt": "echo ok > report.txt"},
            {
                "name": "review",
                "depends_on": ["report"],
                "instrument": "approval",
                "prompt": "Report fine?",
                "validations": [{"type": "file_exists", "path": "signed.txt"}],
            },
        ],
    }
    checked = await call(client, "validate_spec", {"spec": spec})
    assert checked["valid"] is False
    [error] = checked["errors"]
    assert error["path"] == "sheets.1.validations" and "approval" in error["message"]
    refused = await client.call_tool("submit_job", {"spec": spec})
    assert refused.is_error and "sheets.1.validations" in refused.content[0].text  # type: ignore[union-attr]

    del spec["sheets"][1]["validations"]  # type: ignore[attr-defined]
    job_id = (await call(client, "submit_job", {"spec": spec}))["job_id"]
    await wait_gate(client, job_id)
    await call(client, "approve", {"job_id": job_id, "sheet": "review", "decision": "approve"})
    assert (await finished(client, job_id))["status"] == "completed"


async def test_a_changed_spec_reaches_a_gate_that_waits(client: Client) -> None:
    """A resume with a changed spec applies to every sheet not completed, an open gate too:
    a new question is asked (with its new timeout), a gate turned into a shell sheet runs as
    one. And a job whose only open work is a gate is `running`, not `queued`, once resumed."""
    job_id = (await call(client, "submit_job", {"spec": gate_spec("modified")}))["job_id"]
    await wait_gate(client, job_id)
    await call(client, "pause", {"job_id": job_id})
    resumed = await call(client, "resume", {"job_id": job_id})
    assert resumed["status"] == "running", resumed

    reworded = gate_spec("modified", instrument_config={"timeout_seconds": 600})
    reworded["sheets"][1]["prompt"] = "Ship {{ outputs.build | trim }} to staging first?"
    await call(client, "resume", {"job_id": job_id, "spec": reworded})
    with anyio.fail_after(20):
        while True:
            detail = await call(client, "status", {"job_id": job_id, "wait_seconds": 1})
            gate = detail["sheets"][1]
            if gate["status"] == "waiting" and gate["output_tail"] != "Ship v1.2.3 to production?":
                break
    assert gate["output_tail"] == "Ship v1.2.3 to staging first?"
    assert detail["status"] == "running"
    # The question taken back is an attempt of its own: the new one is another attempt (a
    # durable task's input key names one question only).
    assert gate["attempts"] == 1
    history = json.loads(await read_text(client, f"podium://jobs/{job_id}/history"))
    [withdrawn] = [e for e in history["entries"] if e["sheet_num"] == 2]
    assert withdrawn["outcome"] == "cancelled" and withdrawn["decision"] is None
    pending = (await call(client, "status", {}))["pending_approvals"]
    [asked] = [a for a in pending if a["job_id"] == job_id]
    assert asked["question"] == "Ship v1.2.3 to staging first?"

    no_gate = gate_spec("modified")
    no_gate["sheets"][1] = {"name": "ask", "depends_on": ["build"], "prompt": "echo auto-ok"}
    await call(client, "resume", {"job_id": job_id, "spec": no_gate})
    done = await finished(client, job_id)
    assert done["status"] == "completed", done
    assert done["sheets"][1]["instrument"] == "shell"
    assert done["sheets"][1]["output_tail"] == "auto-ok\n"
    assert (Path(done["workspace"]) / "shipped.txt").read_text() == "auto-ok\n"


async def test_an_open_gate_stays_a_gate_when_its_approval_profile_goes(
    home: Path, make_config: Any
) -> None:
    """A gate opened under a user profile of `kind: approval`, which is then removed and the
    profiles reloaded: the question asked still takes a decision, and its timeout still ends
    it as a gate's (not as a sheet run on an instrument that no longer exists)."""
    profile = home / "instruments" / "signoff.yaml"
    profile.parent.mkdir()
    profile.write_text("name: signoff\nkind: approval\n")
    decided = gate_spec("decided", instrument="signoff")
    lapsed = gate_spec("lapsed", instrument="signoff", instrument_config={"timeout_seconds": 3})
    conductor = Conductor(make_config())
    await conductor.start()
    try:
        server = PodiumServer(conductor)
        async with server.running(), Client(server.mcp) as client:
            decided_id = (await call(client, "submit_job", {"spec": decided}))["job_id"]
            lapsed_id = (await call(client, "submit_job", {"spec": lapsed}))["job_id"]
            await wait_gate(client, decided_id)
            await wait_gate(client, lapsed_id)
            profile.unlink()
            await conductor.reload()
            assert "signoff" not in {
                i["name"] for i in (await call(client, "status", {}))["instruments"]
            }

            await call(
                client, "approve", {"job_id": decided_id, "sheet": "ask", "decision": "approve"}
            )
            done = await finished(client, decided_id)
            assert done["sheets"][1]["status"] == "completed"
            # Its dependent is still a shell sheet: it runs on.
            assert done["sheets"][2]["status"] == "completed", done

            ran_out = await finished(client, lapsed_id)
            gate = ran_out["sheets"][1]
            assert (gate["status"], gate["error_category"]) == ("failed", "timeout"), gate
            history = json.loads(await read_text(client, f"podium://jobs/{lapsed_id}/history"))
            [entry] = [e for e in history["entries"] if e["sheet_num"] == 2]
            assert (entry["outcome"], entry["decision"]) == ("timeout", None), entry
    finally:
        await conductor.stop()


@pytest.mark.parametrize("cap", ["max_parallel_sheets", "max_concurrent_sheets"])
async def test_a_gate_opens_while_other_sheets_fill_every_slot(
    make_config: Any, tmp_path: Path, cap: str
) -> None:
    """A gate takes no slot (docs/spec-format.md): it stayed `pending`, its question not
    asked, while its job's other sheets (here a fan-out) held every slot."""
    gate_file = tmp_path / "go"
    spec: dict[str, Any] = {
        "name": "busy-gate",
        "sheets": [
            {
                "name": "work",
                "fan_out": 2,
                "prompt": f"while [ ! -e {gate_file} ]; do sleep 0.05; done",
            },
            {"name": "ask", "instrument": "approval", "prompt": "Go on?"},
        ],
    }
    if cap == "max_parallel_sheets":
        spec["concurrency"] = {"max_parallel_sheets": 2}
    conductor = Conductor(
        make_config(**({"max_concurrent_sheets": 2} if cap != "max_parallel_sheets" else {}))
    )
    await conductor.start()
    server = PodiumServer(conductor)
    try:
        async with server.running(), Client(server.mcp) as c:
            job_id = (await call(c, "submit_job", {"spec": spec}))["job_id"]
            detail = await wait_gate(c, job_id, sheet=3)
            assert [s["status"] for s in detail["sheets"][:2]] == ["running", "running"]
            await call(c, "approve", {"job_id": job_id, "sheet": "ask", "decision": "approve"})
            gate_file.touch()
            assert (await finished(c, job_id))["status"] == "completed"
    finally:
        gate_file.touch()
        await conductor.stop()

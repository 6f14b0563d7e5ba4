"""Templates a sheet renders besides its prompt and validations (its conditions, its
cadenzas, the context files, the prelude) and the follow-up's path are checked at submit like
the prompt is (SPEC §4): `outputs` of a sheet that is not an ancestor, a name with no value
and a template past a limit are submit errors naming the field, not failed sheets later."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import wait_for_job
from mcp import Client
from mcp.types import TextContent

from podium.core.conductor import Conductor
from podium.core.models import JobStatus, SheetStatus
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio

NOT_ANCESTOR = "outputs[1]: sheet 1 is not an ancestor of sheet 2; add it to depends_on"
BOMB = "{{ (9 ** 4096) ** 4096 }}"


@pytest.fixture
async def client(conductor: Conductor) -> AsyncIterator[Client]:
    server = PodiumServer(conductor)
    async with server.running(), Client(server.mcp) as c:
        yield c


def two_sheets(second: dict[str, Any], **job: Any) -> dict[str, Any]:
    return {
        "name": "beyond",
        **job,
        "sheets": [
            {"name": "one", "prompt": "echo 1"},
            {"name": "two", "prompt": "echo 2", **second},
        ],
    }


CASES = [
    ({"skip_when": "outputs[1] == 'x'"}, {}, "sheets.1.skip_when", NOT_ANCESTOR),
    ({"skip_when": "'x' in outputs.one"}, {}, "sheets.1.skip_when", "outputs['one']"),
    (
        {"skip_when": "sheets.one.status == 'completed' and outputs[1] == 'x'"},
        {},
        "sheets.1.skip_when",
        NOT_ANCESTOR,
    ),
    (
        {"skip_when_command": {"command": "test '{{ outputs[1] }}' = x"}},
        {},
        "sheets.1.skip_when_command.command",
        NOT_ANCESTOR,
    ),
    (
        {"instrument": "claude-code", "cadenzas": ["notes-{{ outputs[1] }}.md"]},
        {},
        "sheets.1.cadenzas.0.file",
        NOT_ANCESTOR,
    ),
    (
        {"instrument": "claude-code"},
        {"prelude": ["{{ outputs.one }}.md"]},
        "prelude.0.file",
        "outputs['one']",
    ),
    ({}, {"context": {"files": ["{{ outputs[1] }}.md"]}}, "context.files.0", "not an ancestor"),
    ({"skip_when": "(9 ** 4096) ** 4096 > 1"}, {}, "sheets.1.skip_when", "65536 bits"),
    (
        {"skip_when_command": {"command": f"echo {BOMB}"}},
        {},
        "sheets.1.skip_when_command.command",
        "65536 bits",
    ),
    ({}, {"context": {"files": [BOMB]}}, "context.files.0", "65536 bits"),
    (
        {},
        {"on_success": {"submit": "{{ outputs[1] }}.yaml"}},
        "on_success.submit",
        "'outputs' has no value when the job ends",
    ),
    (
        {},
        {"on_success": {"submit": "{{ nxt }}.yaml"}},
        "on_success.submit",
        "undefined template variable 'nxt'; it may use job_id, total_sheets, workspace",
    ),
    ({}, {"on_success": {"submit": BOMB}}, "on_success.submit", "65536 bits"),
]  # fmt: skip


@pytest.mark.parametrize(("second", "job", "path", "words"), CASES)
async def test_validate_and_submit_refuse_naming_the_field(
    client: Client, conductor: Conductor, second: dict[str, Any], job: dict[str, Any], path: str,
    words: str,
) -> None:  # fmt: skip
    spec = two_sheets(second, **job)
    report = (await client.call_tool("validate_spec", {"spec": spec})).structured_content
    assert report is not None and not report["valid"], report
    errors = {e["path"]: e["message"] for e in report["errors"]}
    assert path in errors, errors
    assert words in errors[path], errors[path]
    submitted = await client.call_tool("submit_job", {"spec": spec})
    assert submitted.is_error
    text = "\n".join(b.text for b in submitted.content if isinstance(b, TextContent))
    assert f"{path}: " in text and words in text, text
    assert (await conductor.list_jobs())[0] == []


async def test_the_same_reads_of_an_ancestor_are_fine_and_run(
    client: Client, conductor: Conductor
) -> None:
    """With `depends_on`, every one of those reads is allowed and renders the real output."""
    spec = {
        "name": "ancestors",
        "variables": {"next_name": "next"},
        "context": {"files": ["notes.txt"]},
        "on_success": {"submit": "{{ workspace }}/{{ next_name }}.yaml", "max_chain": 1},
        "sheets": [
            {"name": "one", "prompt": "echo notes; echo seen > notes.txt"},
            {
                "name": "two",
                "depends_on": ["one"],
                "skip_when": "'skip-me' in outputs[1]",
                "skip_when_command": {"command": "test '{{ outputs.one | trim }}' = skip"},
                "prompt": "echo 'files: {{ previous_files | tojson }}'",
                "validations": [
                    {"type": "command_succeeds", "command": "test -n '{{ outputs.get(\"one\") }}'"}
                ],
            },
        ],
    }
    report = (await client.call_tool("validate_spec", {"spec": spec})).structured_content
    assert report is not None and report["valid"], report
    result = await client.call_tool("submit_job", {"spec": spec})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    job_id = result.structured_content["job_id"]
    detail = await wait_for_job(conductor, job_id)
    assert detail.status is JobStatus.COMPLETED, [s.last_error for s in detail.sheets]
    two = detail.sheets[1]
    assert two.status is SheetStatus.COMPLETED
    assert json.loads((two.output_tail or "").split("files: ", 1)[1]) == {"notes.txt": "seen\n"}

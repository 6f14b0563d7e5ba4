"""Conditions (issue 17): `skip_when` (an expression over earlier sheets) and
`skip_when_command` (an exit code) skip a sheet, shown as `skipped` with the reason; the
sheets that depend on it run."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import wait_for_job

from podium.core.conductor import Conductor
from podium.core.errors import SpecError
from podium.core.models import ErrorCategory, JobStatus, SheetStatus
from podium.core.spec.loader import load_spec

pytestmark = pytest.mark.anyio


async def run(conductor: Conductor, spec: dict[str, Any]) -> Any:
    submitted = await conductor.submit_job(spec=spec)
    return await wait_for_job(conductor, submitted.job_id)


async def test_skip_when_skips_with_the_reason_and_dependents_run(conductor: Conductor) -> None:
    spec = {
        "name": "conditions",
        "sheets": [
            {"name": "plan", "prompt": "echo 'PHASES: 1'; touch skip.txt"},
            {
                "name": "phase2",
                "depends_on": ["plan"],
                "skip_when": "'PHASES: 1' in sheets.plan.output",
                "prompt": "echo phase2 > phase2.txt",
            },
            {"name": "after", "depends_on": ["phase2"], "prompt": "echo after > after.txt"},
            {
                "name": "kept",
                "depends_on": [1],
                "skip_when": "sheets[1].status != 'completed' or sheets['plan'].attempts > 1",
                "prompt": "echo kept",
            },
            {
                "name": "by-command",
                "depends_on": ["plan"],
                "skip_when_command": {
                    "command": "test -f {{ workspace }}/skip.txt",
                    "description": "the plan has one phase",
                },
                "prompt": "echo ran > by-command.txt",
            },
            {
                "name": "command-fails",
                "depends_on": ["plan"],
                "skip_when_command": {"command": "test -f nothing.txt"},
                "prompt": "echo ran",
            },
            {
                "name": "command-hangs",
                "skip_when_command": {"command": "sleep 30", "timeout_seconds": 0.3},
                "prompt": "echo ran",
            },
            {"name": "last", "depends_on": ["by-command", "after"], "prompt": "echo last"},
        ],
    }
    detail = await run(conductor, spec)
    assert detail.status is JobStatus.COMPLETED, [(s.name, s.last_error) for s in detail.sheets]
    sheets = {s.name: s for s in detail.sheets}
    assert sheets["phase2"].status is SheetStatus.SKIPPED
    assert sheets["phase2"].error_category is ErrorCategory.CONDITION
    assert sheets["phase2"].last_error == (
        "skipped: skip_when \"'PHASES: 1' in sheets.plan.output\" is true"
    )
    assert sheets["by-command"].status is SheetStatus.SKIPPED
    assert sheets["by-command"].last_error == (
        "skipped: skip_when_command exited 0 (the plan has one phase)"
    )
    for name in ("after", "kept", "command-fails", "command-hangs", "last"):
        assert sheets[name].status is SheetStatus.COMPLETED, name
    # A skipped sheet never ran: no attempt, no file, nothing in its history.
    assert sheets["phase2"].attempts == 0 and sheets["by-command"].attempts == 0
    history, _ = await conductor.get_execution_history(detail.job_id)
    assert {h.sheet_num for h in history} == {
        sheets[n].sheet_num
        for n in ("plan", "after", "kept", "command-fails", "command-hangs", "last")
    }
    assert detail.failed_sheets == 0


async def test_batch_form_conditions_and_a_job_of_only_skips(conductor: Conductor) -> None:
    spec = {
        "name": "batch-conditions",
        "sheet": {
            "size": 1,
            "total_items": 3,
            "fan_out": {2: 2},
            "dependencies": {2: [1], 3: [2]},
            "skip_when": {2: "stage == 2 and instance == 1"},
            "skip_when_command": {3: {"command": "true"}},
        },
        "prompt": {"template": "echo {{ sheet_name }}"},
    }
    detail = await run(conductor, spec)
    assert detail.status is JobStatus.COMPLETED
    assert [(s.name, s.status) for s in detail.sheets] == [
        ("sheet-1", SheetStatus.COMPLETED),
        ("sheet-2-1", SheetStatus.SKIPPED),
        ("sheet-2-2", SheetStatus.COMPLETED),
        ("sheet-3", SheetStatus.SKIPPED),
    ]
    only_skips = {
        "name": "all-skipped",
        "sheets": [{"prompt": "echo no", "skip_when": "true"}],
    }
    detail = await run(conductor, only_skips)
    assert detail.status is JobStatus.COMPLETED
    assert detail.sheets[0].status is SheetStatus.SKIPPED


async def test_a_condition_that_fails_to_evaluate_fails_the_sheet(conductor: Conductor) -> None:
    # A sheet name built when the condition is decided is known only then (a constant one
    # that names no sheet is a submit error: test_skip_when_refs.py).
    spec = {
        "name": "bad-condition",
        "retry": {"max_retries": 0},
        "sheets": [
            {"name": "a", "prompt": "echo a"},
            {
                "name": "b",
                "depends_on": ["a"],
                "skip_when": "sheets['no' ~ 'pe'].status",
                "prompt": "x",
            },
        ],
    }
    detail = await run(conductor, spec)
    assert detail.status is JobStatus.FAILED
    b = detail.sheets[1]
    assert b.status is SheetStatus.FAILED
    assert b.last_error is not None and b.last_error.startswith("skip_when: ")
    assert "nope" in b.last_error


async def test_resume_keeps_a_condition_skip(conductor: Conductor) -> None:
    spec = {
        "name": "resume-skip",
        "on_failure": "continue",
        "retry": {"max_retries": 0},
        "sheets": [
            {"name": "skipped", "prompt": "echo x >> ran.txt", "skip_when": "true"},
            {"name": "fails", "prompt": "test -f fixed.txt"},
        ],
    }
    detail = await run(conductor, spec)
    assert detail.status is JobStatus.FAILED
    (detail_workspace,) = {detail.workspace}
    open(f"{detail_workspace}/fixed.txt", "w").close()
    await conductor.resume_job(detail.job_id)
    detail = await wait_for_job(conductor, detail.job_id)
    assert detail.status is JobStatus.COMPLETED
    assert detail.sheets[0].status is SheetStatus.SKIPPED and detail.sheets[0].attempts == 0


@pytest.mark.parametrize(
    ("sheet", "path", "words"),
    [
        ({"skip_when": "sheets[1].status == 'failed' and typo"}, "sheets.0.skip_when", "'typo'"),
        ({"skip_when": "a ) b"}, "sheets.0.skip_when", "syntax"),
        ({"skip_when": "x" * 2001}, "sheets.0.skip_when", "2000"),
        (
            {"skip_when_command": {"command": "test {{ nope }}"}},
            "sheets.0.skip_when_command.command",
            "'nope'",
        ),
        (
            {"skip_when_command": {"command": "true", "timeout_seconds": 61}},
            "sheets.0.skip_when_command.timeout_seconds",
            "60",
        ),
    ],
)
def test_condition_errors_at_submit_name_the_field(
    sheet: dict[str, Any], path: str, words: str
) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(data={"name": "bad", "sheets": [{"prompt": "echo", **sheet}]})
    messages = {e.path: e.message for e in caught.value.errors}
    assert path in messages, messages
    assert words in messages[path]


# Ten joins of 99,999 numbers: about 2.5 s of work here, ten times the render budget (one
# join alone takes 0.2 s, under the budget on an idle machine: it raised only under load).
SLOW_CONDITION = " + ".join(["(range(99999) | map('string') | join | length)"] * 10) + " > 0"


@pytest.mark.parametrize(
    ("bomb", "limit"),
    [
        ("('x' * 999999) * 999999 != ''", "1000000 items"),
        ("(9 ** 4096) ** 4096 > 1", "65536 bits"),
        (SLOW_CONDITION, "0.25 s budget"),
    ],
)
def test_a_condition_is_bounded_like_a_template(bomb: str, limit: str) -> None:
    import time

    from podium.core.spec.conditions import MAX_EXPRESSION_CHARS
    from podium.core.spec.expressions import evaluate
    from podium.core.spec.templating import TemplateRenderError

    assert len(bomb) <= MAX_EXPRESSION_CHARS  # a skip_when a spec can hold
    started = time.monotonic()
    with pytest.raises(TemplateRenderError) as caught:
        evaluate(bomb, {})
    assert time.monotonic() - started < 2
    assert limit in str(caught.value), caught.value

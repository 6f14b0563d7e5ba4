"""A `skip_when` that reads a sheet the job does not have is a submit error at the condition's
path, naming the sheet and the ones there are (SPEC §4), instead of a sheet that fails when
its condition is decided. What only run time can tell stays a run-time error: a key built
then, and reads behind a guard. A job stored before the check still loads and runs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from helpers import wait_for_job
from mcp import Client
from mcp_types import TextContent
from test_spec_defects import corrupt_stored_spec

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.errors import SpecError
from podium.core.models import JobStatus, SheetStatus
from podium.core.spec import load_spec
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio

EXPLICIT_NAMES = (
    "the sheets are numbered 1 to 5 after fan-out, named plan, build-1, build-2, build-3"
)
PLNA = f"sheets.plna: no sheet of this job is named 'plna' (did you mean 'plan'?); {EXPLICIT_NAMES}"


def explicit(condition: str) -> dict[str, Any]:
    """Sheets 1 (plan), 2-4 (build, fan_out 3) and 5 (unnamed, with the condition)."""
    return {
        "name": "refs",
        "sheets": [
            {"name": "plan", "prompt": "echo plan"},
            {"name": "build", "prompt": "echo build", "fan_out": 3},
            {"prompt": "echo last", "depends_on": ["plan"], "skip_when": condition},
        ],
    }


def batch(condition: str) -> dict[str, Any]:
    """Sheets sheet-1, sheet-2-1, sheet-2-2 (stage 2, fan_out 2) and sheet-3."""
    return {
        "name": "batch-refs",
        "sheet": {"size": 1, "total_items": 3, "fan_out": {2: 2}, "skip_when": {3: condition}},
        "prompt": {"template": "echo {{ sheet_name }}"},
    }


def errors_of(spec: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as caught:
        load_spec(data=spec)
    return [(e.path, e.message) for e in caught.value.errors]


REFUSED = [
    (
        explicit("sheets.plna.status == 'failed'"),
        "sheets.2.skip_when",
        PLNA,
    ),
    (
        explicit("'done' in sheets['pla'].output"),
        "sheets.2.skip_when",
        "sheets['pla']: no sheet of this job is named 'pla' (did you mean 'plan'?); "
        + EXPLICIT_NAMES,
    ),
    (
        explicit("sheets[6].status == 'completed'"),
        "sheets.2.skip_when",
        "sheets[6]: there is no sheet 6; the sheets are numbered 1 to 5 after fan-out",
    ),
    (
        explicit("sheets['7'].attempts > 1"),
        "sheets.2.skip_when",
        "sheets['7']: there is no sheet 7; the sheets are numbered 1 to 5 after fan-out",
    ),
    (
        explicit("sheets.0.status"),  # Jinja's sheets.0 is sheets[0]
        "sheets.2.skip_when",
        "sheets[0]: there is no sheet 0; the sheets are numbered 1 to 5 after fan-out",
    ),
    (
        explicit("sheets[-1].status"),
        "sheets.2.skip_when",
        "sheets[-1]: there is no sheet -1; the sheets are numbered 1 to 5 after fan-out",
    ),
    (
        explicit("sheets[true].status"),
        "sheets.2.skip_when",
        "sheets[true]: a sheet is read by its number or its name; the sheets are numbered 1 "
        "to 5 after fan-out",
    ),
    (
        explicit("sheets.build.status == 'failed'"),
        "sheets.2.skip_when",
        "sheets.build: sheet 'build' has fan_out 3, so it runs as build-1 to build-3; read one "
        "of them (sheets['build-1'])",
    ),
    (
        # In a branch an evaluation with placeholder values would never reach.
        explicit("sheets.plan.status == 'x' and sheets.ghost.status == 'failed'"),
        "sheets.2.skip_when",
        f"sheets.ghost: no sheet of this job is named 'ghost'; {EXPLICIT_NAMES}",
    ),
    (
        # Guarding the status does not guard the sheet: `sheets.ghost` itself fails.
        explicit("sheets.ghost.status is defined"),
        "sheets.2.skip_when",
        f"sheets.ghost: no sheet of this job is named 'ghost'; {EXPLICIT_NAMES}",
    ),
    (
        batch("sheets[5].status == 'failed'"),
        "sheet.skip_when.3",
        "sheets[5]: there is no sheet 5; the sheets are numbered 1 to 4 after fan-out",
    ),
    (
        batch("sheets['sheet-2'].status == 'failed'"),
        "sheet.skip_when.3",
        "sheets['sheet-2']: sheet 'sheet-2' has fan_out 2, so it runs as sheet-2-1 to "
        "sheet-2-2; read one of them (sheets['sheet-2-1'])",
    ),
    (
        batch("sheets['sheet-4'].status == 'failed'"),
        "sheet.skip_when.3",
        "sheets['sheet-4']: no sheet of this job is named 'sheet-4' (did you mean 'sheet-3'?); "
        "the sheets are numbered 1 to 4 after fan-out, named sheet-1, sheet-2-1, sheet-2-2, "
        "sheet-3",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "path", "message"), REFUSED)
def test_a_read_of_a_sheet_the_job_does_not_have_is_a_submit_error(
    spec: dict[str, Any], path: str, message: str
) -> None:
    assert errors_of(spec) == [(path, message)]


def test_batch_keys_written_as_strings_name_the_field_as_written() -> None:
    spec = batch("sheets[9].status")
    spec["sheet"]["skip_when"] = {"3": "sheets[9].status"}
    assert errors_of(spec) == [
        (
            "sheet.skip_when.3",
            "sheets[9]: there is no sheet 9; the sheets are numbered 1 to 4 after fan-out",
        )
    ]


def test_every_unknown_read_is_named_and_the_names_listed_are_bounded() -> None:
    steps = [{"name": f"step-{i}", "prompt": "true"} for i in range(1, 31)]
    spec = {
        "name": "many",
        "sheets": [
            *steps,
            {"prompt": "true", "skip_when": "sheets['step-3O'].status or sheets[99].status"},
            {"prompt": "true", "skip_when": "sheets.nine.status and sheets.nine.output"},
        ],
    }
    listed = (
        "named step-1, step-2, step-3, step-4, step-5, step-6, step-7, step-8, step-9, step-10 "
        "and 20 more"
    )
    assert errors_of(spec) == [
        (
            "sheets.30.skip_when",
            "sheets['step-3O']: no sheet of this job is named 'step-3O' (did you mean "
            f"'step-3'?); the sheets are numbered 1 to 32, {listed}",
        ),
        (
            "sheets.30.skip_when",
            "sheets[99]: there is no sheet 99; the sheets are numbered 1 to 32",
        ),
        (  # read twice, reported once
            "sheets.31.skip_when",
            "sheets.nine: no sheet of this job is named 'nine'; the sheets are numbered 1 to "
            f"32, {listed}",
        ),
    ]  # fmt: skip
    unnamed = {
        "name": "u",
        "sheets": [{"prompt": "true"}, {"prompt": "true", "skip_when": "sheets.a.status"}],
    }
    assert errors_of(unnamed) == [
        (
            "sheets.1.skip_when",
            "sheets.a: no sheet of this job is named 'a'; the sheets are numbered 1 to 2, no "
            "sheet has a name",
        )
    ]


# Reads that cannot fail, or that only the evaluation can decide: none is a submit error.
LEFT_TO_RUN_TIME = [
    "sheets.ghost is defined and sheets.ghost.status == 'failed'",
    "sheets.ghost is defined",  # a guard that is the whole expression
    "maybe_set is defined",  # a name, likewise
    "(sheets.ghost | default(none)) is none",
    "'ghost' in sheets and sheets.ghost.status == 'failed'",
    "'ghost' not in sheets or sheets['ghost'].attempts > 1",
    "sheets.get('ghost') and sheets.ghost.output",
    "sheets['gh' ~ 'ost'].status == 'failed'",  # a name built when evaluated
    "sheets[sheet_num + 5].status == 'failed'",
    "sheets.items() | list | length > 4",
    "sheets | list | length == total_sheets",
    # Sheets that exist, in every way of naming them; `build-2` is not an ancestor.
    "sheets[1].status == 'completed' and sheets['2'].status == 'completed'",
    "sheets.plan.attempts > 1 or sheets['build-2'].status == 'failed' or sheets[5].attempts",
]


async def test_what_only_run_time_can_tell_is_left_to_it(conductor: Conductor) -> None:
    """Each of these alone loads; with one read of a missing sheet beside them, that read is
    the one error. Through the conductor (a worker thread), bounded: a membership test once
    looped forever at submit."""
    for condition in LEFT_TO_RUN_TIME:
        with anyio.fail_after(20):
            report = await conductor.validate_spec(spec=explicit(condition))
        assert report.valid, (condition, report.errors)
    spec = explicit(" or ".join(f"({c})" for c in LEFT_TO_RUN_TIME) + " or sheets.phantom.status")
    with anyio.fail_after(20):
        report = await conductor.validate_spec(spec=spec)
    assert [(e.path, e.message) for e in report.errors] == [
        (
            "sheets.2.skip_when",
            f"sheets.phantom: no sheet of this job is named 'phantom'; {EXPLICIT_NAMES}",
        )
    ]


def test_with_the_models_invalid_the_reads_are_still_checked() -> None:
    """Every error in one answer: a boolean priority does not hide the condition's."""
    spec = explicit("sheets.plna.status == 'failed'")
    spec["priority"] = True
    assert errors_of(spec) == [
        ("priority", "a whole number is required (got true)"),
        (
            "sheets.2.skip_when",
            PLNA,
        ),
    ]  # fmt: skip


# --- through MCP -----------------------------------------------------------------------------


@pytest.fixture
async def client(conductor: Conductor) -> AsyncIterator[Client]:
    server = PodiumServer(conductor)
    async with server.running(), Client(server.mcp) as c:
        yield c


async def test_validate_spec_and_submit_job_refuse_naming_the_condition(
    client: Client, conductor: Conductor
) -> None:
    spec_yaml = (
        "name: refs\nsheets:\n  - {name: plan, prompt: 'true'}\n"
        "  - {name: report, prompt: 'true', skip_when: \"sheets.plna.status == 'failed'\"}\n"
    )
    line = (
        "sheets.1.skip_when: sheets.plna: no sheet of this job is named 'plna' (did you mean "
        "'plan'?); the sheets are numbered 1 to 2, named plan, report"
    )
    report = (await client.call_tool("validate_spec", {"spec_yaml": spec_yaml})).structured_content
    assert report is not None and report["valid"] is False
    assert [f"{e['path']}: {e['message']}" for e in report["errors"]] == [line]
    submitted = await client.call_tool("submit_job", {"spec_yaml": spec_yaml})
    assert submitted.is_error
    text = "\n".join(b.text for b in submitted.content if isinstance(b, TextContent))
    assert line in text.splitlines(), text
    assert (await conductor.list_jobs())[0] == []


# --- jobs stored before the check ---------------------------------------------------------------


async def test_a_job_stored_before_the_check_still_loads_and_fails_only_that_sheet(
    make_config: Callable[..., PodiumConfig],
) -> None:
    """A job an earlier version accepted with such a condition is recovered and resumed as
    it was: the condition fails its sheet when decided, the rest of the job runs."""
    good = {
        "name": "old-job",
        "on_failure": "continue",
        "retry": {"max_retries": 0},
        "sheets": [
            {"name": "a", "prompt": "echo a"},
            {"name": "b", "depends_on": ["a"], "skip_when": "sheets.a.status == 'x'",
             "prompt": "true"},
            {"name": "c", "depends_on": ["a"], "prompt": "echo c"},
        ],
    }  # fmt: skip
    config = make_config()
    async with Conductor(config) as first:
        submitted = await first.submit_job(spec=good, start=False)
    old = json.loads(json.dumps(good))
    old["sheets"][1]["skip_when"] = "sheets.nope.status == 'x'"
    corrupt_stored_spec(config, submitted.job_id, json.dumps(old))

    async with Conductor(make_config()) as second:
        await second.resume_job(submitted.job_id)
        detail = await wait_for_job(second, submitted.job_id)
    assert detail.error is None or "no longer loads" not in detail.error, detail.error
    sheets = {s.name: s for s in detail.sheets}
    assert sheets["a"].status is SheetStatus.COMPLETED
    assert sheets["c"].status is SheetStatus.COMPLETED
    assert sheets["b"].status is SheetStatus.FAILED
    assert sheets["b"].last_error is not None and sheets["b"].last_error.startswith("skip_when: ")
    assert "nope" in sheets["b"].last_error
    assert detail.status is JobStatus.FAILED
    # The same spec submitted now is refused at submit.
    with pytest.raises(SpecError, match=r"sheets\.1\.skip_when: sheets\.nope: "):
        load_spec(data=old)

"""A templated `content_regex` pattern that renders to no regex: a submit error naming the
field when its render at submit is the real one (it reads only variables and sheet values),
else the sheet's check fails at run time saying why; never a crash."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import assert_submit_refused, wait_for_job

from podium.core.conductor import Conductor
from podium.core.models import JobStatus, SheetStatus
from podium.core.spec import load_spec

pytestmark = pytest.mark.anyio


def _regex(pattern: str) -> dict[str, Any]:
    return {"type": "content_regex", "path": "out.txt", "pattern": pattern}


SUBMIT_ERRORS: dict[str, tuple[dict[str, Any], str, str]] = {
    "variable": (
        {
            "name": "r",
            "variables": {"p": "(unclosed"},
            "sheets": [{"prompt": "echo a > out.txt", "validations": [_regex("{{ p }}")]}],
        },
        "sheets.0.validations.0.pattern",
        "renders to '(unclosed' for sheet 1, not a valid regular expression: missing )",
    ),
    "job-level, for one sheet of a batch": (
        {
            "name": "r",
            "sheet": {"size": 1, "total_items": 3},
            "prompt": {"template": "echo {{ sheet_num }} > out.txt"},
            "validations": [_regex("{{ '[' if sheet_num == 2 else '' }}{{ sheet_num }}")],
        },
        "validations.0.pattern",
        "renders to '[2' for sheet 2, not a valid regular expression",
    ),
    "repeat count too large": (
        {
            "name": "r",
            "variables": {"n": 99999999999},
            "sheets": [{"prompt": "echo", "validations": [_regex("a{{ '{' }}{{ n }}}")]}],
        },
        "sheets.0.validations.0.pattern",
        "the repetition number is too large",
    ),
    # Not templated: the model's own check; these were an OverflowError / RecursionError.
    "literal repeat count too large": (
        {"name": "r", "sheets": [{"prompt": "echo", "validations": [_regex("a{99999999999}")]}]},
        "sheets.0.validations.0.pattern",
        "invalid regular expression: the repetition number is too large",
    ),
    "literal nested too deeply": (
        {
            "name": "r",
            "sheets": [{"prompt": "echo", "validations": [_regex("(?:" * 1000 + ")" * 1000)]}],
        },
        "sheets.0.validations.0.pattern",
        "nested too deeply",
    ),
}


@pytest.mark.parametrize("case", list(SUBMIT_ERRORS))
async def test_a_pattern_known_at_submit_to_be_no_regex_is_refused(
    conductor: Conductor, case: str
) -> None:
    await assert_submit_refused(conductor, *SUBMIT_ERRORS[case])


def test_templated_patterns_that_are_regexes_still_load() -> None:
    loaded = load_spec(
        data={
            "name": "r",
            "variables": {"word": "ok"},
            "sheet": {"size": 1, "total_items": 2},
            "prompt": {"template": "echo ok > out.txt"},
            "validations": [_regex("^{{ word }}$"), _regex("{{ workspace }}|ok")],
        }
    )
    assert loaded.total_sheets == 2


@pytest.mark.parametrize("printed", ["(unclosed", "a{99999999999}"])
async def test_a_pattern_known_only_at_run_time_fails_the_sheet_saying_why(
    conductor: Conductor, printed: str
) -> None:
    spec = {
        "name": "r",
        "retry": {"max_retries": 0},
        "sheets": [
            {"name": "make", "prompt": f"printf '%s' '{printed}'"},
            {
                "name": "check",
                "depends_on": ["make"],
                "prompt": "echo a > out.txt",
                "validations": [_regex("{{ outputs.make }}")],
            },
        ],
    }
    job = await conductor.submit_job(spec=spec)
    detail = await wait_for_job(conductor, job.job_id)
    assert detail.status == JobStatus.FAILED
    sheet = detail.sheets[1]
    assert sheet.status == SheetStatus.FAILED
    assert sheet.last_error is not None and "internal error" not in sheet.last_error
    assert f"invalid regex {printed!r}" in sheet.last_error, sheet.last_error

"""A spec string holding a NUL character, or a `!!binary` value that is not UTF-8 text, is
refused at submit naming its field; before, the job was stored and every attempt failed at
spawn with "internal error: ValueError('embedded null byte')", or its views and snapshot
broke after it ended."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import assert_submit_refused
from hostile import served, text_of

from podium.core.conductor import Conductor
from podium.core.spec import load_spec

pytestmark = pytest.mark.anyio

SHEET = {"prompt": "echo ok"}

# (spec, the field named, what the message says)
MAPPINGS: dict[str, tuple[dict[str, Any], str, str]] = {
    "variable": (
        {"name": "n", "variables": {"x": "a\0b"}, "sheets": [{"prompt": "echo {{ x }}"}]},
        "variables.x",
        "NUL",
    ),
    "nested variable": (
        {"name": "n", "variables": {"x": {"y": ["ok", "a\0"]}}, "sheets": [SHEET]},
        "variables.x.y.1",
        "NUL",
    ),
    "variable name": (
        {"name": "n", "variables": {"x\0": 1}, "sheets": [SHEET]},
        "variables",
        "NUL",
    ),
    "prompt": (
        {"name": "n", "sheets": [SHEET, SHEET, {"prompt": "ec\0ho"}]},
        "sheets.2.prompt",
        "NUL",
    ),
    "validation command": (
        {
            "name": "n",
            "sheets": [
                {**SHEET, "validations": [{"type": "command_succeeds", "command": "tr\0ue"}]}
            ],
        },
        "sheets.0.validations.0.command",
        "NUL",
    ),
    "skip_when_command": (
        {"name": "n", "sheets": [{**SHEET, "skip_when_command": {"command": "a\0"}}]},
        "sheets.0.skip_when_command.command",
        "NUL",
    ),
    "extra argument": (
        {"name": "n", "sheets": [{**SHEET, "instrument_config": {"extra_args": ["-\0"]}}]},
        "sheets.0.instrument_config.extra_args.0",
        "NUL",
    ),
    "env value": (
        {"name": "n", "instrument_config": {"env": {"A": "x\0"}}, "sheets": [SHEET]},
        "instrument_config.env.A",
        "NUL",
    ),
    "binary not utf-8": (
        {"name": "n", "variables": {"x": b"\xff\xfe"}, "sheets": [SHEET]},
        "variables.x",
        "not UTF-8",
    ),
}


@pytest.mark.parametrize("case", list(MAPPINGS))
async def test_text_a_job_cannot_carry_is_a_submit_error_naming_the_field(
    conductor: Conductor, case: str
) -> None:
    await assert_submit_refused(conductor, *MAPPINGS[case])


YAML = {
    "escaped NUL": ('name: n\nvariables: {x: "a\\0b"}\nsheets: [{prompt: echo}]\n', "NUL"),
    "binary not utf-8": (
        "name: n\nvariables: {x: !!binary /w==}\nsheets: [{prompt: echo}]\n",
        "not UTF-8",
    ),
    "binary with NUL": (
        "name: n\nvariables: {x: !!binary AA==}\nsheets: [{prompt: echo}]\n",
        "NUL",
    ),
}


@pytest.mark.parametrize("case", list(YAML))
async def test_yaml_text_with_nul_or_binary_is_refused_through_the_tools(
    conductor: Conductor, case: str
) -> None:
    text, why = YAML[case]
    async with served(conductor, clients=1) as s:
        report = await s.ok("validate_spec", {"spec_yaml": text})
        assert not report["valid"]
        assert [e["path"] for e in report["errors"]] == ["variables.x"], report
        assert why in report["errors"][0]["message"]
        refused = await s.call("submit_job", {"spec_yaml": text})
        assert refused.is_error and "variables.x" in text_of(refused), text_of(refused)
    assert (await conductor.list_jobs())[0] == []


def test_utf8_binary_and_ordinary_text_still_load() -> None:
    loaded = load_spec(
        text='name: n\nvariables: {x: !!binary aGk=, y: "tab\\there"}\nsheets: [{prompt: echo}]\n'
    )
    assert loaded.spec.variables == {"x": b"hi", "y": "tab\there"}


def test_a_stored_spec_is_not_held_to_it() -> None:
    # A job accepted before the check still loads (recovery, resume) and fails at run time
    # where it did then.
    spec = {"name": "n", "variables": {"x": "a\0b"}, "sheets": [SHEET]}
    assert load_spec(data=spec, stored=True).spec.variables == {"x": "a\0b"}

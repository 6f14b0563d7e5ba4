"""Three spec defects found while porting real job specs (issue 16): int-keyed maps across a
restart, names set inside blocks reported undefined, job-level settings an instrument has no
notion of."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for_job, wait_until

from podium.core import jsondata
from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.errors import SpecError
from podium.core.models import ErrorCategory, JobStatus, SheetStatus
from podium.core.spec import TemplateContext, load_spec, render_sheet_prompt

pytestmark = pytest.mark.anyio

CHARACTERS = {1: "Ada", 2: "Grace", 3: "Edsger"}


def _rendered_prompts(loaded: Any, job_id: str, workspace: str) -> list[str]:
    return [
        render_sheet_prompt(
            sheet,
            TemplateContext(
                workspace=workspace,
                job_id=job_id,
                sheet_num=sheet.sheet_num,
                total_sheets=loaded.total_sheets,
                sheet_name=sheet.name,
                start_item=sheet.start_item,
                end_item=sheet.end_item,
                variables=loaded.spec.variables,
                outputs={},
            ),
        )
        for sheet in loaded.sheets
    ]


# --- 1. int-keyed maps survive a restart -------------------------------------------------


def test_stored_spec_keeps_key_types_dates_and_sets() -> None:
    value = {
        "characters": {1: "Ada", 2: "Grace"},
        "mixed": {1: "one", "1": "string one", 2.5: "float", False: "bool", None: "null"},
        "nested": [{"$dollar": 1}, {3: [4, {5: 6}]}],
        "when": date(2024, 4, 23),
        "tags": {"b", "a"},
        "blob": b"\x00\xff",
    }
    assert jsondata.loads(jsondata.dumps(value)) == value
    # The stored text is plain JSON any tool can read.
    assert isinstance(json.loads(jsondata.dumps(value)), dict)
    # Order of keys does not change the canonical form (fingerprints).
    reordered = {"characters": {2: "Grace", 1: "Ada"}}
    assert jsondata.canonical(reordered) == jsondata.canonical(
        {"characters": {1: "Ada", 2: "Grace"}}
    )


def test_int_keyed_spec_reloads_from_storable_form() -> None:
    loaded = load_spec(
        text="name: cast\nvariables:\n  characters: {1: Ada, 2: Grace}\n"
        "sheet: {size: 1, total_items: 2}\nprompt: {template: 'echo {{ characters[sheet_num] }}'}\n"
    )
    stored = jsondata.loads(jsondata.dumps(loaded.to_storable()))
    again = load_spec(data=stored)
    assert again.spec.variables == {"characters": {1: "Ada", 2: "Grace"}}
    assert again.fingerprint() == loaded.fingerprint()
    assert _rendered_prompts(again, "j", "/w") == _rendered_prompts(loaded, "j", "/w")


async def test_int_keyed_job_and_running_job_continue_after_restart(
    make_config: Callable[..., PodiumConfig], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    # One job at a time: the int-keyed job stays queued while the other one runs.
    config = make_config(max_concurrent_jobs=1)
    cast_spec = {
        "name": "cast",
        "variables": {"characters": dict(CHARACTERS)},
        "sheet": {"size": 1, "total_items": 3},
        "prompt": {"template": "echo {{ characters[sheet_num] }}"},
    }
    slow_spec = {
        "name": "slow",
        "sheets": [{"prompt": f"while [ ! -e {gate} ]; do sleep 0.05; done; echo slow-done"}],
    }
    first = Conductor(config)
    await first.start()
    try:
        slow = await first.submit_job(spec=slow_spec)
        await wait_until(lambda: _has_status(first, slow.job_id, JobStatus.RUNNING), timeout=10)
        cast = await first.submit_job(spec=cast_spec)
        before = _rendered_prompts(load_spec(data=cast_spec), cast.job_id, cast.workspace)
        assert (await first.get_job(cast.job_id)).status is JobStatus.QUEUED
    finally:
        await first.stop()

    second = Conductor(config)
    await second.start()
    try:
        stored = await second.store.get_spec(cast.job_id)
        assert stored is not None
        reloaded = load_spec(data=stored)
        assert reloaded.spec.variables["characters"] == CHARACTERS
        assert _rendered_prompts(reloaded, cast.job_id, cast.workspace) == before
        # The job that was running comes back paused (shutdown); resume continues it.
        assert (await second.get_job(slow.job_id)).status is JobStatus.PAUSED
        gate.touch()
        await second.resume_job(slow.job_id)
        slow_done = await wait_for_job(second, slow.job_id)
        cast_done = await wait_for_job(second, cast.job_id)
        assert slow_done.status is JobStatus.COMPLETED
        assert cast_done.status is JobStatus.COMPLETED
        assert [s.output_tail for s in cast_done.sheets] == [f"{n}\n" for n in CHARACTERS.values()]
    finally:
        await second.stop()


async def _has_status(conductor: Conductor, job_id: str, status: JobStatus) -> bool:
    return (await conductor.get_job(job_id)).status is status


# --- 1b. a spec that cannot be reloaded fails only its own job -----------------------------


@pytest.mark.parametrize(
    "corrupt",
    [
        "not json at all {",
        json.dumps({"name": "BAD NAME", "sheets": [{"prompt": "true"}]}),
        json.dumps({"name": "broken", "sheets": [{"prompt": "{{ gone }}"}]}),
        json.dumps([1, 2, 3]),
    ],
    ids=["invalid-json", "invalid-field", "template-error", "not-a-mapping"],
)
async def test_unloadable_stored_spec_fails_only_that_job(
    make_config: Callable[..., PodiumConfig], corrupt: str
) -> None:
    config = make_config()
    first = Conductor(config)
    await first.start()
    try:
        bad = await first.submit_job(
            spec={"name": "victim", "sheets": [{"prompt": "true"}, {"prompt": "true"}]},
            start=False,
        )
        other = await first.submit_job(
            spec={"name": "bystander", "sheets": [{"prompt": "echo fine"}]}, start=False
        )
    finally:
        await first.stop()
    with sqlite3.connect(config.db_path) as db:
        db.execute("UPDATE jobs SET spec_json = ? WHERE job_id = ?", (corrupt, bad.job_id))

    second = Conductor(config)
    await second.start()
    try:
        # Every read of the job still works.
        listed, _ = await second.list_jobs()
        assert {j.job_id for j in listed} == {bad.job_id, other.job_id}
        await second.resume_job(bad.job_id)
        await second.resume_job(other.job_id)
        failed = await wait_for_job(second, bad.job_id)
        assert failed.status is JobStatus.FAILED
        assert failed.error is not None and "stored spec no longer loads" in failed.error
        assert {s.status for s in failed.sheets} == {SheetStatus.FAILED}
        assert {s.error_category for s in failed.sheets} == {ErrorCategory.SPEC_INVALID}
        assert (await wait_for_job(second, other.job_id)).status is JobStatus.COMPLETED
        # The dispatch loop is alive for new work.
        later = await second.submit_job(spec={"name": "later", "sheets": [{"prompt": "true"}]})
        assert (await wait_for_job(second, later.job_id)).status is JobStatus.COMPLETED
        # A corrected spec brings the failed job back.
        fixed = {"name": "victim", "sheets": [{"prompt": "true"}, {"prompt": "true"}]}
        await second.resume_job(bad.job_id, spec=fixed)
        assert (await wait_for_job(second, bad.job_id)).status is JobStatus.COMPLETED
    finally:
        await second.stop()


# --- 2. names set in blocks, guarded uses, defaults ------------------------------------------

VALID_TEMPLATES = [
    "{% if sheet_num == 1 %}{% set who = 'first' %}{% else %}{% set who = 'later' %}{% endif %}"
    "echo {{ who }}",
    "{% for item in items %}{{ item }} {% endfor %}",
    "{% set total = items | length %}echo {{ total }}",
    "{% if extra is defined %}{{ extra }}{% endif %}echo ok",
    "echo {{ extra | default('none') }} {{ other | d('x') }}",
    "{{ extra if extra is defined else 'fallback' }}",
    "{% macro shout(text) %}{{ text | upper }}{% endmacro %}{{ shout('hi') }}",
    "{% with greeting = 'hello' %}echo {{ greeting }}{% endwith %}",
    "{% if 'x' in outputs[1] %}{% set seen = 1 %}{% endif %}{{ seen | default(0) }}",
]


@pytest.mark.parametrize("template", VALID_TEMPLATES)
def test_names_set_in_blocks_and_guarded_uses_validate(template: str) -> None:
    loaded = load_spec(
        data={
            "name": "blocks",
            "variables": {"items": ["a", "b"]},
            "sheets": [
                {"name": "one", "prompt": "echo one"},
                {"name": "two", "prompt": template, "depends_on": ["one"]},
            ],
        }
    )
    assert loaded.total_sheets == 2


TYPO_TEMPLATES = [
    ("{% if sheet_num == 1 %}{% set who = 'a' %}{% endif %}echo {{ wh0 }}", "wh0"),
    ("{% for item in itemz %}{{ item }}{% endfor %}", "itemz"),
    ("{% if extra is defined %}{{ extra }}{% endif %}{{ misspelt }}", "misspelt"),
    ("echo {{ extra | default('none') }} {{ varaible }}", "varaible"),
    # Set only when the branch is taken; for sheet 2 it is not, so it is really undefined.
    ("{% if sheet_num == 1 %}{% set who = 'a' %}{% endif %}echo {{ who }}", "who"),
    # A name set inside a for loop does not leak out of it.
    ("{% for item in items %}{% set last = item %}{% endfor %}{{ last }}", "last"),
    # A typo in a branch that is not taken is still a typo.
    ("{% if sheet_num == 99 %}{{ nevr_defined }}{% endif %}echo ok", "nevr_defined"),
]


@pytest.mark.parametrize(("template", "name"), TYPO_TEMPLATES)
def test_real_typos_are_still_reported_with_their_path(template: str, name: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(
            data={
                "name": "typos",
                "variables": {"items": ["a", "b"]},
                "sheets": [
                    {"name": "one", "prompt": "echo one"},
                    {"name": "two", "prompt": template, "depends_on": ["one"]},
                ],
            }
        )
    [error] = info.value.errors
    assert error.path == "sheets.1.prompt"
    assert repr(name) in error.message


def test_typo_in_a_templated_validation_is_reported_at_its_path() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(
            data={
                "name": "v",
                "sheets": [
                    {
                        "prompt": "true",
                        "validations": [
                            {
                                "type": "file_exists",
                                "path": "{% if x is defined %}{{ x }}{% else %}{{ y_typo }}"
                                "{% endif %}",
                            }
                        ],
                    }
                ],
            }
        )
    assert [e.path for e in info.value.errors] == ["sheets.0.validations.0.path"]
    assert "y_typo" in info.value.errors[0].message


# --- 3. job-level settings an instrument has no notion of ------------------------------------


FAKE_CLAUDE = """#!{python}
import json, os, sys
prompt = sys.stdin.read()
with open("argv-" + os.environ["PODIUM_SHEET_NUM"] + ".json", "w") as f:
    json.dump(sys.argv[1:], f)
print(json.dumps({{"type": "result", "result": "did: " + prompt, "is_error": False}}))
"""


@pytest.fixture
def fake_claude_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "claude"
    exe.write_text(FAKE_CLAUDE.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return bindir


async def test_job_level_permission_mode_skips_shell_and_reaches_ai_sheet(
    make_config: Callable[..., PodiumConfig], fake_claude_path: Path
) -> None:
    conductor = Conductor(make_config())
    await conductor.start()
    try:
        submitted = await conductor.submit_job(
            spec={
                "name": "mixed",
                "instrument_config": {"permission_mode": "bypass", "model": "opus"},
                "sheets": [
                    {"name": "prep", "prompt": "echo prepared > prep.txt"},
                    {
                        "name": "ai",
                        "instrument": "claude-code",
                        "depends_on": ["prep"],
                        "prompt": "read prep.txt",
                    },
                ],
            }
        )
        done = await wait_for_job(conductor, submitted.job_id)
        assert done.status is JobStatus.COMPLETED, done.sheets
        assert [s.attempts for s in done.sheets] == [1, 1]
        argv = json.loads((Path(submitted.workspace) / "argv-2.json").read_text())
        assert "--dangerously-skip-permissions" in argv
        assert argv[argv.index("--model") + 1] == "opus"
    finally:
        await conductor.stop()


async def test_settings_an_instrument_refuses_are_submit_errors(
    make_config: Callable[..., PodiumConfig], fake_claude_path: Path
) -> None:
    conductor = Conductor(make_config())
    await conductor.start()
    try:
        report = await conductor.validate_spec(
            spec={
                "name": "wrong",
                "instrument_config": {"permission_mode": "yolo"},
                "sheets": [
                    {"prompt": "true"},
                    {"prompt": "a", "instrument": "claude-code"},
                    {"prompt": "b", "instrument": "claude-code"},
                    {
                        "prompt": "true",
                        "instrument_config": {"permission_mode": "bypass", "model": "x"},
                    },
                ],
            }
        )
        assert not report.valid
        by_path = {e.path: e.message for e in report.errors}
        assert set(by_path) == {
            "instrument_config.permission_mode",
            "sheets.3.instrument_config.permission_mode",
            "sheets.3.instrument_config.model",
        }
        assert "'yolo'" in by_path["instrument_config.permission_mode"]
        assert "accept-edits" in by_path["instrument_config.permission_mode"]
        assert (
            "'shell' has no permission modes"
            in by_path["sheets.3.instrument_config.permission_mode"]
        )
    finally:
        await conductor.stop()

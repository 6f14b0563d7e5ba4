"""Three spec defects found while porting real job specs (issue 16): int-keyed maps across a
restart, names set inside blocks reported undefined, job-level settings an instrument has no
notion of."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import wait_for_job, wait_until
from test_recovery import (
    _kill_leftover_sheets,  # noqa: F401  (autouse: ends orphaned sheets)
    live_group_members,
)

from podium.core import jsondata
from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig, load_config
from podium.core.errors import InvalidTransitionError, SpecError
from podium.core.models import ErrorCategory, JobStatus, Outcome, SheetStatus
from podium.core.spec import TemplateContext, load_spec, render_sheet_prompt
from podium.server.daemon import find_conductor
from podium.server.remote import Remote, connect

pytestmark = pytest.mark.anyio

PODIUM = str(Path(sys.executable).with_name("podium"))

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


# --- 1a. the same, with real conductor processes killed or stopped -------------------------

# Batch form with int keys in `variables` and `sheet.dependencies`. Each sheet records the
# prompt bash received, exactly as the engine rendered it. `characters | sum` and the `+ 1`
# lookups only render with int keys; a string "2" in `dependencies` would name no sheet.
CAST_YAML = """\
name: cast
variables:
  characters: {1: Ada, 2: Grace, 3: Edsger}
  years: {1: 1815, 2: 1906, 3: 1930}
sheet:
  size: 1
  total_items: 3
  dependencies: {2: [1], 3: [1, 2]}
prompt:
  template: |
    printf '%s' "$BASH_EXECUTION_STRING" > prompt-{{ sheet_num }}.txt
    echo "{{ characters[sheet_num] }} {{ years[sheet_num] }} keys={{ characters | sum }} \\
    next={{ characters.get(sheet_num + 1, 'none') }}"
"""
CAST_OUTPUTS = [
    "Ada 1815 keys=6 next=Grace\n",
    "Grace 1906 keys=6 next=Edsger\n",
    "Edsger 1930 keys=6 next=none\n",
]


def held_spec(tmp_path: Path, name: str, sheets: int = 1) -> dict[str, Any]:
    """`sheets` sequential sheets; each records its pid (= its group) in pid-NAME-N and runs
    for 30 s while hold-NAME exists; each start is counted in runs-NAME."""
    out = []
    for n in range(1, sheets + 1):
        pid_file = shlex.quote(str(tmp_path / f"pid-{name}-{n}"))
        hold = shlex.quote(str(tmp_path / f"hold-{name}"))
        runs = shlex.quote(str(tmp_path / f"runs-{name}"))
        prompt = (
            f"echo {n} >> {runs}; echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}; "
            f"if [ -e {hold} ]; then sleep 30; fi; echo {name}-{n}-done"
        )
        sheet: dict[str, Any] = {"prompt": prompt}
        if n > 1:
            sheet["depends_on"] = [n - 1]
        out.append(sheet)
    return {"name": name, "retry": {"max_retries": 0}, "sheets": out}


def write_home_config(home: Path, **values: Any) -> None:
    """Merge `values` into the home's config.yaml (which may name a PostgreSQL store)."""
    path = home / "config.yaml"
    current = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**current, **values}) + "\n")


@asynccontextmanager
async def podium_start(
    home: Path, tmp_path: Path
) -> AsyncIterator[tuple[subprocess.Popen[bytes], Remote]]:
    """`podium start` on `home` as a process of its own session (its sheets lead groups of
    their own, so they outlive a kill -9 of it), and an MCP client to it. At exit the client
    is closed and the process, if still running, stopped (SIGTERM, then SIGKILL)."""
    config = load_config(home=home, env={})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    env["PODIUM_HOME"] = str(home)
    log_path = tmp_path / "conductor-stderr.txt"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [PODIUM, "start"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    try:
        with anyio.fail_after(60):
            while True:
                if proc.poll() is not None:
                    raise AssertionError(
                        f"podium start exited {proc.returncode}: {log_path.read_text()}"
                    )
                info = find_conductor(config)
                if info is not None and info.pid == proc.pid:
                    break
                await anyio.sleep(0.05)
        async with connect(info) as remote:
            yield proc, remote
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait(timeout=10)


async def remote_status(remote: Remote, job_id: str) -> str:
    status: str = (await remote.call("status", {"job_id": job_id}))["status"]
    return status


async def wait_remote(remote: Remote, job_ids: list[str], timeout: float = 60) -> None:
    """Until every job is terminal, asking the conductor (which long-polls on changes)."""
    with anyio.fail_after(timeout):
        for job_id in job_ids:
            while True:
                detail = await remote.call("status", {"job_id": job_id, "wait_seconds": 2})
                if detail["status"] in ("completed", "failed", "cancelled"):
                    break


def recorded_prompts(workspace: str, sheets: int = 3) -> list[str]:
    return [(Path(workspace) / f"prompt-{n}.txt").read_text() for n in range(1, sheets + 1)]


async def fresh_home_prompts(tmp_path: Path) -> list[str]:
    """The cast job's prompts as a conductor renders them with no restart, on a home of its
    own."""
    fresh = tmp_path / "fresh-home"
    fresh.mkdir()
    async with Conductor(load_config(home=fresh, env={})) as conductor:
        submitted = await conductor.submit_job(spec_yaml=CAST_YAML)
        done = await wait_for_job(conductor, submitted.job_id)
        assert done.status is JobStatus.COMPLETED, done.error
        return recorded_prompts(submitted.workspace)


@pytest.mark.parametrize("restart", ["kill9", "stop-force"])
async def test_int_keyed_job_queued_behind_a_running_one_survives_a_real_restart(
    restart: str, home: Path, tmp_path: Path, make_config: Callable[..., PodiumConfig]
) -> None:
    """`podium start` runs a held job while the int-keyed job waits its turn (one job at a
    time); the conductor is killed with SIGKILL (or stopped with `podium stop --force`); a
    new `podium start` with auto_resume continues both with no call, and the int-keyed job
    renders exactly the prompts it renders on a fresh home, and that load_spec renders."""
    write_home_config(home, max_concurrent_jobs=1, kill_grace_seconds=1, auto_resume=True)
    (tmp_path / "hold-slow").touch()
    async with podium_start(home, tmp_path) as (proc, remote):
        await remote.call("submit_job", {"spec": held_spec(tmp_path, "slow"), "job_id": "slow"})
        with anyio.fail_after(30):
            while not (tmp_path / "pid-slow-1").exists():
                await anyio.sleep(0.02)
        cast = await remote.call("submit_job", {"spec_yaml": CAST_YAML, "job_id": "cast"})
        assert await remote_status(remote, "slow") == "running"
        assert await remote_status(remote, "cast") == "queued"
        if restart == "kill9":
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        else:
            stopped = subprocess.run(
                [PODIUM, "stop", "--force"],
                env={
                    **{k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")},
                    "PODIUM_HOME": str(home),
                },
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert stopped.returncode == 0, stopped.stderr
            proc.wait(timeout=10)
    sheet_pid = int((tmp_path / "pid-slow-1").read_text())
    if restart == "kill9":
        assert live_group_members(sheet_pid), "the held sheet should outlive the killed conductor"
    (tmp_path / "hold-slow").unlink()  # the re-run of the held sheet ends at once
    # Nothing of the int-keyed job ran before the restart.
    assert not any(Path(cast["workspace"]).glob("prompt-*.txt"))

    async with podium_start(home, tmp_path) as (_, remote):
        await wait_remote(remote, ["slow", "cast"])
    assert live_group_members(sheet_pid) == []

    async with Conductor(make_config()) as conductor:
        slow_done = await conductor.get_job("slow")
        cast_done = await conductor.get_job("cast")
        assert slow_done.status is JobStatus.COMPLETED, slow_done.error
        assert cast_done.status is JobStatus.COMPLETED, cast_done.error
        # The held sheet ran twice (the interrupted attempt, then the one after the restart),
        # every int-keyed sheet once.
        assert (tmp_path / "runs-slow").read_text().split() == ["1", "1"]
        assert [s.attempts for s in cast_done.sheets] == [1, 1, 1]
        assert [s.output_tail for s in cast_done.sheets] == CAST_OUTPUTS
        history, _ = await conductor.get_execution_history("cast")
        assert sorted(h.sheet_num for h in history) == [1, 2, 3]
        # Dependencies came back with their int keys: sheet 3 started after 1 and 2 ended.
        by_num = {h.sheet_num: h for h in history}
        assert by_num[3].started_at >= max(by_num[1].ended_at, by_num[2].ended_at)
        assert by_num[2].started_at >= by_num[1].ended_at
    after = recorded_prompts(cast["workspace"])
    before = _rendered_prompts(load_spec(text=CAST_YAML), "cast", cast["workspace"])
    assert after == before
    assert after == await fresh_home_prompts(tmp_path)


# --- 1b. a spec that cannot be reloaded fails only its own job -----------------------------


def corrupt_stored_spec(config: PodiumConfig, job_id: str, text: str) -> None:
    """Overwrite a job's stored spec in the store's own table, as a damaged database or an
    upgrade that no longer reads the old form would leave it (no conductor runs)."""
    if config.store_url.startswith("sqlite"):
        with sqlite3.connect(config.db_path) as db:
            cursor = db.execute("UPDATE jobs SET spec_json = ? WHERE job_id = ?", (text, job_id))
            assert cursor.rowcount == 1
        return
    import psycopg

    with psycopg.connect(config.store_url, autocommit=True) as conn:
        cursor = conn.execute("UPDATE jobs SET spec_json = %s WHERE job_id = %s", (text, job_id))
        assert cursor.rowcount == 1


@pytest.mark.parametrize(
    "corrupt",
    [
        "not json at all {",
        json.dumps({"name": "BAD NAME", "sheets": [{"prompt": "true"}]}),
        json.dumps({"name": "broken", "sheets": [{"prompt": "{{ gone }}"}]}),
        json.dumps([1, 2, 3]),
        "[" * 5000 + "]" * 5000,
    ],
    ids=["invalid-json", "invalid-field", "template-error", "not-a-mapping", "nested-too-deep"],
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
    corrupt_stored_spec(config, bad.job_id, corrupt)

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


async def test_a_resume_of_an_ended_job_whose_stored_spec_is_too_deep_answers(
    make_config: Callable[..., PodiumConfig],
) -> None:
    """Decoding a stored spec nested thousands deep raised RecursionError in the writer as it
    loaded the job: the writer ended and the resume waited forever."""
    config = make_config()
    async with Conductor(config) as first:
        done = await first.submit_job(spec={"name": "deep", "sheets": [{"prompt": "true"}]})
        assert (await wait_for_job(first, done.job_id)).status is JobStatus.COMPLETED
    corrupt_stored_spec(config, done.job_id, "[" * 5000 + "]" * 5000)
    async with Conductor(config) as second:
        with anyio.fail_after(20), pytest.raises(InvalidTransitionError, match="nothing to resume"):
            await second.resume_job(done.job_id)
        later = await second.submit_job(spec={"name": "later", "sheets": [{"prompt": "true"}]})
        assert (await wait_for_job(second, later.job_id)).status is JobStatus.COMPLETED


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


CORRUPTIONS = {
    "invalid-json": ("not json at all {", "not readable JSON"),
    "template-error": (
        json.dumps({"name": "victim", "sheets": [{"prompt": "{{ gone }}"}, {"prompt": "true"}]}),
        "'gone'",
    ),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize("victim_was", ["queued", "running"])
async def test_unloadable_spec_of_a_queued_or_running_job_fails_it_after_a_crash(
    victim_was: str,
    corruption: str,
    home: Path,
    tmp_path: Path,
    make_config: Callable[..., PodiumConfig],
) -> None:
    """A `podium start` conductor is killed with SIGKILL while the victim job is queued
    (behind a held job; one job at a time) or running (a held sheet); its stored spec is then
    corrupted. A new conductor with auto_resume takes the victim up with no call and fails it
    with an error naming the problem; every other job completes and the loop goes on."""
    text, named = CORRUPTIONS[corruption]
    write_home_config(home, max_concurrent_jobs=1, kill_grace_seconds=1, auto_resume=True)
    first = "victim" if victim_was == "running" else "holder"
    (tmp_path / f"hold-{first}").touch()
    async with podium_start(home, tmp_path) as (proc, remote):
        submitted = {}
        for name in dict.fromkeys([first, "holder", "victim", "bystander"]):
            spec = held_spec(tmp_path, name, sheets=2)
            submitted[name] = await remote.call("submit_job", {"spec": spec, "job_id": name})
            if name == first:
                with anyio.fail_after(30):
                    while not (tmp_path / f"pid-{first}-1").exists():
                        await anyio.sleep(0.02)
        assert await remote_status(remote, first) == "running"
        for name in set(submitted) - {first}:
            assert await remote_status(remote, name) == "queued"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    sheet_pid = int((tmp_path / f"pid-{first}-1").read_text())
    assert live_group_members(sheet_pid), "the held sheet should outlive the killed conductor"
    (tmp_path / f"hold-{first}").unlink()
    corrupt_stored_spec(make_config(), "victim", text)

    async with podium_start(home, tmp_path) as (_, remote):
        await wait_remote(remote, list(submitted))
    assert live_group_members(sheet_pid) == []

    async with Conductor(make_config()) as conductor:
        failed = await conductor.get_job("victim")
        assert failed.status is JobStatus.FAILED
        assert failed.error is not None
        assert "stored spec no longer loads" in failed.error
        assert named in failed.error
        assert [s.status for s in failed.sheets] == [SheetStatus.FAILED] * 2
        assert {s.error_category for s in failed.sheets} == {ErrorCategory.SPEC_INVALID}
        # Before the crash the victim ran its first sheet (held) or nothing; after it, nothing.
        runs = tmp_path / "runs-victim"
        assert (runs.read_text().split() if runs.exists() else []) == (
            ["1"] if victim_was == "running" else []
        )
        history, _ = await conductor.get_execution_history("victim")
        assert [(h.sheet_num, h.outcome) for h in history] == (
            [(1, Outcome.INTERRUPTED)] if victim_was == "running" else []
        )
        for name in set(submitted) - {"victim"}:
            done = await conductor.get_job(name)
            assert done.status is JobStatus.COMPLETED, (name, done.error)
            assert [s.output_tail for s in done.sheets] == [
                f"{name}-1-done\n",
                f"{name}-2-done\n",
            ]
        # The dispatch loop is alive for new work.
        later = await conductor.submit_job(spec={"name": "later", "sheets": [{"prompt": "true"}]})
        assert (await wait_for_job(conductor, later.job_id)).status is JobStatus.COMPLETED

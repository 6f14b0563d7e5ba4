"""Every example a user might copy: the shell-only ones run to the outcome they announce
(`# expect: completed|failed` on their first line), the others (`# needs: <instrument>`)
validate against the real built-in profiles of the instruments they need."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import anyio
import pytest
from helpers import wait_for_job

from podium.core.conductor import Conductor
from podium.core.instruments.catalog import InstrumentCatalog
from podium.core.spec.instrument_check import InstrumentTraits
from podium.core.spec.loader import load_spec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
HEADER = re.compile(r"# (expect: (?P<expect>completed|failed)|needs: (?P<needs>[a-z0-9-]+))")


def header(path: Path) -> re.Match[str]:
    match = HEADER.match(path.read_text().splitlines()[0])
    assert match, f"{path.name}: first line must be '# expect: ...' or '# needs: ...'"
    return match


SHELL_ONLY = [p for p in EXAMPLES if header(p)["expect"]]
NEEDS_AI = [p for p in EXAMPLES if header(p)["needs"]]


def test_the_examples_cover_what_users_copy() -> None:
    names = {p.stem for p in EXAMPLES}
    assert len(names) >= 6
    assert {
        "parallel-batch",
        "fan-out-fan-in",
        "retry-until-valid",
        "claude-refactor",
        "review-batch",
        "deadline-continue",
    } <= names
    for path in SHELL_ONLY:
        instruments = {s.instrument for s in load_spec(path=path).sheets}
        assert instruments == {"shell"}, f"{path.name} says it runs anywhere but uses {instruments}"


@pytest.mark.parametrize("path", NEEDS_AI, ids=lambda p: p.stem)
def test_ai_examples_validate_against_their_instrument_profiles(path: Path) -> None:
    catalog = InstrumentCatalog.load(None)
    needed = header(path)["needs"]
    assert catalog.get(needed) is not None, needed

    def installed(name: str) -> InstrumentTraits:
        # Availability is this machine's business; everything else of the profile counts.
        traits = catalog.traits(name)
        known = catalog.get(name) is not None
        return dataclasses.replace(traits, problem=None) if known else traits

    loaded = load_spec(path=path, instruments=installed)
    assert needed in {s.instrument for s in loaded.sheets}


@pytest.mark.anyio
async def test_shell_examples_run_to_their_announced_outcome(
    conductor: Conductor, tmp_path: Path
) -> None:
    # Copies, so that nothing is written beside the repository's examples.
    folder = tmp_path / "examples"
    folder.mkdir()
    jobs: dict[str, str] = {}
    for path in SHELL_ONLY:
        copy = folder / path.name
        shutil.copy(path, copy)
        submitted = await conductor.submit_job(path=copy, extra_roots=[folder])
        jobs[path.stem] = submitted.job_id
    results = {}
    with anyio.fail_after(90):
        for stem, job_id in jobs.items():
            results[stem] = await wait_for_job(conductor, job_id, timeout=90)
    for path in SHELL_ONLY:
        detail = results[path.stem]
        expected = header(path)["expect"]
        sheets = [(s.name, s.status.value, s.last_error) for s in detail.sheets]
        assert detail.status.value == expected, (path.name, sheets)

    # What the examples' comments promise.
    retry = results["retry-until-valid"].sheets[0]
    assert (retry.status.value, retry.attempts) == ("completed", 3)
    outcome = {s.name: s.status.value for s in results["deadline-continue"].sheets}
    assert outcome == {
        "lint": "completed",
        "unit-tests": "failed",
        "report-tests": "skipped",
        "docs": "completed",
    }
    merge = results["fan-out-fan-in"].sheets[-1]
    assert merge.output_tail is not None and "words: 9" in merge.output_tail
    shards = {s.name: s for s in results["shards-and-conditions"].sheets}
    assert [shards[f"shard-{i}"].status.value for i in range(1, 5)] == ["completed"] * 4
    assert shards["cleanup"].status.value == "skipped"
    assert shards["cleanup"].error_category is not None
    assert shards["cleanup"].error_category.value == "condition"
    summary = shards["summary"].output_tail or ""
    assert "sheet 2: shard 1: 45" in summary and "sheet 5: shard 4: 60" in summary

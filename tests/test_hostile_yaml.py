"""Trap 14, YAML: an alias bomb, a document nested too deep, a recursive alias or a spec too
large is refused at once naming the limit, and nothing is stored (issue 10, item 3)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest
from hostile import PROBES, probe_rounds, served, text_of

from podium.core.conductor import Conductor
from podium.core.spec.bounds import MAX_SPEC_BYTES

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def alias_bomb(levels: int = 7, fan: int = 9) -> str:
    lines = ["  a0: &a0 [" + ", ".join(['"lol"'] * fan) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]")
    return "name: bomb\nvariables:\n" + "\n".join(lines) + "\nsheets: [{prompt: echo hi}]\n"


HOSTILE = {
    "alias bomb": (alias_bomb(), "MAX_SPEC_SIZE"),
    "deep": (
        "name: deep\nvariables: {x: " + "[" * 5000 + "]" * 5000 + "}\nsheets: [{prompt: echo}]\n",
        "nested deeper than 64",
    ),
    "deep block": (
        "name: deep\nvariables:\n"
        + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(100))
        + "sheets: [{prompt: echo}]\n",
        "nested deeper than 64",
    ),
    "recursive": ("name: rec\nvariables: {x: &x [*x]}\nsheets: [{prompt: echo}]\n", "itself"),
    "many aliases": (
        "name: many\nvariables:\n  a: &a 1\n  l: [" + ", ".join(["*a"] * 1001) + "]\n"
        "sheets: [{prompt: echo}]\n",
        "1000 aliases",
    ),
    "huge": ("name: huge\n# " + "x" * MAX_SPEC_BYTES + "\nsheets: [{prompt: echo}]\n", "at most"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_yaml_is_refused_fast_and_nothing_stored(
    conductor: Conductor, name: str
) -> None:
    text, limit = HOSTILE[name]
    db = conductor.config.home / "podium.db"
    db_before = db.stat().st_size
    rss_before = psutil.Process().memory_info().rss
    async with served(conductor) as s:
        t0 = time.monotonic()
        report = await s.ok("validate_spec", {"spec_yaml": text})
        assert not report["valid"]
        assert limit in report["errors"][0]["message"], report
        refused = await s.call("submit_job", {"spec_yaml": text})
        assert refused.is_error and limit in text_of(refused), text_of(refused)
        assert time.monotonic() - t0 < 10  # both calls, on a loaded two-core machine
    assert (await conductor.list_jobs())[0] == []
    assert db.stat().st_size <= db_before + 64 * 1024
    assert psutil.Process().memory_info().rss - rss_before < 64 * 1024 * 1024


async def test_a_spec_file_too_large_is_refused_before_it_is_read(
    conductor: Conductor, tmp_path: Path
) -> None:
    spec_file = conductor.config.workspaces_dir / "big.yaml"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    with open(spec_file, "wb") as f:
        f.write(b"name: big\nsheets: [{prompt: echo}]\n# ")
        f.truncate(MAX_SPEC_BYTES * 4)
    report = await conductor.validate_spec(path=spec_file)
    assert not report.valid and "MAX_SPEC_BYTES" in report.errors[0].message
    os.unlink(spec_file)


async def test_an_alias_bomb_as_a_mapping_is_measured_too(conductor: Conductor) -> None:
    level: object = ["lol"] * 9
    for _ in range(8):
        level = [level] * 9  # shared references, as a YAML or JSON parser could make
    report = await conductor.validate_spec(
        spec={"name": "bomb", "variables": {"x": level}, "sheets": [{"prompt": "echo"}]}
    )
    assert not report.valid and "MAX_SPEC_SIZE" in report.errors[0].message


async def test_ordinary_aliases_and_merges_still_load(conductor: Conductor) -> None:
    text = (
        "name: ok\nvariables:\n  base: &base {a: 1, b: 2}\n  more:\n    <<: *base\n    c: 3\n"
        "  list: [*base, *base]\nsheets: [{prompt: 'echo {{ more.c }}'}]\n"
    )
    report = await conductor.validate_spec(spec_yaml=text)
    assert report.valid, report.errors


async def test_bombs_in_a_loop_leave_other_clients_answered(conductor: Conductor) -> None:
    async with served(conductor) as s:

        async def one_round() -> None:
            for text, _limit in HOSTILE.values():
                await s.ok("validate_spec", {"spec_yaml": text})

        latencies, rounds = await probe_rounds(s, one_round)
    assert not latencies.errors
    assert latencies.p99() < 0.25, (rounds, sorted(latencies.seconds)[-5:])
    assert len(latencies.seconds) >= PROBES, rounds


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("2001-13-45", "'2001-13-45' is not a valid timestamp: month must be in 1..12"),
        ("9" * 5000, "is not a valid int: Exceeds the limit (4300 digits)"),
        ("!!float abc", "'abc' is not a valid float"),
    ],
    ids=["month 13", "5000 digits", "tagged float"],
)
async def test_a_scalar_yaml_cannot_build_is_a_spec_error_with_its_line(
    conductor: Conductor, value: str, detail: str
) -> None:
    """SafeLoader's scalar constructors raise plain ValueErrors: the answer was a bare tool
    error (`validate_spec: month must be in 1..12`) with no line, no field, not a report."""
    text = f"name: dates\nvariables:\n  when: {value}\nsheets: [{{prompt: echo}}]\n"
    async with served(conductor) as s:
        for tool in ("validate_spec", "submit_job"):
            result = await s.call(tool, {"spec_yaml": text})
            if tool == "validate_spec":
                assert not result.is_error, text_of(result)
                assert result.structured_content is not None
                [error] = result.structured_content["errors"]
                message = error["message"]
            else:
                assert result.is_error
                message = text_of(result)
            assert "invalid YAML at line 3, column 9" in message, message
            assert detail in message, message
            assert "set_int_max_str_digits" not in message
    assert (await conductor.list_jobs())[0] == []

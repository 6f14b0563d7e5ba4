"""`podium import-score` (issue 17): Marianne scores (our own fixtures, in Marianne's format)
become Podium specs that validate, and the report on stderr lists exactly the fields that
were not carried over."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from podium.core.instruments.catalog import builtin_profiles
from podium.core.spec.bounds import MAX_SPEC_BYTES
from podium.core.spec.instrument_check import InstrumentTraits
from podium.core.spec.loader import LoadedSpec, load_spec
from podium.server.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "marianne"

# What each fixture shows, and the fields of it that have no place in a Podium spec.
DROPPED: dict[str, set[str]] = {
    "fan-out-survey": {"learning", "retry.max_completion_attempts", "validations.1.description"},
    "instrument-fallbacks": {"circuit_breaker", "instrument_config.temperature"},
    "completion-retries": {
        "rate_limit",
        "retry.completion_threshold_percent",
        "retry.max_completion_attempts",
        "validations.3.retry_count",
        "validations.3.stage",
    },
    "cross-sheet-context": set(),
    "conditions": {"sheet.skip_when.4"},
    "notifications": {
        "notifications.1.on_events.1",
        "notifications.2",
        "notifications.3",
        "notifications.4",
    },
    "self-chaining": {"concert.cooldown_between_jobs_seconds", "on_success.0.description"},
    "prelude-cadenza": {"sheet.prelude.2"},
    "movements": {"backend.disable_mcp", "backend.output_format"},
    "batch-items": {
        "cost_limits.max_cost_per_sheet",
        "pause_between_sheets_seconds",
        "stale_detection.check_interval_seconds",
        "workspace_lifecycle",
    },
    "offset-items": {"isolation", "prompt.variables.stage"},
    "api-backend": {
        "backend.max_tokens",
        "backend.model",
        "backend.temperature",
        "backend.type",
        "conductor",
        "logging",
    },
}

BUILTINS = builtin_profiles()


def builtin_traits(name: str) -> InstrumentTraits:
    """Podium's built-in instruments, as if all were installed: the spec must name real
    instruments with settings they take, whatever this machine has."""
    profile = BUILTINS.get(name)
    if profile is None:
        return InstrumentTraits(problem=f"unknown instrument {name!r}", known=False)
    return InstrumentTraits(
        permission_modes=frozenset(profile.permission_flags),
        accepts_model=profile.model_flag is not None,
    )


def run_import(score: Path, out: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["import-score", str(score), "-o", str(out)])
    return result.exit_code, result.stderr.splitlines()


def imported(name: str, tmp_path: Path) -> tuple[LoadedSpec, dict[str, Any], list[str]]:
    out = tmp_path / f"{name}.podium.yaml"
    code, lines = run_import(FIXTURES / f"{name}.yaml", out)
    assert code == 0, lines
    loaded = load_spec(path=out, instruments=builtin_traits)
    return loaded, yaml.safe_load(out.read_text()), lines


def test_the_fixtures_cover_the_issue() -> None:
    assert len(DROPPED) >= 10
    assert {p.stem for p in FIXTURES.glob("*.yaml")} == set(DROPPED)


@pytest.mark.parametrize("name", sorted(DROPPED))
def test_each_score_imports_to_a_valid_spec_and_reports_exactly_what_was_dropped(
    name: str, tmp_path: Path
) -> None:
    loaded, _, lines = imported(name, tmp_path)
    assert loaded.sheets
    assert lines[0].endswith(f"{len(DROPPED[name])} field(s) dropped"), lines[0]
    dropped = {line.split(": ", 2)[1] for line in lines if line.startswith("dropped: ")}
    assert dropped == DROPPED[name]
    for line in lines[1:]:
        assert line.startswith(("dropped: ", "note: ")), line
        assert len(line.split(": ", 2)) == 3 and line.split(": ", 2)[2].strip(), line


def test_fan_out_carries_over(tmp_path: Path) -> None:
    loaded, spec, _ = imported("fan-out-survey", tmp_path)
    assert [(s.name, s.stage, s.instance, s.fan_count, s.depends_on) for s in loaded.sheets] == [
        (None, 1, 1, 1, ()),
        (None, 2, 1, 3, (1,)),
        (None, 2, 2, 3, (1,)),
        (None, 2, 3, 3, (1,)),
        (None, 3, 1, 1, (2, 3, 4)),
    ]
    # `validations[0]` held for sheet_num >= 5: the merge only. The others apply to all.
    assert [len(s.validations) for s in loaded.sheets] == [1, 1, 1, 1, 2]
    assert spec["concurrency"] == {"max_parallel_sheets": 3}
    assert spec["instrument_config"] == {"timeout_seconds": 900, "permission_mode": "bypass"}


def test_instruments_fallbacks_and_aliases(tmp_path: Path) -> None:
    loaded, spec, _ = imported("instrument-fallbacks", tmp_path)
    assert [(s.instrument, s.fallbacks) for s in loaded.sheets] == [
        ("claude-code", ("codex-cli",)),
        ("gemini-cli", ("codex-cli", "claude-code")),
        ("gemini-cli", ("claude-code",)),
        ("claude-code", ()),
    ]
    assert loaded.sheets[0].instrument_config.model == "claude-haiku-4-5"
    assert loaded.sheets[1].instrument_config.model == "gemini-2.5-flash"
    assert loaded.sheets[3].instrument_config.timeout_seconds == 2400
    assert spec["concurrency"] == {"max_parallel_sheets": 1}  # Marianne's sequential default


def test_conditions_context_hooks_and_prelude(tmp_path: Path) -> None:
    loaded, _, _ = imported("conditions", tmp_path)
    assert loaded.sheets[2].skip_when == "sheets.get(2) is not none and sheets[2].validation_passed"
    assert loaded.sheets[3].skip_when is None
    command = loaded.sheets[4].skip_when_command
    assert command is not None and command.command.startswith("grep -q 'PHASES: 1' {{ workspace }}")

    _, spec, _ = imported("cross-sheet-context", tmp_path)
    assert spec["context"] == {
        "previous_sheets": 2,
        "output_bytes": 6000,
        "files": ["{{ workspace }}/chapter-{{ sheet_num - 1 }}.md"],
    }
    _, spec, _ = imported("notifications", tmp_path)
    assert spec["notifications"] == {
        "on_complete": [{"type": "desktop"}],
        "on_failure": [
            {"type": "desktop"},
            {"type": "webhook", "url": "https://hooks.example.org/podium-audit"},
        ],
    }
    _, spec, _ = imported("self-chaining", tmp_path)
    assert spec["on_success"] == {"submit": "self-chaining.podium.yaml", "max_chain": 3}
    assert spec["notifications"]["on_complete"][0]["command"].startswith(
        'git -C "${PODIUM_WORKSPACE}"'
    )
    loaded, spec, _ = imported("prelude-cadenza", tmp_path)
    assert spec["prelude"] == [
        {"file": "tone-guide.md", "as": "skill"},
        {"file": "house-style.md", "as": "skill"},
        {"file": "glossary.md", "as": "context"},
    ]
    assert [len(s.cadenzas) for s in loaded.sheets] == [0, 1, 0]
    assert "Keep the summary under 200 words." in loaded.sheets[2].prompt


def test_items_and_aliases_render_as_in_marianne(tmp_path: Path) -> None:
    from podium.core.spec.templating import TemplateContext, render_sheet_prompt

    def prompt(loaded: LoadedSpec, num: int) -> str:
        sheet = loaded.sheet(num)
        ctx = TemplateContext(
            workspace="/w", job_id="j", sheet_num=num, total_sheets=loaded.total_sheets,
            sheet_name=sheet.name, start_item=sheet.start_item, end_item=sheet.end_item,
            variables=loaded.spec.variables, outputs={}, stage=sheet.stage,
            instance=sheet.instance, fan_count=sheet.fan_count,
        )  # fmt: skip
        return render_sheet_prompt(sheet, ctx).strip()

    loaded, _, _ = imported("offset-items", tmp_path)  # items 5..9 in twos, explicit form
    assert [prompt(loaded, n) for n in (1, 2, 3)] == [
        "Review items 5-6 of podium (sheet 1/3).",
        "Review items 7-8 of podium (sheet 2/3).",
        "Review items 9-9 of podium (sheet 3/3).",
    ]
    loaded, spec, _ = imported("batch-items", tmp_path)  # the batch form stays a batch
    assert spec["sheet"] == {"size": 5, "total_items": 23} and loaded.total_sheets == 5
    assert spec["cost_limit_usd"] == 12.5 and spec["on_failure"] == "continue"
    loaded, _, _ = imported("movements", tmp_path)
    assert [s.name for s in loaded.sheets] == ["Inventory", "Review-1", "Review-2", "Verdict"]
    assert prompt(loaded, 3) == "Review half 2 of 2 of files.txt into review-2.md."
    assert loaded.sheets[3].instrument_config.timeout_seconds == 3600


def test_output_to_stdout_and_bad_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["import-score", str(FIXTURES / "conditions.yaml")])
    assert result.exit_code == 0
    assert load_spec(text=result.stdout).spec.name == "phased-migration"
    assert "dropped: sheet.skip_when.4: " in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsheet: [1, 2]\nprompt: {template: hi}\n")
    result = CliRunner().invoke(main, ["import-score", str(bad)])
    assert result.exit_code != 0
    assert "sheet: a Marianne score needs a `sheet` mapping" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_hostile_score_is_refused_with_the_limit_not_a_crash(tmp_path: Path) -> None:
    # The score is read as a spec is (core/spec/source.py, bounds.py): a plain safe_load of
    # one nested 5,000 deep ended in a RecursionError traceback.
    head = "name: x\nsheet: {size: 1, total_items: 1}\nprompt: {template: hi}\n"
    bomb = ["  a0: &a0 [" + ", ".join(['"lol"'] * 9) + "]"]
    bomb += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 8)]
    scores = {
        "deep": (head + "x: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 64"),
        "bomb": (
            head.replace("{template: hi}", "{template: hi, variables: {b: *a7}}").replace(
                "name: x\n", "name: x\nanchors:\n" + "\n".join(bomb) + "\n"
            ),
            "MAX_SPEC_SIZE",
        ),
        "large": (head + "# " + "x" * MAX_SPEC_BYTES + "\n", "MAX_SPEC_BYTES"),
    }
    for name, (text, limit) in scores.items():
        score = tmp_path / f"{name}.yaml"
        score.write_text(text)
        result = CliRunner().invoke(main, ["import-score", str(score)])
        assert result.exit_code != 0, name
        assert limit in result.stderr and str(score) in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout, name

"""`podium import-score` on scores written differently from the fixtures: stage numbers as
strings (YAML keys quoted, as JSON scores have them), other shapes, a unicode name, sizes
past Podium's limits, and input errors that must name the score's own field."""

from __future__ import annotations

import resource
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from test_import_score import builtin_traits
from test_transports import PODIUM

from podium.core.errors import SpecError
from podium.core.importer import import_score
from podium.core.importer.score import ScoreError
from podium.core.spec.bounds import MAX_SPEC_SIZE
from podium.core.spec.loader import load_spec
from podium.core.spec.templating import TemplateContext, render
from podium.server.cli import main


def _score(**fields: object) -> dict[str, object]:
    return {"name": "shapes", "prompt": {"template": "step {{ sheet_num }}"}, **fields}


def test_stage_numbers_given_as_strings_carry_over() -> None:
    """Marianne's models read "2" as 2 (a JSON score can only write keys as strings)."""
    score = _score(
        sheet={
            "size": 1,
            "total_items": 3,
            "dependencies": {"2": ["1"], "3": [2, "1"]},
            "fan_out": {"2": "2"},
        }
    )
    result = import_score(score)
    assert result.dropped == [], result.dropped
    loaded = load_spec(data=result.spec, instruments=builtin_traits)
    assert [(s.stage, s.instance, s.depends_on) for s in loaded.sheets] == [
        (1, 1, ()),
        (2, 1, (1,)),
        (2, 2, (1,)),
        (3, 1, (1, 2, 3)),
    ]


def test_wrong_shapes_are_dropped_with_the_reason_not_a_traceback() -> None:
    score = _score(
        sheet={"size": 1, "total_items": 3, "dependencies": {"2": 1, "3": [2]}},
        validations={"type": "file_exists", "path": "x"},
    )
    result = import_score(score)
    why = dict(result.dropped)
    assert "list of stage numbers" in why["sheet.dependencies.2"], why
    assert "list" in why["validations"], why
    loaded = load_spec(data=result.spec, instruments=builtin_traits)
    assert [s.depends_on for s in loaded.sheets] == [(), (), (2,)]
    listed = import_score(_score(sheet={"size": 1, "total_items": 2, "dependencies": [1, 2]}))
    assert "mapping" in dict(listed.dropped)["sheet.dependencies"], listed.dropped


def test_a_unicode_name_keeps_its_letters() -> None:
    result = import_score({**_score(sheet={"size": 1, "total_items": 1}),
                           "name": "Übersetzung — Kapitel Ω"})  # fmt: skip
    assert result.spec["name"] == "ubersetzung-kapitel"


@pytest.mark.parametrize(
    ("sheet", "field"),
    [
        ({"size": 1, "total_items": 100_000_000}, "sheet.total_items"),
        ({"size": 1, "total_items": 3, "fan_out": {2: 1_000_000_000}}, "sheet.fan_out.2"),
        ({"size": 1, "total_items": 5000, "fan_out": {1: 3000, 2: 3000}}, "sheet.fan_out"),
    ],
)
def test_more_sheets_than_a_job_may_have_is_refused_before_they_are_built(
    tmp_path: Path, sheet: dict[str, object], field: str
) -> None:
    score = tmp_path / "huge.yaml"
    score.write_text(yaml.safe_dump(_score(sheet=sheet)))

    def bounded() -> None:  # a regression must fail this test, not the machine
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    started = time.monotonic()
    done = subprocess.run(
        [PODIUM, "import-score", str(score), "-o", str(tmp_path / "out.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=bounded,
    )
    assert done.returncode == 2, done.stderr
    assert f"podium: {field}: " in done.stderr and "10000" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 15
    assert not (tmp_path / "out.yaml").exists()


def test_score_errors_name_the_score_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nprompt: {template: hi}\n")
    result = CliRunner().invoke(main, ["import-score", str(bad)])
    assert result.exit_code == 2
    # The score's `sheet` field, not the CLI's --sheet option.
    assert result.stderr.startswith("podium: sheet: a Marianne score needs"), result.stderr
    with pytest.raises(ScoreError, match=r"sheet\.size: must be a positive integer"):
        import_score(_score(sheet={"size": "two", "total_items": 3}))


def test_paths_podium_refuses_are_dropped_by_their_score_field(tmp_path: Path) -> None:
    """A file outside the spec's folder (absolute, or up through `..`) in the prelude, a
    cadenza, a prompt extension, a captured file or a validation: each is reported as dropped
    under its own score field, its siblings carry over, and the import does not fail."""
    score = _score(
        instrument="claude-code",
        sheet={
            "size": 1,
            "total_items": 2,
            "dependencies": {2: [1]},
            "prelude": [{"file": "/etc/hostname"}, {"file": "house-style.md"}],
            "cadenzas": {2: [{"file": "../up.md"}, {"file": "fine.md"}]},
        },
        prompt={
            "template": "step {{ sheet_num }}",
            "prompt_extensions": ["../../style.md", "Be brief."],
        },
        validations=[
            {"type": "file_exists", "path": "{workspace}/../escape.md"},
            {"type": "file_exists", "path": "{workspace}/kept.md"},
        ],
        cross_sheet={
            "auto_capture_stdout": True,
            "capture_files": ["../x.md", "notes-{{ sheet_num }}.md"],
        },
    )
    (tmp_path / "score.yaml").write_text(yaml.safe_dump(score))
    out = tmp_path / "spec.yaml"
    result = CliRunner().invoke(
        main, ["import-score", str(tmp_path / "score.yaml"), "-o", str(out)]
    )
    assert result.exit_code == 0, result.stderr
    dropped = {
        line.split(": ")[1] for line in result.stderr.splitlines() if line.startswith("dropped: ")
    }
    assert dropped == {
        "sheet.prelude.0",
        "sheet.cadenzas.2.0",
        "prompt.prompt_extensions.0",
        "validations.0",
        "cross_sheet.capture_files.0",
    }, result.stderr
    assert "5 field(s) dropped" in result.stderr
    assert "left out" not in result.stderr  # nothing went missing after the mapping
    spec = yaml.safe_load(out.read_text())
    load_spec(data=spec, instruments=builtin_traits)
    assert spec["prelude"] == [{"file": "house-style.md", "as": "context"}]
    assert spec["sheets"][1]["cadenzas"] == [{"file": "fine.md", "as": "context"}]
    assert spec["validations"] == [{"type": "file_exists", "path": "kept.md"}]
    assert spec["context"]["files"] == ["notes-{{ sheet_num }}.md"]
    assert spec["sheets"][0]["prompt"].startswith("Be brief.")


def test_an_output_that_cannot_be_written_is_a_readable_error(tmp_path: Path) -> None:
    (tmp_path / "score.yaml").write_text(
        yaml.safe_dump(_score(sheet={"size": 1, "total_items": 1}))
    )
    (tmp_path / "a-file").write_text("")
    for out in (tmp_path / "no-such-dir" / "spec.yaml", tmp_path / "a-file" / "spec.yaml"):
        result = CliRunner().invoke(
            main, ["import-score", str(tmp_path / "score.yaml"), "-o", str(out)]
        )
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert f"podium: --output: cannot write {out}: " in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_each_dependency_that_cannot_carry_over_is_reported_by_its_own_index() -> None:
    """The good dependencies of a stage carry over; the report names each one that did not
    (not the whole list, which would claim the good ones were dropped too)."""
    score = _score(sheet={"size": 1, "total_items": 3, "dependencies": {"3": [2, "x", 9, 3, 1]}})
    result = import_score(score)
    assert dict(result.dropped) == {
        "sheet.dependencies.3.1": "no stage 'x' (stages are 1..3)",
        "sheet.dependencies.3.2": "no stage 9 (stages are 1..3)",
        "sheet.dependencies.3.3": "a stage cannot depend on itself",
    }
    loaded = load_spec(data=result.spec, instruments=builtin_traits)
    assert [s.depends_on for s in loaded.sheets] == [(), (), (1, 2)]


def test_a_template_that_includes_other_files_is_refused_not_written(tmp_path: Path) -> None:
    """A Marianne template may `{% include %}` a file beside it; a Podium template has no
    files to include, so the spec would fail every sheet. The import says so, naming the
    score's field and the tag, and writes nothing."""
    score = tmp_path / "parts.yaml"
    score.write_text(
        yaml.safe_dump(
            _score(
                sheet={"size": 1, "total_items": 2},
                prompt={"template": "Intro\n{% include 'common.j2' %}\nstep {{ sheet_num }}"},
            )
        )
    )
    (tmp_path / "common.j2").write_text("shared text\n")
    out = tmp_path / "parts.podium.yaml"
    result = CliRunner().invoke(main, ["import-score", str(score), "-o", str(out)])
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("podium: prompt.template: "), result.stderr
    assert "line 2" in result.stderr and "{% include %} is not supported" in result.stderr
    assert not out.exists()


def test_stakes_a_template_places_itself_are_its_variables_not_appended() -> None:
    """Marianne gives `stakes` and `thinking_method` to the template by name: one that
    reads `{{ stakes }}` gets the text there (once), not an empty string with the text
    appended at the end and a note saying it was set to ''."""
    score = _score(
        sheet={"size": 1, "total_items": 1},
        prompt={
            "template": "STAKES FIRST: {{ stakes }}\nthen step {{ sheet_num }}",
            "stakes": "the release depends on it",
            "thinking_method": "check twice",
        },
    )
    result = import_score(score)
    assert result.dropped == [], result.dropped
    assert not any("stakes" in text for _, text in result.notes), result.notes
    assert result.spec["variables"] == {"stakes": "the release depends on it"}
    loaded = load_spec(data=result.spec, instruments=builtin_traits)
    ctx = TemplateContext(
        workspace="/w", job_id="j", sheet_num=1, total_sheets=1, sheet_name=None,
        start_item=1, end_item=1, variables=loaded.spec.variables, outputs={},
    )  # fmt: skip
    prompt = render(loaded.sheets[0].prompt, ctx)
    assert prompt.startswith("STAKES FIRST: the release depends on it\nthen step 1"), prompt
    assert prompt.count("the release depends on it") == 1, prompt
    # The one the template does not read is still appended, as before.
    assert prompt.rstrip().endswith("check twice"), prompt


def test_what_the_report_says_of_a_field_is_what_became_of_it() -> None:
    """A condition that does not carry over leaves its validation on every sheet (the report
    says so); `prompt.variables` that is not a mapping, and a validation that is not one,
    are reported as such, not as settings Podium lacks or a type `None`."""
    score = _score(
        sheet={"size": 1, "total_items": 3},
        prompt={"template": "step {{ sheet_num }}", "variables": ["a", "b"]},
        validations=[
            {"type": "file_exists", "path": "out.md", "condition": "sheet_num > 1 and x"},
            "file_exists out.md",
        ],
    )
    result = import_score(score)
    why = dict(result.dropped)
    assert "applies to every sheet" in why["validations.0.condition"], why
    assert "mapping" in why["prompt.variables"], why
    assert "not a Podium" not in why["prompt.variables"], why
    assert "None" not in why["validations.1"] and "mapping" in why["validations.1"], why
    loaded = load_spec(data=result.spec, instruments=builtin_traits)
    assert [len(s.validations) for s in loaded.sheets] == [1, 1, 1]


def test_a_score_too_large_once_expanded_names_the_root_the_limit_and_the_size() -> None:
    """5,000 stages of a 2 KB prompt, each with its own description (so each is a sheet of
    the explicit form): the spec passes MAX_SPEC_SIZE. The refusal names the root as every
    other root-level error does (`<root>: `, not `: `), and says how large it is."""
    count = 5_000
    score = _score(
        prompt={"template": "step {{ sheet_num }} " + "x" * 2_000},
        sheet={
            "size": 1,
            "total_items": count,
            "descriptions": {n: f"d{n}" for n in range(1, count + 1)},
        },
    )
    with pytest.raises(ScoreError) as refused:
        import_score(score)
    message = str(refused.value)
    assert ": : " not in message, message
    assert "<root>: the spec expands to " in message, message
    size = int(message.split("the spec expands to ")[1].split(" ")[0])
    assert size > MAX_SPEC_SIZE and f"{MAX_SPEC_SIZE} (MAX_SPEC_SIZE)" in message, message


def test_a_spec_too_large_once_expanded_says_its_size() -> None:
    """The same words where a spec is validated: the limit and the size."""
    spec = {"name": "huge", "sheets": [{"prompt": "x" * 1_000_000} for _ in range(9)]}
    with pytest.raises(SpecError) as refused:
        load_spec(data=spec)
    [error] = refused.value.errors
    assert error.path == "" and str(error).startswith("<root>: the spec expands to "), error
    size = int(error.message.split("the spec expands to ")[1].split(" ")[0])
    assert size > 9_000_000, error
    assert f"{MAX_SPEC_SIZE} (MAX_SPEC_SIZE)" in error.message, error

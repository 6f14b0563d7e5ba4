"""Job spec loading, validation, expansion and templates (SPEC §4)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from podium.core.errors import FieldError, SpecError
from podium.core.spec import (
    DEFAULT_TIMEOUT_SECONDS,
    CommandSucceedsValidation,
    ContentRegexValidation,
    FileExistsValidation,
    InstrumentConfig,
    JobSpec,
    LoadedSpec,
    TemplateContext,
    TemplateRenderError,
    load_spec,
    merge_instrument_config,
    redact_spec,
    render,
    render_sheet_prompt,
    render_validation,
)
from podium.core.spec.instrument_check import InstrumentTraits

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "job",
        "sheets": [
            {"name": "a", "prompt": "echo a"},
            {"name": "b", "prompt": "echo b", "depends_on": ["a"]},
        ],
    }
    base.update(overrides)
    return base


def errors_of(**kwargs: Any) -> list[FieldError]:
    with pytest.raises(SpecError) as info:
        load_spec(**kwargs)
    return info.value.errors


def only_error(**kwargs: Any) -> FieldError:
    errors = errors_of(**kwargs)
    assert len(errors) == 1, errors
    return errors[0]


def ctx(**overrides: Any) -> TemplateContext:
    values: dict[str, Any] = {
        "workspace": "/ws",
        "job_id": "job-1",
        "sheet_num": 2,
        "total_sheets": 3,
        "sheet_name": "b",
        "start_item": None,
        "end_item": None,
        "variables": {},
        "outputs": {1: "out-1"},
    }
    values.update(overrides)
    return TemplateContext(**values)


# --- expansion -------------------------------------------------------------------------------


def test_batch_form_expands_into_sheets_with_item_ranges() -> None:
    loaded = load_spec(
        data={
            "name": "batch",
            "sheet": {"size": 5, "total_items": 12, "dependencies": {"3": [1, "sheet-2"]}},
            "prompt": {"template": "items {{ start_item }}-{{ end_item }}"},
            "validations": [{"type": "file_exists", "path": "out-{{ sheet_num }}"}],
        }
    )
    assert [(s.sheet_num, s.name, s.start_item, s.end_item) for s in loaded.sheets] == [
        (1, "sheet-1", 1, 5),
        (2, "sheet-2", 6, 10),
        (3, "sheet-3", 11, 12),
    ]
    assert [s.depends_on for s in loaded.sheets] == [(), (), (1, 2)]
    assert all(s.prompt == "items {{ start_item }}-{{ end_item }}" for s in loaded.sheets)
    assert all(s.instrument == "shell" for s in loaded.sheets)
    assert all(len(s.validations) == 1 for s in loaded.sheets)
    assert loaded.total_sheets == 3


def test_batch_dependency_keys_may_be_ints() -> None:
    loaded = load_spec(
        text="name: b\nsheet: {size: 1, total_items: 3, dependencies: {2: [1], 3: [2]}}\n"
        "prompt: {template: x}\n"
    )
    assert [s.depends_on for s in loaded.sheets] == [(), (1,), (2,)]
    assert loaded.ancestors(3) == frozenset({1, 2})


def test_explicit_form_references_by_number_and_name() -> None:
    loaded = load_spec(
        data={
            "name": "refs",
            "sheets": [
                {"name": "a", "prompt": "x"},
                {"prompt": "y", "depends_on": [1]},
                {"name": "c", "prompt": "z", "depends_on": ["a", 2, "2", "a"]},
            ],
        }
    )
    assert [(s.sheet_num, s.name, s.depends_on) for s in loaded.sheets] == [
        (1, "a", ()),
        (2, None, (1,)),
        (3, "c", (1, 2)),
    ]
    assert loaded.ancestors(3) == frozenset({1, 2})


def test_sheet_validations_come_before_job_validations() -> None:
    loaded = load_spec(
        data=spec(
            sheets=[
                {"prompt": "x", "validations": [{"type": "file_exists", "path": "own"}]},
            ],
            validations=[{"type": "command_succeeds", "command": "true"}],
        )
    )
    validations = loaded.sheets[0].validations
    assert isinstance(validations[0], FileExistsValidation)
    assert isinstance(validations[1], CommandSucceedsValidation)
    assert validations[1].timeout_seconds == 60


def test_instrument_config_is_merged_key_by_key() -> None:
    loaded = load_spec(
        data=spec(
            instrument="claude-code",
            instrument_config={
                "timeout_seconds": 600,
                "env": {"A": "job", "B": "job"},
                "model": "big",
                "extra_args": ["--job"],
            },
            sheets=[
                {"prompt": "x"},
                {
                    "prompt": "y",
                    "instrument": "shell",
                    "instrument_config": {
                        "env": {"B": "sheet", "C": 3},
                        "permission_mode": "accept-edits",
                        "extra_args": ["--sheet"],
                        "model": None,
                    },
                },
            ],
        )
    )
    first, second = loaded.sheets
    assert first.instrument == "claude-code"
    assert first.instrument_config.env == {"A": "job", "B": "job"}
    assert second.instrument == "shell"
    config = second.instrument_config
    assert config.env == {"A": "job", "B": "sheet", "C": "3"}
    assert config.timeout_seconds == 600
    assert config.extra_args == ["--sheet"]
    assert config.permission_mode == "accept-edits"
    assert config.model is None  # an explicit null clears the job's value


def test_merge_instrument_config_only_overrides_given_fields() -> None:
    base = InstrumentConfig(timeout_seconds=10, env={"A": "1"}, extra_args=["x"])
    merged = merge_instrument_config(base, InstrumentConfig(idle_timeout_seconds=5))
    assert merged.timeout_seconds == 10
    assert merged.idle_timeout_seconds == 5
    assert merged.env == {"A": "1"}
    assert merged.extra_args == ["x"]
    assert merge_instrument_config(base, None) is base
    # The result remembers what was given, so a further merge keeps precedence.
    again = merge_instrument_config(InstrumentConfig(timeout_seconds=99), merged)
    assert again.timeout_seconds == 10


def test_defaults() -> None:
    loaded = load_spec(data={"name": "d", "sheets": [{"prompt": "x"}]})
    job = loaded.spec
    assert job.instrument == "shell"
    assert job.retry.max_retries == 2
    assert job.retry.base_delay_seconds == 2
    assert job.retry.max_delay_seconds == 120
    assert job.retry.jitter is True
    assert job.concurrency.max_parallel_sheets == 4
    assert job.priority == 5
    assert job.on_failure == "stop"
    assert job.deadline_seconds is None
    sheet = loaded.sheets[0]
    assert sheet.instrument == "shell"
    assert sheet.name is None
    assert sheet.instrument_config.timeout_seconds is None  # left to the profile
    assert DEFAULT_TIMEOUT_SECONDS == 1800
    assert sheet.instrument_config.effective_timeout() == 1800
    assert sheet.instrument_config.effective_timeout(300) == 300
    assert InstrumentConfig(timeout_seconds=5).effective_timeout(300) == 5


# --- sources ---------------------------------------------------------------------------------

YAML_SPEC = """\
name: src
variables: {who: world}
sheets:
  - name: greet
    prompt: "echo hello {{ who }}"
"""


def test_load_from_dict_yaml_json_and_file(tmp_path: Path) -> None:
    from_yaml = load_spec(text=YAML_SPEC)
    from_dict = load_spec(
        data={
            "name": "src",
            "variables": {"who": "world"},
            "sheets": [{"name": "greet", "prompt": "echo hello {{ who }}"}],
        }
    )
    from_json = load_spec(text=json.dumps(from_dict.to_storable()))
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(YAML_SPEC)
    from_file = load_spec(path=spec_file)
    from_str_path = load_spec(path=str(spec_file))

    fingerprints = {
        s.fingerprint() for s in (from_yaml, from_dict, from_json, from_file, from_str_path)
    }
    assert len(fingerprints) == 1
    assert from_file.source_path == spec_file
    assert from_yaml.source_path is None
    assert from_file.sheets[0].name == "greet"


def test_exactly_one_source() -> None:
    assert only_error().path == ""
    error = only_error(text="name: x", data={"name": "x"})
    assert error.path == ""
    assert "exactly one" in error.message


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    error = only_error(path=missing)
    assert error.path == ""
    assert str(missing) in error.message
    assert "not found" in error.message


def test_yaml_syntax_error_has_line_and_column() -> None:
    error = only_error(text="name: x\nsheets:\n  - {prompt: a\n")
    assert error.path == ""
    assert re.search(r"invalid YAML at line \d+, column \d+", error.message)


def test_yaml_duplicate_key_is_an_error() -> None:
    error = only_error(text="name: x\nsheets: [{prompt: a}]\nname: y\n")
    assert error.path == ""
    assert "duplicate key 'name'" in error.message
    assert "line 3" in error.message


def test_yaml_error_in_a_file_names_the_file(tmp_path: Path) -> None:
    spec_file = tmp_path / "broken.yaml"
    spec_file.write_text("name: x\nsheets: [\n")
    error = only_error(path=spec_file)
    assert error.path == ""
    assert str(spec_file) in error.message
    assert "line" in error.message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text", ""])
def test_top_level_must_be_a_mapping(text: str) -> None:
    error = only_error(text=text)
    assert error.path == ""
    assert "mapping" in error.message


# --- errors, each with its exact path ------------------------------------------------------


def test_unknown_top_level_field_is_named() -> None:
    error = only_error(data=spec(promt="hi"))
    assert error.path == "promt"
    assert "unknown field 'promt'" in error.message
    assert "did you mean 'prompt'" in error.message
    assert "sheets" in error.message  # lists the allowed names


@pytest.mark.parametrize(
    ("field", "value", "inside"),
    [
        ("concurrency", 50, "max_parallel_sheets"),
        ("retry", "3", "max_retries"),
        ("context", 3, "previous_sheets"),
        ("variables", 5, None),
    ],
)
def test_a_value_where_a_mapping_goes_says_what_goes_in_it(
    field: str, value: object, inside: str | None
) -> None:
    """`concurrency: 50` meant `concurrency: {max_parallel_sheets: 50}`: the error names
    the fields of the mapping, not only that one was expected."""
    error = only_error(data=spec(**{field: value}))
    assert error.path == field
    assert error.message.startswith("expected a mapping")
    if inside is not None:
        assert f"(fields: {inside}" in error.message
    assert "got a" in error.message


def test_unknown_nested_fields() -> None:
    errors = errors_of(
        data=spec(
            sheets=[
                {
                    "prompt": "x",
                    "instrument_config": {"timeout": 5},
                    "validations": [{"type": "file_exists", "pth": "a"}],
                }
            ]
        )
    )
    by_path = {e.path: e.message for e in errors}
    assert set(by_path) == {
        "sheets.0.instrument_config.timeout",
        "sheets.0.validations.0.pth",
        "sheets.0.validations.0.path",
    }
    assert "unknown field 'timeout'" in by_path["sheets.0.instrument_config.timeout"]
    assert "timeout_seconds" in by_path["sheets.0.instrument_config.timeout"]
    assert "unknown field 'pth'" in by_path["sheets.0.validations.0.pth"]
    assert "missing required field 'path'" in by_path["sheets.0.validations.0.path"]


def test_bad_type() -> None:
    error = only_error(data=spec(priority="high"))
    assert error.path == "priority"
    assert "integer" in error.message
    assert "'high'" in error.message


def test_out_of_range_number() -> None:
    error = only_error(data=spec(concurrency={"max_parallel_sheets": 0}))
    assert error.path == "concurrency.max_parallel_sheets"
    assert "greater than or equal to 1" in error.message


def test_bad_enum_lists_allowed_values() -> None:
    error = only_error(data=spec(on_failure="halt"))
    assert error.path == "on_failure"
    assert "'halt'" in error.message
    assert "'stop'" in error.message and "'continue'" in error.message


def test_bad_job_and_sheet_names() -> None:
    errors = errors_of(
        data=spec(
            name="Hello World",
            sheets=[{"name": "123", "prompt": "x"}, {"name": "-x", "prompt": "y"}],
        )
    )
    assert {e.path for e in errors} == {"name", "sheets.0.name", "sheets.1.name"}


def test_unknown_validation_type_lists_allowed_types() -> None:
    error = only_error(data=spec(sheets=[{"prompt": "x", "validations": [{"type": "exists"}]}]))
    assert error.path == "sheets.0.validations.0"
    assert "'exists'" in error.message
    for name in ("file_exists", "file_modified", "content_contains", "content_regex"):
        assert name in error.message


def test_bad_regex_is_reported_at_its_pattern() -> None:
    bad = {"type": "content_regex", "path": "f", "pattern": "(unclosed"}
    error = only_error(data=spec(sheets=[{"prompt": "x"}, {"prompt": "y", "validations": [bad]}]))
    assert error.path == "sheets.1.validations.0.pattern"
    assert "invalid regular expression" in error.message


def test_templated_regex_is_not_compiled_before_rendering() -> None:
    pattern = "^{{ sheet_num }}$"
    loaded = load_spec(
        data=spec(validations=[{"type": "content_regex", "path": "f", "pattern": pattern}])
    )
    validation = loaded.sheets[0].validations[0]
    assert isinstance(validation, ContentRegexValidation)
    assert validation.pattern == pattern


def test_duplicate_sheet_names() -> None:
    error = only_error(
        data=spec(sheets=[{"name": "a", "prompt": "x"}, {"name": "a", "prompt": "y"}])
    )
    assert error.path == "sheets.1.name"
    assert "duplicate sheet name 'a'" in error.message


def test_both_sheet_forms() -> None:
    error = only_error(data=spec(sheet={"size": 1, "total_items": 2}, prompt={"template": "x"}))
    assert error.path == ""
    assert "not both" in error.message
    assert "'sheets'" in error.message and "'sheet' + 'prompt'" in error.message


def test_neither_sheet_form() -> None:
    error = only_error(data={"name": "x"})
    assert error.path == ""
    assert "neither" in error.message


def test_batch_sheet_without_prompt() -> None:
    error = only_error(data={"name": "x", "sheet": {"size": 1, "total_items": 2}})
    assert error.path == "prompt"


def test_empty_sheets() -> None:
    error = only_error(data=spec(sheets=[]))
    assert error.path == "sheets"
    assert "at least 1" in error.message


def test_sheet_count_is_capped() -> None:
    error = only_error(
        data={"name": "x", "sheet": {"size": 1, "total_items": 10001}, "prompt": {"template": "x"}}
    )
    assert error.path == "sheet"
    assert "10000" in error.message
    many = [{"prompt": "x"}] * 10001
    assert only_error(data=spec(sheets=many)).path == "sheets"


def test_variables_must_not_shadow_builtins() -> None:
    error = only_error(data=spec(variables={"workspace": "/tmp", "fine": 1}))
    assert error.path == "variables.workspace"
    assert "built-in" in error.message


def test_env_values_are_not_echoed_in_errors() -> None:
    error = only_error(data=spec(instrument_config={"env": {"TOKEN": ["s3cret"]}}))
    assert error.path == "instrument_config.env.TOKEN"
    assert "s3cret" not in error.message


# --- DAG -------------------------------------------------------------------------------------


def test_cycle_is_named() -> None:
    error = only_error(
        data=spec(
            sheets=[
                {"name": "a", "prompt": "x", "depends_on": ["b"]},
                {"name": "b", "prompt": "y", "depends_on": ["a"]},
            ]
        )
    )
    assert error.path == "sheets.0.depends_on"
    assert error.message == "cycle: a -> b -> a"


def test_self_dependency() -> None:
    error = only_error(data=spec(sheets=[{"name": "a", "prompt": "x", "depends_on": ["a"]}]))
    assert error.path == "sheets.0.depends_on.0"
    assert "depends on itself" in error.message


def test_unknown_sheet_name_and_number() -> None:
    errors = errors_of(
        data=spec(
            sheets=[
                {"name": "a", "prompt": "x"},
                {"name": "b", "prompt": "y", "depends_on": ["ghost", 7, 0]},
            ]
        )
    )
    by_path = {e.path: e.message for e in errors}
    assert set(by_path) == {
        "sheets.1.depends_on.0",
        "sheets.1.depends_on.1",
        "sheets.1.depends_on.2",
    }
    assert "unknown sheet 'ghost'" in by_path["sheets.1.depends_on.0"]
    assert "'a'" in by_path["sheets.1.depends_on.0"]  # says what is allowed
    assert "1..2" in by_path["sheets.1.depends_on.1"]


def test_boolean_is_not_a_sheet_reference() -> None:
    error = only_error(data=spec(sheets=[{"prompt": "x"}, {"prompt": "y", "depends_on": [True]}]))
    assert error.path == "sheets.1.depends_on.0"


def test_batch_dependency_errors() -> None:
    errors = errors_of(
        text="name: b\nsheet: {size: 1, total_items: 3, dependencies: {1: [3], 3: [1], 9: [1]}}\n"
        "prompt: {template: x}\n"
    )
    by_path = {e.path: e.message for e in errors}
    assert set(by_path) == {"sheet.dependencies.9", "sheet.dependencies.1"}
    assert by_path["sheet.dependencies.1"] == "cycle: sheet-1 -> sheet-3 -> sheet-1"


# --- templates at load time ----------------------------------------------------------------


def test_undefined_template_variable() -> None:
    error = only_error(data=spec(sheets=[{"prompt": "echo {{ reop }}"}], variables={"repo": 1}))
    assert error.path == "sheets.0.prompt"
    assert "'reop'" in error.message


def test_undefined_variable_in_untaken_branch() -> None:
    error = only_error(data=spec(sheets=[{"prompt": "{% if false %}{{ nope }}{% endif %}"}]))
    assert error.path == "sheets.0.prompt"
    assert "'nope'" in error.message


def test_template_syntax_error_names_the_line() -> None:
    error = only_error(data=spec(sheets=[{"prompt": "line one\n{{ x + }}\nline three"}]))
    assert error.path == "sheets.0.prompt"
    assert "syntax error at line 2" in error.message


def test_outputs_of_a_non_ancestor() -> None:
    error = only_error(
        data=spec(
            sheets=[
                {"name": "a", "prompt": "x"},
                {"name": "b", "prompt": "{{ outputs[1] }} {{ outputs[3] }}", "depends_on": ["a"]},
                {"name": "c", "prompt": "{{ outputs[1] }}{{ outputs[2] }}", "depends_on": ["b"]},
            ]
        )
    )
    assert error.path == "sheets.1.prompt"
    assert "outputs[3]: sheet 3 is not an ancestor of sheet 2" in error.message


@pytest.mark.parametrize("key", ["0", "-1", "4", "'0'"])
def test_outputs_of_a_sheet_that_does_not_exist_says_so(key: str) -> None:
    error = only_error(
        data=spec(
            sheets=[
                {"name": "a", "prompt": "x"},
                {"name": "b", "prompt": "y"},
                {"name": "c", "prompt": f"{{{{ outputs[{key}] }}}}", "depends_on": ["a"]},
            ]
        )
    )
    assert error.path == "sheets.2.prompt"
    number = key.strip("'")
    assert f"there is no sheet {number} (sheets are numbered 1 to 3)" in error.message
    assert "ancestor" not in error.message


def test_template_errors_in_validations_and_batch_prompt() -> None:
    errors = errors_of(
        data={
            "name": "b",
            "sheet": {"size": 1, "total_items": 4},
            "prompt": {"template": "{{ itme }}"},
            "validations": [
                {"type": "file_exists", "path": "ok-{{ sheet_num }}"},
                {"type": "command_succeeds", "command": "test {{ missing }}"},
            ],
        }
    )
    # Shared templates are reported once, not once per sheet.
    assert sorted(e.path for e in errors) == ["prompt.template", "validations.1.command"]


def test_sheet_validation_template_error_path() -> None:
    bad = {"type": "content_contains", "path": "f", "pattern": "{{ outputs[2] }}"}
    error = only_error(data=spec(sheets=[{"prompt": "x", "validations": [bad]}, {"prompt": "y"}]))
    assert error.path == "sheets.0.validations.0.pattern"
    assert "not an ancestor" in error.message


def test_sandbox_blocks_internals() -> None:
    error = only_error(data=spec(sheets=[{"prompt": "{{ ''.__class__.__mro__ }}"}]))
    assert error.path == "sheets.0.prompt"
    assert "not allowed" in error.message


def test_runaway_templates_fail_at_load() -> None:
    error = only_error(data=spec(sheets=[{"prompt": "{{ 'x' * 10**12 }}"}]))
    assert error.path == "sheets.0.prompt"
    assert "not allowed" in error.message
    assert render("{{ '=' * 3 }} {{ 2 ** 10 }}", ctx()) == "=== 1024"


def test_a_template_that_fails_the_same_way_at_every_attempt_fails_the_submit() -> None:
    """A template that reads no placeholder value (outputs, workspace, job_id) renders at
    the check exactly as it will at run time: its error is the spec's, named by field."""
    errors = errors_of(
        data=spec(
            variables={"n": 0, "word": "x"},
            sheets=[
                {"prompt": "echo {{ 10 // n }}"},
                {"prompt": "{% for i in range(10 ** 7) %}{% endfor %}true"},
                {
                    "prompt": "true",
                    "validations": [{"type": "file_exists", "path": "{{ '%d' % word }}"}],
                },
            ],
        )
    )
    by_path = {e.path: e.message for e in errors}
    assert sorted(by_path) == [
        "sheets.0.prompt",
        "sheets.1.prompt",
        "sheets.2.validations.0.path",
    ], errors
    assert "ZeroDivisionError" in by_path["sheets.0.prompt"]
    assert "range" in by_path["sheets.1.prompt"].lower()
    assert "TypeError" in by_path["sheets.2.validations.0.path"]


def test_a_template_error_that_may_come_from_placeholders_is_left_to_run_time() -> None:
    """At the check, outputs are empty and the workspace and job id are stand-ins: an error
    that may come from them is not the spec's (the real values may render fine)."""
    loaded = load_spec(
        data=spec(
            variables={"n": 0},
            sheets=[
                {"name": "a", "prompt": "echo 5"},
                {"prompt": "echo {{ 10 // (outputs[1] | int) }}", "depends_on": ["a"]},
                {"prompt": "echo {{ 10 // (workspace | length - 22) }}"},
                {"prompt": "echo {{ job_id | int }}{{ 1 // (job_id | length - 15) }}"},
            ],
        )
    )
    assert loaded.total_sheets == 4


def test_builtins_render_at_load() -> None:
    loaded = load_spec(
        data=spec(
            sheets=[
                {"name": "a", "prompt": "{{ workspace }} {{ job_id }} {{ sheet_name }}"},
                {
                    "prompt": "{% for n in outputs %}{{ outputs[n] | shell_quote }}{% endfor %}"
                    "{% set x = 1 %}{{ x }} {{ range(2) | list }} {{ 1 in outputs }}",
                    "depends_on": [1],
                },
            ]
        )
    )
    assert loaded.total_sheets == 2


# --- everything at once ----------------------------------------------------------------------


def test_all_errors_are_reported_together() -> None:
    errors = errors_of(
        data={
            "name": "Bad Name",
            "promt": "x",
            "on_failure": "halt",
            "sheets": [
                {
                    "name": "a",
                    "prompt": "x",
                    "validations": [{"type": "content_regex", "path": "f", "pattern": "["}],
                },
                {"name": "a", "prompt": "y"},
                {"prompt": "z", "depends_on": "a"},
            ],
        }
    )
    assert {e.path for e in errors} == {
        "name",
        "promt",
        "on_failure",
        "sheets.0.validations.0.pattern",
        "sheets.1.name",
        "sheets.2.depends_on",
    }


def test_semantic_errors_are_reported_together() -> None:
    errors = errors_of(
        data=spec(
            sheets=[
                {"name": "a", "prompt": "{{ nope }}", "depends_on": ["b"]},
                {"name": "b", "prompt": "y", "depends_on": ["a", "ghost"], "instrument": "bad"},
            ]
        ),
        instruments=lambda name: InstrumentTraits(
            problem=None if name == "shell" else f"unknown instrument {name!r}"
        ),
    )
    assert {e.path for e in errors} == {
        "sheets.0.depends_on",
        "sheets.1.depends_on.1",
        "sheets.1.instrument",
        "sheets.0.prompt",
    }


def test_spec_error_text_is_one_line_per_error() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(data=spec(priority=99, on_failure="x"))
    lines = str(info.value).splitlines()
    assert len(lines) == len(info.value.errors) == 2
    assert lines == [f"{e.path}: {e.message}" for e in info.value.errors]


def test_check_instrument_errors_at_the_naming_path() -> None:
    calls: list[str] = []

    def check(name: str) -> InstrumentTraits:
        calls.append(name)
        return InstrumentTraits(
            problem=None if name == "shell" else f"instrument {name!r} is not installed"
        )

    errors = errors_of(
        data=spec(
            instrument="gemini-cli",
            sheets=[
                {"prompt": "a"},
                {"prompt": "b", "instrument": "shell"},
                {"prompt": "c", "instrument": "codex-cli"},
                {"prompt": "d", "instrument": "codex-cli"},
            ],
        ),
        instruments=check,
    )
    assert sorted(calls) == ["codex-cli", "gemini-cli", "shell"]  # once per distinct name
    by_path = {e.path: e.message for e in errors}
    assert set(by_path) == {"instrument", "sheets.2.instrument", "sheets.3.instrument"}
    assert "'gemini-cli'" in by_path["instrument"]
    assert "'codex-cli'" in by_path["sheets.2.instrument"]


def test_unused_job_instrument_is_not_checked() -> None:
    calls: list[str] = []

    def check(name: str) -> InstrumentTraits:
        calls.append(name)
        return InstrumentTraits()

    load_spec(
        data=spec(instrument="missing", sheets=[{"prompt": "a", "instrument": "shell"}]),
        instruments=check,
    )
    assert calls == ["shell"]


# --- storage ---------------------------------------------------------------------------------


def test_redact_spec_hides_env_values() -> None:
    data = spec(
        instrument_config={"env": {"TOKEN": "secret-1"}},
        sheets=[{"prompt": "x", "instrument_config": {"env": {"KEY": "secret-2"}}}],
    )
    redacted = redact_spec(data)
    assert redacted["instrument_config"]["env"] == {"TOKEN": "***"}
    assert redacted["sheets"][0]["instrument_config"]["env"] == {"KEY": "***"}
    assert "secret" not in json.dumps(redacted)
    assert data["instrument_config"]["env"]["TOKEN"] == "secret-1"  # the input is untouched
    stored = load_spec(data=data).to_storable()
    assert "secret" not in json.dumps(redact_spec(stored))


def test_fingerprint_is_stable_and_tracks_changes() -> None:
    first = load_spec(data=spec())
    again = load_spec(data=spec())
    assert first.fingerprint() == again.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", first.fingerprint())
    # Spelling out a default does not change the spec.
    assert load_spec(data=spec(priority=5)).fingerprint() == first.fingerprint()
    assert load_spec(data=spec(priority=6)).fingerprint() != first.fingerprint()
    changed = spec()
    changed["sheets"][1]["prompt"] = "echo c"
    assert load_spec(data=changed).fingerprint() != first.fingerprint()


def test_to_storable_round_trips() -> None:
    original = load_spec(
        data=spec(
            description="d",
            labels=["x"],
            variables={"none": None, "nested": {"k": [1, 2]}},
            instrument_config={"env": {"A": "1"}, "model": "m"},
            sheets=[
                {"name": "a", "prompt": "x", "instrument_config": {"model": None}},
                {
                    "prompt": "y",
                    "depends_on": [1],
                    "validations": [{"type": "content_regex", "path": "f", "pattern": "^x$"}],
                },
            ],
            deadline_seconds=60,
        )
    )
    stored = original.to_storable()
    assert json.loads(json.dumps(stored)) == stored
    reloaded = load_spec(data=stored)
    assert reloaded.to_storable() == stored
    assert reloaded.fingerprint() == original.fingerprint()
    assert reloaded.sheets == original.sheets
    assert reloaded.sheets[0].instrument_config.model is None


def test_json_schema_is_available() -> None:
    schema = JobSpec.model_json_schema()
    assert "sheets" in schema["properties"]


# --- rendering -------------------------------------------------------------------------------


def test_shell_quote_round_trips_through_bash() -> None:
    nasty = 'it\'s "quoted"\nsecond line $(echo pwned) `id` $HOME \\ ; | & * ~'
    command = render("printf %s {{ value | shell_quote }}", ctx(variables={"value": nasty}))
    result = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout == nasty


def test_render_context_and_outputs() -> None:
    text = render(
        "{{ workspace }} {{ job_id }} {{ sheet_num }}/{{ total_sheets }} {{ sheet_name }} "
        "{{ repo }} {{ outputs[1] }}\n",
        ctx(variables={"repo": "r"}),
    )
    assert text == "/ws job-1 2/3 b r out-1\n"  # trailing newline kept


def test_render_errors() -> None:
    with pytest.raises(TemplateRenderError, match="'missing' is undefined") as info:
        render("a\n{{ missing }}", ctx())
    assert info.value.kind == "undefined"
    assert info.value.line == 2
    with pytest.raises(TemplateRenderError, match="sheet 3 is not an ancestor of sheet 2"):
        render("{{ outputs[3] }}", ctx())
    with pytest.raises(TemplateRenderError, match="syntax error"):
        render("{{ ", ctx())


def test_render_sheet_prompt_and_validation() -> None:
    loaded: LoadedSpec = load_spec(
        data={
            "name": "r",
            "sheet": {"size": 2, "total_items": 3},
            "prompt": {"template": "items {{ start_item }}-{{ end_item }}"},
            "validations": [
                {
                    "type": "content_regex",
                    "path": "out-{{ sheet_num }}",
                    "pattern": "^{{ end_item }}$",
                },
                {"type": "command_succeeds", "command": "test -f {{ workspace | shell_quote }}/x"},
            ],
        }
    )
    sheet = loaded.sheets[1]
    context = ctx(
        sheet_num=2,
        total_sheets=2,
        sheet_name=sheet.name,
        start_item=3,
        end_item=3,
        workspace="/w s",
    )
    assert render_sheet_prompt(sheet, context) == "items 3-3"
    regex, command = (render_validation(v, context) for v in sheet.validations)
    assert isinstance(regex, ContentRegexValidation)
    assert (regex.path, regex.pattern) == ("out-2", "^3$")
    assert isinstance(command, CommandSucceedsValidation)
    assert command.command == "test -f '/w s'/x"
    original = sheet.validations[0]
    assert isinstance(original, ContentRegexValidation)
    assert original.path == "out-{{ sheet_num }}"  # the spec's copy is not changed


# --- examples --------------------------------------------------------------------------------


def test_examples_load() -> None:
    hello = load_spec(path=EXAMPLES / "hello.yaml")
    assert [(s.name, s.depends_on) for s in hello.sheets] == [
        ("list", ()),
        ("count", (1,)),
        ("report", (1, 2)),
    ]
    assert all(s.validations for s in hello.sheets)
    batch = load_spec(path=EXAMPLES / "batch.yaml")
    assert [(s.start_item, s.end_item) for s in batch.sheets] == [(1, 5), (6, 10), (11, 12)]


@pytest.mark.parametrize("name", ["hello.yaml", "batch.yaml"])
def test_examples_run_in_bash(name: str, tmp_path: Path) -> None:
    loaded = load_spec(path=EXAMPLES / name)
    outputs: dict[int, str] = {}
    for sheet in loaded.sheets:  # both examples list sheets in dependency order
        context = TemplateContext(
            workspace=str(tmp_path),
            job_id="example",
            sheet_num=sheet.sheet_num,
            total_sheets=loaded.total_sheets,
            sheet_name=sheet.name,
            start_item=sheet.start_item,
            end_item=sheet.end_item,
            variables=loaded.spec.variables,
            outputs={n: outputs[n] for n in loaded.ancestors(sheet.sheet_num)},
        )
        result = subprocess.run(
            ["bash", "-c", render_sheet_prompt(sheet, context)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        outputs[sheet.sheet_num] = result.stdout
        for validation in (render_validation(v, context) for v in sheet.validations):
            if isinstance(validation, CommandSucceedsValidation):
                subprocess.run(
                    ["bash", "-c", validation.command], cwd=tmp_path, check=True, timeout=30
                )
            elif isinstance(validation, ContentRegexValidation):
                content = (tmp_path / validation.path).read_text()
                assert re.search(validation.pattern, content, re.MULTILINE), validation
            else:
                assert (tmp_path / validation.path).exists(), validation


def test_hosts_are_labels_checked_like_labels() -> None:
    spec = {"name": "gpu", "hosts": ["gpu-box"], "sheets": [{"prompt": "true"}]}
    assert load_spec(data=spec).spec.hosts == ["gpu-box"]
    assert load_spec(data={"name": "any", "sheets": [{"prompt": "true"}]}).spec.hosts == []
    for bad, fragment in ((["a", "a"], "duplicate"), ([""], "at least 1"), ("gpu", "list")):
        with pytest.raises(SpecError) as err:
            load_spec(data={**spec, "hosts": bad})
        assert [e.path.split(".")[0] for e in err.value.errors] == ["hosts"], err.value.errors
        assert fragment in str(err.value), str(err.value)

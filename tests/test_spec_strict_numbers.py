"""A boolean is never read as a number (SPEC §4): `fan_out: true` (or YAML's `yes`, `on`...)
is a spec error naming the field, wherever the spec or an instrument profile has a number,
through the loader, `validate_spec`/`submit_job` and `podium validate`; whatever else
pydantic's lax mode accepted for a number ("5", 5.0, YAML's 1e3) still loads."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mcp import Client
from mcp_types import TextContent
from test_agent_surface import _resolve, sample_specs
from test_transports import podium_cli

from podium.core.conductor import Conductor
from podium.core.errors import FieldError, SpecError
from podium.core.instruments.catalog import profile_errors
from podium.core.spec import load_spec, spec_json_schema
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio

WHOLE = "a whole number is required (got {})"
NUMBER = "a number is required (got {})"
SHEET_REF = "must be a sheet number or a sheet name, got {}"


def errors_of(**source: Any) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        load_spec(**source)
    errors: list[FieldError] = caught.value.errors
    assert len({e.path for e in errors}) == len(errors), errors  # one error per field
    return {e.path: e.message for e in errors}


# --- every number the schema has ---------------------------------------------------------


def _kinds(schema: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        return [m for member in schema["anyOf"] for m in _kinds(member, root)]
    return [schema]


def numbers_in(
    value: Any, schema: dict[str, Any], root: dict[str, Any], path: str = ""
) -> Iterator[tuple[str, str]]:
    """(dotted path, what the schema calls it) of every number in `value`: `integer`,
    `number`, or `ref` for a sheet reference (a number or a name)."""
    kinds = _kinds(schema, root)
    types = {k.get("type") for k in kinds}
    if isinstance(value, int | float) and not isinstance(value, bool):
        if types & {"integer", "number"}:
            kind = "integer" if "integer" in types else "number"
            yield path, "ref" if "string" in types else kind
        return
    at = f"{path}." if path else ""
    if isinstance(value, dict):
        (shape,) = [k for k in kinds if k.get("type") == "object" or "properties" in k]
        for key, item in value.items():
            member = shape.get("properties", {}).get(key, shape.get("additionalProperties"))
            if isinstance(member, dict):
                yield from numbers_in(item, member, root, f"{at}{key}")
    elif isinstance(value, list):
        (shape,) = [k for k in kinds if k.get("type") == "array"]
        items = shape.get("items", {})
        for index, item in enumerate(value):
            member = items
            if "oneOf" in items:  # a discriminated union: the variant of this item's type
                (member,) = [
                    v
                    for v in (_resolve(v, root) for v in items["oneOf"])
                    if v["properties"]["type"].get("const") == item["type"]
                ]
            yield from numbers_in(item, member, root, f"{at}{index}")


def get_at(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def set_at(data: Any, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        data = data[int(part)] if isinstance(data, list) else data[part]
    if isinstance(data, list):
        data[int(last)] = value
    else:
        data[last] = value


EXPECTED = {"integer": WHOLE, "number": NUMBER, "ref": SHEET_REF}


@pytest.mark.parametrize("form", ["sheets", "sheet"])
@pytest.mark.parametrize("boolean", [True, False])
def test_every_number_of_the_schema_refuses_a_boolean_naming_its_path(
    form: str, boolean: bool
) -> None:
    """A spec with every field of the schema filled in, then every number in it a boolean:
    one error per number, at its path, in one answer. Driven by the schema, so a number
    added to the models later is covered without a case of its own."""
    schema = spec_json_schema()
    # An AI instrument: a shell sheet takes no cadenzas. No instruments are looked up here.
    (spec,) = [s for s in sample_specs(schema, {"instrument": "fake-agent"}) if form in s]
    loaded = load_spec(data=spec)  # valid as sampled
    numbers = dict(numbers_in(spec, schema, schema))
    # Some of every kind, at every depth: top level, nested blocks, list items, mapping values.
    assert {"priority", "retry.max_retries", "cost_limit_usd"} <= set(numbers)
    if form == "sheets":
        assert {"sheets.0.fan_out", "sheets.0.instrument_config.timeout_seconds"} <= set(numbers)
        assert "sheets.0.validations.4.timeout_seconds" in numbers  # command_succeeds
    else:
        assert {"sheet.size", "sheet.total_items", "sheet.fan_out.2"} <= set(numbers)
        assert {"sheet.dependencies.3.0"} <= set(numbers)

    broken = copy.deepcopy(spec)
    for path in numbers:
        set_at(broken, path, boolean)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)  # the schema says the same
    word = "true" if boolean else "false"
    assert errors_of(data=broken) == {
        path: EXPECTED[kind].format(word) for path, kind in numbers.items()
    }

    # What is stored holds numbers where numbers go (the models dump what they read), so a
    # job stored before booleans were refused still loads.
    stored = loaded.to_storable()
    for path in numbers:
        value = get_at(stored, path)
        assert isinstance(value, int | float) and not isinstance(value, bool), (path, value)
    assert load_spec(data=json.loads(json.dumps(stored))).to_storable() == stored


# --- YAML's words for booleans -----------------------------------------------------------

ONE_SHEET = "\nsheets: [{prompt: x}]"
BATCH = "\nprompt: {template: x}"
YAML_CASES = [
    ("sheets: [{prompt: x, fan_out: {b}}]", "sheets.0.fan_out", WHOLE),
    ("priority: {b}" + ONE_SHEET, "priority", WHOLE),
    ("retry: {max_retries: {b}}" + ONE_SHEET, "retry.max_retries", WHOLE),
    ("retry: {base_delay_seconds: {b}}" + ONE_SHEET, "retry.base_delay_seconds", NUMBER),
    (
        "concurrency: {max_parallel_sheets: {b}}" + ONE_SHEET,
        "concurrency.max_parallel_sheets",
        WHOLE,
    ),
    (
        "instrument_config: {idle_timeout_seconds: {b}}" + ONE_SHEET,
        "instrument_config.idle_timeout_seconds",
        NUMBER,
    ),
    (
        "sheets: [{prompt: x, instrument_config: {timeout_seconds: {b}}}]",
        "sheets.0.instrument_config.timeout_seconds",
        NUMBER,
    ),
    (
        "sheets: [{prompt: x, validations: [{type: command_succeeds, command: 'true', "
        "timeout_seconds: {b}}]}]",
        "sheets.0.validations.0.timeout_seconds",
        NUMBER,
    ),
    ("sheets: [{prompt: x, depends_on: [{b}]}]", "sheets.0.depends_on.0", SHEET_REF),
    ("deadline_seconds: {b}" + ONE_SHEET, "deadline_seconds", NUMBER),
    ("cost_limit_usd: {b}" + ONE_SHEET, "cost_limit_usd", NUMBER),
    (
        "notifications: {on_failure: [{type: command, command: 'true', timeout_seconds: {b}}]}"
        + ONE_SHEET,
        "notifications.on_failure.0.timeout_seconds",
        NUMBER,
    ),
    ("sheet: {size: {b}, total_items: 3}" + BATCH, "sheet.size", WHOLE),
    ("sheet: {size: 1, total_items: {b}}" + BATCH, "sheet.total_items", WHOLE),
    ("sheet: {size: 1, total_items: 3, fan_out: {2: {b}}}" + BATCH, "sheet.fan_out.2", WHOLE),
    (
        "sheet: {size: 1, total_items: 3, dependencies: {3: [1, {b}]}}" + BATCH,
        "sheet.dependencies.3.1",
        SHEET_REF,
    ),
]
YAML_BOOLEANS = [
    ("yes", "true"), ("no", "false"), ("on", "true"), ("off", "false"), ("True", "true"),
    ("false", "false"),
]  # fmt: skip


@pytest.mark.parametrize(("word", "reads"), YAML_BOOLEANS)
@pytest.mark.parametrize(("body", "path", "message"), YAML_CASES)
def test_yaml_words_for_booleans_are_refused_where_a_number_goes(
    word: str, reads: str, body: str, path: str, message: str
) -> None:
    text = "name: strict\n" + body.replace("{b}", word)
    assert errors_of(text=text) == {path: message.format(reads)}


def test_only_booleans_are_refused_what_lax_mode_read_as_a_number_still_loads() -> None:
    """Digits in quotes, a whole float, YAML's 1e3 (a string to YAML) load as before, and so
    do booleans where the spec takes any value (variables): the boolean `fan_out` is the one
    error of this spec, and without it the same spec loads."""
    text = (
        "name: lax\npriority: '3'\nretry: {max_retries: 1.0, base_delay_seconds: '0.5'}\n"
        "instrument_config: {timeout_seconds: 1e3}\nvariables: {dry_run: yes, n: 2}\n"
        "sheets:\n  - {prompt: 'echo {{ dry_run }} {{ n }}', fan_out: '2'}\n"
        "  - {prompt: 'true', fan_out: FAN}\n"
    )
    assert errors_of(text=text.replace("FAN", "yes")) == {"sheets.1.fan_out": WHOLE.format("true")}
    loaded = load_spec(text=text.replace("FAN", "'1'"))
    spec = loaded.spec
    assert (spec.priority, spec.retry.max_retries, spec.retry.base_delay_seconds) == (3, 1, 0.5)
    assert spec.instrument_config.timeout_seconds == 1000.0
    assert spec.variables == {"dry_run": True, "n": 2}
    assert loaded.total_sheets == 3


def test_every_error_comes_in_one_answer_with_the_others() -> None:
    errors = errors_of(
        text="name: Bad\npriority: on\nsheets:\n"
        "  - {prompt: x, fan_out: yes, depends_on: [ghost]}\n"
        "  - {prompt: '{{ nope }}', instrument_config: {timeout_seconds: off}}\n"
    )
    assert errors["priority"] == WHOLE.format("true")
    assert errors["sheets.0.fan_out"] == WHOLE.format("true")
    assert errors["sheets.1.instrument_config.timeout_seconds"] == NUMBER.format("false")
    assert {"name", "sheets.0.depends_on.0", "sheets.1.prompt"} <= set(errors)


# --- through MCP and the CLI ---------------------------------------------------------------


@pytest.fixture
async def client(conductor: Conductor) -> AsyncIterator[Client]:
    server = PodiumServer(conductor)
    async with server.running(), Client(server.mcp) as c:
        yield c


BAD_YAML = (
    "name: strict\npriority: yes\nsheets:\n  - {name: a, prompt: 'true', fan_out: on}\n"
    "  - {prompt: 'true', depends_on: [a], instrument_config: {timeout_seconds: true}}\n"
)
BAD_LINES = [
    "sheets.0.fan_out: a whole number is required (got true)",
    "sheets.1.instrument_config.timeout_seconds: a number is required (got true)",
    "priority: a whole number is required (got true)",
]


async def test_validate_spec_and_submit_job_refuse_a_boolean_number(
    client: Client, conductor: Conductor
) -> None:
    report = (await client.call_tool("validate_spec", {"spec_yaml": BAD_YAML})).structured_content
    assert report is not None and report["valid"] is False
    assert sorted(f"{e['path']}: {e['message']}" for e in report["errors"]) == sorted(BAD_LINES)
    as_mapping = {"name": "strict", "sheets": [{"prompt": "true", "fan_out": True}]}
    report = (await client.call_tool("validate_spec", {"spec": as_mapping})).structured_content
    assert report is not None and report["errors"] == [
        {"path": "sheets.0.fan_out", "message": WHOLE.format("true")}
    ]
    submitted = await client.call_tool("submit_job", {"spec_yaml": BAD_YAML})
    assert submitted.is_error
    text = "\n".join(b.text for b in submitted.content if isinstance(b, TextContent))
    for line in BAD_LINES:
        assert line in text.splitlines(), text
    assert (await conductor.list_jobs())[0] == []


def test_podium_validate_names_each_boolean_number(tmp_path: Path) -> None:
    spec = tmp_path / "strict.yaml"
    spec.write_text(BAD_YAML)
    refused = podium_cli(tmp_path / "home", "validate", str(spec))
    assert refused.returncode == 1, refused.stderr
    lines = [line.strip() for line in refused.stderr.splitlines()]
    assert "podium: invalid job spec (3 problem(s)):" in lines
    for line in BAD_LINES:
        assert line in lines, refused.stderr


# --- instrument profiles ---------------------------------------------------------------------


def test_a_user_profile_with_a_boolean_number_is_refused(tmp_path: Path) -> None:
    (tmp_path / "flaky.yaml").write_text(
        "name: flaky\nexecutable: bash\nargs: ['-c', '{prompt}']\ntimeout_seconds: yes\n"
        "success_exit_codes: [0, on]\n"
    )
    (tmp_path / "json-where.yaml").write_text(  # a condition on a JSON boolean is fine
        "name: json-where\nexecutable: bash\nargs: ['-c', '{prompt}']\n"
        "output: {format: json}\n"
        "patterns: {rate_limit: [{json_where: {is_error: true, code: 429}}]}\n"
    )
    (error,) = profile_errors(tmp_path)
    assert error == (
        f"instrument profile {tmp_path / 'flaky.yaml'}: timeout_seconds: a number is required "
        "(got true); success_exit_codes.1: a whole number is required (got true)"
    )

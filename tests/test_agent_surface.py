"""What an agent meets first (issue 11): the spec format through MCP, every spec error at
once, answers that cost few tokens, and a protocol surface with valid JSON-RPC errors.

Every test talks to a real `PodiumServer` through the SDK's in-memory client, which also
validates each `structuredContent` against the tool's published (compact) output schema.
"""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
import yaml
from mcp import Client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, TextContent

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio

# tools/list before the token diet (compact JSON of the result): 27,780 characters for the
# eleven tools of the first surface. Their budget is half of that. Every tool added since has
# a budget of its own, chosen when it was added, so the surface only grows on purpose.
TOOLS_LIST_BEFORE = 27_780
FIRST_SURFACE = {
    "submit_job", "validate_spec", "list_jobs", "status", "pause", "resume", "cancel", "clear",
    "clear_rate_limits", "snapshots", "logs",
}  # fmt: skip
# show_job and show_jobs (issue 14) publish the job detail / job list output schemas, which
# an Apps host needs to render them; their descriptions are one line each. show_job grew
# with the job's cost and token totals (issue 13), which its view shows. run_job (issue 12)
# returns the job detail too; approve the job summary. estimate grew with
# critical_path_total and cost_sheets, which say what its capped lists and its cost leave out.
# The job detail's follow_up (what became of its on_success follow-up: a status enum and four
# fields, ~230 characters of schema) grew show_job and run_job, and status beyond the first
# surface's half by FIRST_SURFACE_GROWTH.
ADDED_TOOL_BUDGETS = {
    "diagnose": 2_100, "estimate": 1_900, "show_job": 1_900, "show_jobs": 1_200, "approve": 1_150,
    "run_job": 2_200,
}  # fmt: skip
FIRST_SURFACE_GROWTH = 215
FIRST_SURFACE_BUDGET = TOOLS_LIST_BEFORE // 2 + FIRST_SURFACE_GROWTH
TOOLS_LIST_BUDGET = FIRST_SURFACE_BUDGET + sum(ADDED_TOOL_BUDGETS.values())

FAKE_AGENT_PROFILE = """\
name: fake-agent
description: bash standing in for an AI CLI that takes a model and permission modes
executable: bash
args: ["-c", "{prompt}"]
prompt_via: argv
model_flag: "--model"
permission_flags: {accept-edits: [], bypass: []}
"""

FAKE_CLAUDE = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "2.1.0 (fake)"; exit 0; fi
cat >/dev/null
echo '{"result": "done", "is_error": false}'
"""


async def _serve(
    conductor: Conductor, mode: str = "auto", **client_args: Any
) -> AsyncIterator[Client]:
    server = PodiumServer(conductor)
    async with server.running(), Client(server.mcp, mode=mode, **client_args) as client:
        yield client


@pytest.fixture(params=["auto", "legacy"])
async def client(request: pytest.FixtureRequest, conductor: Conductor) -> AsyncIterator[Client]:
    async for c in _serve(conductor, request.param):
        yield c


@pytest.fixture
async def agent_conductor(
    make_config: Callable[..., PodiumConfig], home: Path, tmp_path: Path
) -> AsyncIterator[Conductor]:
    """A conductor with a user profile that takes a model and permission modes, and a fake
    `claude` on PATH (the instrument the description's example names)."""
    (home / "instruments").mkdir(exist_ok=True)
    (home / "instruments" / "fake-agent.yaml").write_text(FAKE_AGENT_PROFILE)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "claude").write_text(FAKE_CLAUDE)
    (bin_dir / "claude").chmod(0o755)
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{old_path}"
    try:
        c = Conductor(make_config())
        await c.start()
        try:
            yield c
        finally:
            await c.stop()
    finally:
        os.environ["PATH"] = old_path


@pytest.fixture
async def agent_client(agent_conductor: Conductor) -> AsyncIterator[Client]:
    async for c in _serve(agent_conductor):
        yield c


def text_of(result: CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, TextContent))


async def ok(client: Client, tool: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    result = await client.call_tool(tool, args or {})
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


async def tool_error(client: Client, tool: str, args: dict[str, Any]) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    return text_of(result)


async def wait_done(client: Client, job_id: str, timeout: float = 30) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while True:
            detail = await ok(client, "status", {"job_id": job_id, "wait_seconds": 5})
            if detail["status"] in {"completed", "failed", "cancelled"}:
                return detail


# ----- the spec format through MCP ---------------------------------------------------------


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        resolved: dict[str, Any] = root["$defs"][ref.removeprefix("#/$defs/")]
        return resolved
    return schema


def sample(
    schema: dict[str, Any], root: dict[str, Any], overrides: dict[str, Any], path: str = ""
) -> Any:
    """A value for `schema` with every property filled in: the field's first example when
    the schema gives one, otherwise the smallest value its type and bounds allow. A string
    with a pattern and no example is a failure: the schema must show agents a valid value."""
    schema = _resolve(schema, root)
    if "examples" in schema:
        return copy.deepcopy(schema["examples"][0])
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return next(v for v in schema["enum"] if v is not None)
    if "anyOf" in schema:
        member = next(m for m in schema["anyOf"] if m.get("type") != "null")
        return sample(member, root, overrides, path)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    if kind == "object" or "properties" in schema:
        out: dict[str, Any] = {}
        for name, prop in schema.get("properties", {}).items():
            where = f"{path}.{name}" if path else name
            out[name] = (
                overrides[name] if name in overrides else sample(prop, root, overrides, where)
            )
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and not out:
            out["sample_key"] = sample(extra, root, overrides, f"{path}.sample_key")
        return out
    if kind == "array":
        items = schema.get("items", {})
        variants = items.get("oneOf") if isinstance(items, dict) else None
        if variants:  # a discriminated union: one of each kind
            return [sample(v, root, overrides, f"{path}.{i}") for i, v in enumerate(variants)]
        count = max(1, schema.get("minItems", 1))
        return [sample(items, root, overrides, f"{path}.{i}") for i in range(count)]
    if kind == "string":
        assert "pattern" not in schema, f"{path}: a pattern but no example to show agents"
        return "x" * max(1, schema.get("minLength", 1))
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
        return max(low, 1) if "maximum" not in schema else min(max(low, 1), schema["maximum"])
    if kind == "boolean":
        return True
    raise AssertionError(f"{path}: no sample for {schema}")


def sample_specs(schema: dict[str, Any], overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """One spec per sheet form the schema's top-level `oneOf` offers."""
    full = sample(schema, schema, overrides)
    specs = []
    forms = [set(alt["required"]) for alt in schema["oneOf"]]
    for form in forms:
        others = set().union(*(f for f in forms if f is not form)) - form
        specs.append({k: v for k, v in full.items() if k not in others})
    return specs


async def test_spec_schema_resource_generates_a_spec_that_validates(
    agent_client: Client,
) -> None:
    result = await agent_client.read_resource("podium://spec/schema")
    (content,) = result.contents
    assert content.mime_type == "application/json"
    schema = json.loads(getattr(content, "text", ""))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert {"name", "sheets", "sheet", "prompt", "instrument_config"} <= set(schema["properties"])

    specs = sample_specs(schema, {"instrument": "fake-agent"})
    assert {"sheets" in s for s in specs} == {True, False}
    for spec in specs:
        jsonschema.validate(spec, schema)  # the generated spec is what the schema describes
        report = await ok(agent_client, "validate_spec", {"spec": spec})
        assert report["valid"] is True, (spec, report["errors"])
        assert report["sheets"]
    explicit = next(s for s in specs if "sheets" in s)
    # Every field of a sheet and of each validation type was filled in.
    sheet = explicit["sheets"][0]
    assert set(sheet) == set(schema["$defs"]["SheetSpec"]["properties"])
    kinds = {v["type"] for v in sheet["validations"]}
    assert kinds == {
        "file_exists",
        "file_modified",
        "content_contains",
        "content_regex",
        "command_succeeds",
    }


async def test_the_example_in_submit_jobs_description_validates(agent_client: Client) -> None:
    tools = {t.name: t for t in (await agent_client.list_tools()).tools}
    description = tools["submit_job"].description or ""
    assert "podium://spec/schema" in description
    example = description.split("Example:\n", 1)[1].split("\nRules:", 1)[0]
    assert yaml.safe_load(example)["sheets"], example
    report = await ok(agent_client, "validate_spec", {"spec_yaml": example})
    assert report["valid"] is True, report["errors"]
    assert [s["instrument"] for s in report["sheets"]] == ["shell", "claude-code"]
    assert report["sheets"][1]["depends_on"] == [1]


async def test_spec_from_task_prompt_carries_the_format(client: Client) -> None:
    prompts = {p.name: p for p in (await client.list_prompts()).prompts}
    assert set(prompts) == {"spec_from_task"}
    result = await client.get_prompt("spec_from_task", {"task": "count the files in /etc"})
    text = "\n".join(getattr(m.content, "text", "") for m in result.messages)
    assert "count the files in /etc" in text
    assert "validate_spec" in text and "podium://spec/schema" in text and "sheets:" in text


# ----- every spec error at once ------------------------------------------------------------


async def test_field_template_and_instrument_errors_in_one_answer(client: Client) -> None:
    spec = {
        "name": "three-stages",
        "instrument": "no-such-cli",
        "sheets": [
            {
                "prompt": "echo {{ typo_name }}",
                "validations": [{"type": "file_exists"}],  # missing path: a field error
            }
        ],
    }
    report = await ok(client, "validate_spec", {"spec": spec})
    assert report["valid"] is False
    errors = {e["path"]: e["message"] for e in report["errors"]}
    assert "missing required field 'path'" in errors["sheets.0.validations.0.path"]
    assert "typo_name" in errors["sheets.0.prompt"]
    assert "no-such-cli" in errors["instrument"] and "unknown instrument" in errors["instrument"]
    message = await tool_error(client, "submit_job", {"spec": spec})
    for path in ("sheets.0.validations.0.path:", "sheets.0.prompt:", "instrument:"):
        assert path in message, message


async def test_template_syntax_error_beside_a_field_error(client: Client) -> None:
    spec = {
        "name": "syntax",
        "priority": 99,
        "sheets": [
            {"prompt": "echo {{ unclosed", "validations": [{"type": "file_exists", "path": "a"}]}
        ],
    }
    errors = {
        e["path"]: e["message"]
        for e in (await ok(client, "validate_spec", {"spec": spec}))["errors"]
    }
    assert "priority" in errors
    assert "syntax" in errors["sheets.0.prompt"]


async def test_a_cycle_is_reported_beside_a_field_error(client: Client) -> None:
    spec = {
        "name": "cyclic",
        "priority": 0,
        "sheets": [
            {"name": "a", "prompt": "true", "depends_on": ["b"]},
            {"name": "b", "prompt": "true", "depends_on": ["a"]},
        ],
    }
    report = await ok(client, "validate_spec", {"spec": spec})
    errors = {e["path"]: e["message"] for e in report["errors"]}
    assert "priority" in errors
    assert errors["sheets.0.depends_on"] == "cycle: a -> b -> a"


@pytest.mark.parametrize(
    ("spec", "path", "hint"),
    [
        ({"timeout_seconds": 60}, "timeout_seconds", "instrument_config"),
        ({"max_retries": 3}, "max_retries", "under retry"),
        ({"depends_on": [1]}, "depends_on", "on a sheet"),
        ({"size": 5}, "size", "under sheet"),
    ],
)
async def test_misplaced_fields_say_where_they_belong(
    client: Client, spec: dict[str, Any], path: str, hint: str
) -> None:
    full = {"name": "misplaced", "sheets": [{"prompt": "true"}], **spec}
    errors = {
        e["path"]: e["message"]
        for e in (await ok(client, "validate_spec", {"spec": full}))["errors"]
    }
    assert hint in errors[path], errors


async def test_sheet_level_job_fields_and_instrument_settings_get_hints(client: Client) -> None:
    spec = {"name": "m", "sheets": [{"prompt": "true", "retry": {}, "env": {"A": "1"}}]}
    errors = {
        e["path"]: e["message"]
        for e in (await ok(client, "validate_spec", {"spec": spec}))["errors"]
    }
    assert "top level" in errors["sheets.0.retry"]
    assert "this sheet's instrument_config" in errors["sheets.0.env"]


async def test_a_json_string_as_spec_points_to_spec_yaml(client: Client) -> None:
    message = await tool_error(client, "validate_spec", {"spec": '{"name": "x"}'})
    assert message.startswith("spec:") and "spec_yaml" in message, message


# ----- outputs by sheet name ------------------------------------------------------------------


async def test_outputs_by_sheet_name_render_at_run_time(client: Client) -> None:
    spec = {
        "name": "by-name",
        "sheets": [
            {"name": "first", "prompt": "echo alpha"},
            {
                "name": "second",
                "depends_on": ["first"],
                "prompt": "echo got {{ outputs.first | trim }} and {{ outputs['first'] | trim }}",
            },
        ],
    }
    job = await ok(client, "submit_job", {"spec": spec})
    done = await wait_done(client, job["job_id"])
    assert done["status"] == "completed", done
    assert done["sheets"][1]["output_tail"].strip() == "got alpha and alpha"


async def test_outputs_of_a_non_ancestor_is_a_submit_error(client: Client) -> None:
    spec = {
        "name": "not-ancestor",
        "sheets": [{"name": "a", "prompt": "true"}, {"prompt": "echo {{ outputs.a }}"}],
    }
    errors = {
        e["path"]: e["message"]
        for e in (await ok(client, "validate_spec", {"spec": spec}))["errors"]
    }
    assert "not an ancestor" in errors["sheets.1.prompt"]
    assert "depends_on" in errors["sheets.1.prompt"]


# ----- tokens -------------------------------------------------------------------------------


async def test_tools_list_stays_within_its_budget(client: Client) -> None:
    listed = await client.list_tools()
    wire = listed.model_dump(mode="json", by_alias=True, exclude_none=True)
    size = len(json.dumps(wire, separators=(",", ":")))
    print(f"tools/list: {size} characters (before the diet: {TOOLS_LIST_BEFORE})")
    assert size <= TOOLS_LIST_BUDGET, f"tools/list grew to {size} > {TOOLS_LIST_BUDGET}"
    sizes = {t.name: len(json.dumps(t.model_dump(mode="json", by_alias=True, exclude_none=True),
                                    separators=(",", ":"))) for t in listed.tools}  # fmt: skip
    assert set(sizes) == FIRST_SURFACE | set(ADDED_TOOL_BUDGETS), "a tool without a budget"
    first = sum(n for name, n in sizes.items() if name in FIRST_SURFACE)
    assert first <= FIRST_SURFACE_BUDGET, f"the first eleven tools grew to {first}"
    for name, budget in ADDED_TOOL_BUDGETS.items():
        assert sizes[name] <= budget, f"{name}: {sizes[name]} > {budget}"
    for tool in listed.tools:
        # Source indentation of docstrings is gone (the YAML example's own two-space
        # indentation is part of the example).
        assert "\n    " not in (tool.description or ""), f"{tool.name}: indented description"
        assert '"title"' not in json.dumps(tool.input_schema), tool.name


async def test_result_text_is_compact_json_and_logs_text_is_the_log(client: Client) -> None:
    spec = {"name": "chatty", "sheets": [{"prompt": "for i in 1 2 3; do echo line-$i; done"}]}
    job = await ok(client, "submit_job", {"spec": spec})
    await wait_done(client, job["job_id"])
    result = await client.call_tool("status", {"job_id": job["job_id"]})
    text = text_of(result)
    assert json.loads(text) == result.structured_content
    assert text == json.dumps(result.structured_content, separators=(",", ":"), ensure_ascii=False)
    logs = await client.call_tool("logs", {"job_id": job["job_id"], "sheet": 1})
    assert logs.structured_content is not None
    assert text_of(logs) == logs.structured_content["text"]
    assert "line-1\nline-2\nline-3" in text_of(logs)


async def test_truncated_logs_text_says_how_to_read_on(client: Client) -> None:
    spec = {"name": "long", "sheets": [{"prompt": "seq 1 500"}]}
    job = await ok(client, "submit_job", {"spec": spec})
    await wait_done(client, job["job_id"])
    logs = await client.call_tool("logs", {"job_id": job["job_id"], "sheet": 1, "tail_lines": 5})
    content = logs.structured_content
    assert content is not None and content["truncated"] is True
    assert text_of(logs).startswith(content["text"])
    assert "[podium: log truncated" in text_of(logs)


# ----- single values where lists are taken ----------------------------------------------------


async def test_a_single_status_is_accepted_wherever_a_list_is(client: Client) -> None:
    done = await ok(client, "submit_job", {"spec": {"name": "one", "sheets": [{"prompt": "true"}]}})
    await wait_done(client, done["job_id"])
    await ok(
        client,
        "submit_job",
        {"spec": {"name": "two", "sheets": [{"prompt": "true"}]}, "start": False},
    )
    listed = await ok(client, "list_jobs", {"status": "completed"})
    assert [j["job_id"] for j in listed["jobs"]] == [done["job_id"]]
    sheets = await ok(client, "status", {"job_id": done["job_id"], "sheet_status": "completed"})
    assert [s["sheet_num"] for s in sheets["sheets"]] == [1]
    cleared = await ok(client, "clear", {"statuses": "completed"})
    assert cleared["job_ids"] == [done["job_id"]]
    tools = {t.name: t for t in (await client.list_tools()).tools}
    for tool, arg in (("list_jobs", "status"), ("status", "sheet_status"), ("clear", "statuses")):
        members = tools[tool].input_schema["properties"][arg]["anyOf"]
        assert [m.get("type") == "array" for m in members] == [False, True], (tool, members)
    message = await tool_error(client, "list_jobs", {"status": "sleeping"})
    assert message.startswith("status"), message


# ----- protocol errors ------------------------------------------------------------------------


async def test_unknown_tool_is_invalid_params(client: Client) -> None:
    with pytest.raises(MCPError) as info:
        await client.call_tool("submit_jobs", {})
    assert info.value.code == INVALID_PARAMS
    assert "'submit_jobs' not found" in info.value.message
    assert "did you mean 'submit_job'" in info.value.message


async def test_unknown_prompt_is_invalid_params(client: Client) -> None:
    with pytest.raises(MCPError) as info:
        await client.get_prompt("no-such-prompt")
    assert info.value.code == INVALID_PARAMS
    assert (
        "'no-such-prompt' not found" in info.value.message
        and "spec_from_task" in info.value.message
    )


async def test_subscribe_to_an_unknown_job_is_not_found(conductor: Conductor) -> None:
    async for legacy in _serve(conductor, "legacy"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            with pytest.raises(MCPError) as info:
                await legacy.subscribe_resource("podium://jobs/ghost-job/checkpoint")
            assert info.value.code == INVALID_PARAMS
            assert "'ghost-job' not found" in info.value.message
            with pytest.raises(MCPError) as info:
                await legacy.subscribe_resource("podium://nothing/here")
            assert info.value.code == INVALID_PARAMS and "not found" in info.value.message
            job = await ok(
                legacy,
                "submit_job",
                {"spec": {"name": "s", "sheets": [{"prompt": "true"}]}, "start": False},
            )
            await legacy.subscribe_resource(f"podium://jobs/{job['job_id']}/checkpoint")
            await legacy.subscribe_resource("podium://jobs")


async def test_unknown_job_sheet_and_snapshot_say_not_found(client: Client) -> None:
    message = await tool_error(client, "status", {"job_id": "ghost"})
    assert "job 'ghost' not found" in message
    job = await ok(client, "submit_job", {"spec": {"name": "q", "sheets": [{"prompt": "true"}]}})
    await wait_done(client, job["job_id"])
    message = await tool_error(client, "logs", {"job_id": job["job_id"], "sheet": 9})
    assert "sheet 9" in message and "not found" in message
    with pytest.raises(MCPError) as info:
        await client.read_resource(f"podium://snapshots/{job['job_id']}/20990101T000000000000Z")
    assert "not found" in info.value.message


# ----- progress while waiting -------------------------------------------------------------------


async def test_status_wait_reports_progress_on_sheet_transitions(client: Client) -> None:
    spec = {
        "name": "three-steps",
        "sheets": [
            {"name": "one", "prompt": "sleep 1"},
            {"name": "two", "prompt": "sleep 1", "depends_on": ["one"]},
            {"name": "three", "prompt": "sleep 1", "depends_on": ["two"]},
        ],
    }
    job = await ok(client, "submit_job", {"spec": spec})
    with anyio.fail_after(15):  # the wait below must see the job end, not it start
        while (await ok(client, "status", {"job_id": job["job_id"]}))["status"] != "running":
            await anyio.sleep(0.05)
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    started = time.monotonic()
    result = await client.call_tool(
        "status", {"job_id": job["job_id"], "wait_seconds": 30}, progress_callback=on_progress
    )
    elapsed = time.monotonic() - started
    assert result.structured_content is not None
    assert result.structured_content["status"] == "completed"
    assert elapsed < 5 * 2, f"the wait took {elapsed:.1f}s for a ~3s job"
    assert seen, "no progress notification before the wait returned"
    progress = [p for p, _ in seen]
    assert progress == sorted(progress), "progress must not go backwards"
    assert any(m and "sheets completed" in m for _, m in seen), seen


async def test_listening_to_an_unknown_job_is_not_found(conductor: Conductor) -> None:
    async for modern in _serve(conductor, "auto"):
        with pytest.raises(MCPError) as info:
            async with modern.listen(
                resource_subscriptions=["podium://jobs/ghost-job/checkpoint"]
            ) as sub:
                async for _ in sub:
                    break
        assert info.value.code == INVALID_PARAMS
        assert "'ghost-job' not found" in info.value.message
        job = await ok(
            modern, "submit_job", {"spec": {"name": "l", "sheets": [{"prompt": "true"}]}}
        )
        uri = f"podium://jobs/{job['job_id']}/checkpoint"
        async with modern.listen(resource_subscriptions=[uri, "podium://jobs"]):
            pass


async def test_instructions_point_to_the_spec_format(conductor: Conductor) -> None:
    async for legacy in _serve(conductor, "legacy"):
        text = legacy.instructions
        assert text and "\n" not in text
        assert "podium://spec/schema" in text and "spec_from_task" in text
        assert "wait_seconds" in text and "always present" in text


async def test_a_single_status_refused_names_the_argument_and_the_value(client: Client) -> None:
    """A bare value that is not a status is reported as that argument (no `.0` of a list the
    caller never wrote), with the value given and the closest status; in a list, the item."""
    single = await tool_error(client, "list_jobs", {"status": "complete"})
    assert single.startswith("status: Input should be 'queued'"), single
    assert "(got 'complete'; did you mean 'completed'?)" in single, single
    sheet = await tool_error(client, "status", {"job_id": "x", "sheet_status": "fail"})
    assert sheet.startswith("sheet_status: ") and "did you mean 'failed'" in sheet, sheet
    listed = await tool_error(client, "clear", {"statuses": ["completed", "bogus"]})
    assert listed.startswith("statuses.1: ") and "(got 'bogus')" in listed, listed

"""A tool's text argument reaches the tool as the text the client sent. The SDK parses a
string argument as JSON before validating it unless the parameter is exactly `str`, so a
spec given as JSON text in `spec_yaml` was refused ("should be a valid string") and
`status(job_id="null")` answered with the conductor's status (server/sdk_seams.py:
keep_text_arguments)."""

from __future__ import annotations

import json

import pytest
from mcp import Client

from podium.core.conductor import Conductor
from podium.server.app import PodiumServer
from podium.server.tools import build_tools

pytestmark = pytest.mark.anyio

SPEC_JSON = json.dumps({"name": "as-json", "sheets": [{"prompt": "echo hi"}]})


def _text(result: object) -> str:
    return "\n".join(getattr(b, "text", "") for b in getattr(result, "content", []))


@pytest.mark.parametrize("mode", ["default", "legacy"])
async def test_text_that_looks_like_json_arrives_as_text(conductor: Conductor, mode: str) -> None:
    server = PodiumServer(conductor)
    kwargs = {"mode": "legacy"} if mode == "legacy" else {}
    async with server.running(), Client(server.mcp, **kwargs) as client:
        report = await client.call_tool("validate_spec", {"spec_yaml": SPEC_JSON})
        assert not report.is_error, _text(report)
        assert report.structured_content is not None and report.structured_content["valid"]
        # YAML text that is also JSON null / a JSON list: the spec's own error, not the SDK's.
        for text, found in (("null", "an empty document"), ("[1, 2]", "a list")):
            refused = await client.call_tool("validate_spec", {"spec_yaml": text})
            assert refused.structured_content is not None, _text(refused)
            assert found in refused.structured_content["errors"][0]["message"]

        submitted = await client.call_tool("submit_job", {"spec_yaml": SPEC_JSON, "start": False})
        assert not submitted.is_error, _text(submitted)
        assert submitted.structured_content is not None
        job_id = submitted.structured_content["job_id"]
        assert job_id.startswith("as-json-")

        # Job ids that JSON would read as null, a list, a number or a boolean stay ids.
        for odd in ("null", "[1]", "{}", "123", "true"):
            answer = await client.call_tool("status", {"job_id": odd})
            assert answer.is_error, _text(answer)
            assert f"job {odd!r} not found" in _text(answer)


async def test_every_text_parameter_keeps_its_text(conductor: Conductor) -> None:
    # Straight through the SDK's argument handling, for every tool: a string that the
    # parameter takes as it is (validated without the pre-parse) comes out as that string.
    for tool in build_tools(conductor):
        model = tool.fn_metadata.arg_model
        for name, field in model.model_fields.items():
            key = field.alias or name
            for text in ("null", "[1]", '{"a": 1}', "{}"):
                try:
                    as_sent = model.model_validate({key: text}).model_dump_one_level()[key]
                except ValueError:
                    continue  # not a text parameter
                if as_sent != text:
                    continue
                validated = tool.fn_metadata.validate_arguments({key: text})
                assert validated[key] == text, (tool.name, name, text)

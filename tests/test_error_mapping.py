"""Issue 10, item 7: every hostile argument gets a specific, readable error naming what was
wrong, never the SDK's bare "Error executing tool X" or a -32603."""

from __future__ import annotations

import pytest
from hostile import served, text_of
from mcp.shared.exceptions import MCPError

from podium.core.conductor import Conductor

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

BARE = "Error executing tool"
CASES = [
    ("clear", {"older_than_hours": 1e300}, "older_than_hours"),
    ("submit_job", {"path": "spec\0.yaml"}, "NUL"),
    ("validate_spec", {"path": "spec\0.yaml"}, "NUL"),
    ("submit_job", {"spec_yaml": "name: x\nvariables: {a: " + "[" * 5000 + "]" * 5000 + "}"},
     "nested deeper"),
    ("validate_spec", {"spec_yaml": "[" * 5000 + "]" * 5000}, "nested deeper"),
    ("logs", {"job_id": "JOB", "sheet": 2**63}, "sheet"),
    ("logs", {"job_id": "JOB", "offset": 2**70}, "offset"),
    ("status", {"job_id": "JOB", "sheet_offset": 2**63}, "sheet_offset"),
]  # fmt: skip


async def test_hostile_arguments_get_specific_errors(conductor: Conductor) -> None:
    job = await conductor.submit_job(spec={"name": "one", "sheets": [{"prompt": "true"}]})
    async with served(conductor, clients=1) as s:
        for tool, args, expected in CASES:
            args = {k: (job.job_id if v == "JOB" else v) for k, v in args.items()}
            result = await s.call(tool, args)
            message = text_of(result)
            if tool == "validate_spec" and not result.is_error:
                report = result.structured_content or {}
                message = str(report.get("errors"))
                assert report.get("valid") is False, (tool, args)
            else:
                assert result.is_error, (tool, args)
            assert message.strip() and expected in message, (tool, message)
            assert BARE not in message or ":" in message.split(BARE, 1)[1], message
            assert "Traceback" not in message
        with pytest.raises(MCPError) as caught:
            await s.clients[0].read_resource(f"podium://jobs/{job.job_id}/sheets/{'9' * 23}/log")
        assert "not found" in str(caught.value)
        assert (await s.call("status", {})).is_error is False  # the server lives on

"""The MCP prompt: turn a task described in words into a Podium job spec.

One prompt, because it is the step agents and people most often get wrong by hand: the spec
format. It carries the example and rules of `submit_job`'s description and points at the
schema resource, so the model that answers it can write a spec that validates first time.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from podium.server.tools import SPEC_EXAMPLE, SPEC_RULES

SPEC_FROM_TASK = "spec_from_task"
PROMPT_NAMES = (SPEC_FROM_TASK,)


def spec_request(task: str, instrument: str = "shell") -> str:
    return (
        "Write a Podium job spec (YAML) for the task below, then check it with the "
        "validate_spec tool and fix every error it reports before calling submit_job.\n"
        f"Default instrument: {instrument}. Split the work into sheets that can run in "
        "parallel where they do not depend on each other; give each sheet validations that "
        "prove it did its job (exit code 0 alone is not success). The full JSON Schema is the "
        "resource podium://spec/schema.\n\n"
        f"Example:\n{SPEC_EXAMPLE}\n\n{SPEC_RULES}\n\nTask:\n{task}"
    )


def register_prompts(mcp: MCPServer[Any]) -> None:
    @mcp.prompt(
        name=SPEC_FROM_TASK,
        title="Turn a task into a job spec",
        description="Ask for a Podium job spec that does the task, validated before submit",
    )
    def spec_from_task(
        task: Annotated[str, Field(description="what the job should do, in words")],
        instrument: Annotated[
            str, Field(description="default instrument, e.g. shell or claude-code")
        ] = "shell",
    ) -> str:
        return spec_request(task, instrument)

"""Spec models of what goes into a sheet's prompt besides its own template (issue 17):
prelude and cadenza files, and context from earlier sheets."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field

from podium.core.spec.base import NonBlankStr, SpecModel

MAX_CONTEXT_BYTES = 65536
MAX_INJECTED_FILES = 32
MAX_CAPTURED_FILES = 32


class InjectionItem(SpecModel):
    """A file whose contents go into the prompt: `skill` and `tool` files before the task,
    `context` files after it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    file: NonBlankStr = Field(
        description="a template; relative to the spec file's folder (the workspace for an "
        "inline spec); must stay inside one of them",
        examples=["guide.md"],
    )
    as_: Literal["context", "skill", "tool"] = Field(
        default="context",
        alias="as",
        description="skill/tool: before the task; context: after it",
    )


def _from_path(data: Any) -> Any:
    # `prelude: [guide.md]` is short for `[{file: guide.md}]`.
    return {"file": data} if isinstance(data, str) else data


Injection = Annotated[
    InjectionItem, BeforeValidator(_from_path, json_schema_input_type=str | InjectionItem)
]


class ContextSpec(SpecModel):
    """Earlier sheets' output and files, for templates (`previous_outputs`,
    `previous_files`) and, with prompt assembly, appended to AI prompts."""

    previous_sheets: int = Field(
        default=3,
        ge=0,
        le=10000,
        description="how many sheets before this one (by number) are in previous_outputs "
        "(0: all of them); only sheets that have run count",
    )
    output_bytes: int = Field(
        default=4096,
        ge=1,
        le=MAX_CONTEXT_BYTES,
        description="the end of each earlier sheet's stdout kept, up to 65536",
    )
    files: list[NonBlankStr] = Field(
        default_factory=list,
        max_length=MAX_CAPTURED_FILES,
        description="workspace files read when a sheet starts (templates), in previous_files",
        examples=[["notes/sheet-{{ sheet_num - 1 }}.md"]],
    )

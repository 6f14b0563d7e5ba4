"""What every spec model shares: unknown fields are refused, so a misspelt key is an error
naming it instead of a silently ignored setting."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


NonBlankStr = Annotated[str, AfterValidator(_not_blank)]


def is_templated(text: str) -> bool:
    return "{{" in text or "{%" in text

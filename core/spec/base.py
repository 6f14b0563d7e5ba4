"""What every spec model shares: unknown fields are refused, so a misspelt key is an error
naming it instead of a silently ignored setting, and a boolean is never read as a number
(numbers.py); and the field types several models use."""

from __future__ import annotations

import posixpath
from typing import Annotated

from pydantic import AfterValidator, ConfigDict

from podium.core.errors import quoted
from podium.core.spec.numbers import NumbersNotBooleans


class SpecModel(NumbersNotBooleans):
    model_config = ConfigDict(extra="forbid")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


NonBlankStr = Annotated[str, AfterValidator(_not_blank)]


def is_templated(text: str) -> bool:
    return "{{" in text or "{%" in text


def climbs_out(value: str) -> bool:
    """Known before any sheet runs: a literal relative path that climbs out of the workspace
    can never pass, so it is a spec error now rather than a failed sheet later. Templated
    paths (and absolute ones, which depend on where the workspace resolves) are checked by
    the runner once rendered."""
    literal = not is_templated(value) and not value.startswith("/")
    return literal and posixpath.normpath(value).split("/")[0] == ".."


def _stays_in_workspace(value: str) -> str:
    if climbs_out(value):
        raise ValueError(
            f"path {quoted(value)} climbs out of the workspace; a validation path is "
            "relative to the workspace and must stay inside it"
        )
    return value


ValidationPath = Annotated[NonBlankStr, AfterValidator(_stays_in_workspace)]

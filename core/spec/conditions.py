"""Conditions that skip a sheet instead of running it (issue 17): `skip_when`, an expression
over the job's sheets, and `skip_when_command`, a command whose exit code decides.

A sheet skipped by a condition is `skipped` with the reason, and counts as done for its
dependents, which run.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from podium.core.spec.base import NonBlankStr, SpecModel

MAX_EXPRESSION_CHARS = 2000
MAX_CONDITION_SECONDS = 60

SkipWhen = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_EXPRESSION_CHARS),
    Field(
        description="a Jinja expression; true skips the sheet. Sees `sheets` (by number or "
        "name: status, output, error_category, attempts) and the template variables",
        examples=["sheets[1].status == 'failed'"],
    ),
]


class SkipWhenCommand(SpecModel):
    """Run before the sheet would start: exit 0 skips it; any other exit, a timeout or a
    command that cannot start runs it."""

    command: NonBlankStr = Field(
        description="bash command run in the workspace (a template); exit 0 skips the sheet",
        examples=["test -f skip.txt"],
    )
    timeout_seconds: float = Field(default=10, gt=0, le=MAX_CONDITION_SECONDS)
    description: str | None = Field(
        default=None, description="why it skips; shown in the skip reason", examples=["done"]
    )

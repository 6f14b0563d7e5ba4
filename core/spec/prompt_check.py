"""Submit-time checks of what prompt assembly reads: prelude, cadenza and captured-file
paths (templates whose values are known only when a sheet starts, so only their syntax, names
and, when plain, their confinement are checked here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Protocol

from podium.core.errors import FieldError
from podium.core.spec.base import is_templated
from podium.core.spec.models import BUILTIN_TEMPLATE_VARIABLES, JobSpec
from podium.core.spec.prompting import InjectionItem
from podium.core.spec.templating import RenderedSite, SheetLike, name_errors, render

# The one instrument whose prompt is a script; assembly never touches it.
SCRIPT_INSTRUMENT = "shell"
# Instruments whose prompt is never assembled: a script, or a question for a person.
_UNASSEMBLED = frozenset({SCRIPT_INSTRUMENT, "approval"})


def input_path_problem(path: str) -> str | None:
    """Why a prelude, cadenza or context file path is refused, or None."""
    if is_templated(path):
        return None  # known once rendered; confined then
    pure = PurePosixPath(path)
    if pure.is_absolute():
        return (
            f"{path!r} is absolute; give a path relative to the spec file's folder (or the "
            "workspace), or a template such as '{{ workspace }}/notes.md'"
        )
    if ".." in pure.parts:
        return f"{path!r} leaves its folder ('..'); files must stay inside it"
    return None


def check_prompt_inputs(spec: JobSpec) -> list[FieldError]:
    known = BUILTIN_TEMPLATE_VARIABLES | set(spec.variables)
    sites: list[tuple[str, str]] = [
        (f"prelude.{i}.file", p.file) for i, p in enumerate(spec.prelude)
    ]
    errors: list[FieldError] = []
    if spec.prelude and not spec.prompt_assembly:
        errors.append(
            FieldError("prelude", "the prelude goes into prompts only with prompt_assembly: true")
        )
    for i, sheet in enumerate(spec.sheets or []):
        if not sheet.cadenzas:
            continue
        where = f"sheets.{i}.cadenzas"
        if not spec.prompt_assembly:
            errors.append(
                FieldError(where, "cadenzas go into the prompt only with prompt_assembly: true")
            )
        if (sheet.instrument or spec.instrument) == SCRIPT_INSTRUMENT:
            errors.append(
                FieldError(where, "a shell sheet's prompt is a script: cadenzas cannot go in it")
            )
        sites.extend((f"{where}.{j}.file", c.file) for j, c in enumerate(sheet.cadenzas))
    if spec.context is not None:
        sites.extend((f"context.files.{i}", f) for i, f in enumerate(spec.context.files))
    for path, template in sites:
        problem = input_path_problem(template)
        if problem is not None:
            errors.append(FieldError(path, problem))
            continue
        errors.extend(name_errors(path, template, known))
    return errors


class _AssembledSheet(SheetLike, Protocol):
    @property
    def instrument(self) -> str: ...
    @property
    def cadenzas(self) -> tuple[InjectionItem, ...]: ...


def prompt_input_sites(spec: JobSpec, sheet: _AssembledSheet) -> Iterator[RenderedSite]:
    """The file templates a sheet renders when it starts (context files; for an assembled
    prompt, the prelude and its cadenzas), to be rendered with its own values at submit."""
    if spec.context is not None:
        for i, template in enumerate(spec.context.files):
            yield RenderedSite(f"context.files.{i}", template, render)
    if not spec.prompt_assembly or sheet.instrument in _UNASSEMBLED:
        return
    for i, item in enumerate(spec.prelude):
        yield RenderedSite(f"prelude.{i}.file", item.file, render)
    if spec.sheets is not None:
        for j, item in enumerate(sheet.cadenzas):
            yield RenderedSite(f"sheets.{sheet.stage - 1}.cadenzas.{j}.file", item.file, render)

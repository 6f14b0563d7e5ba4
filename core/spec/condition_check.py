"""Conditions of a loaded spec, per stage: where each one was written (for error paths) and
the checks that can be made at submit (syntax and undefined names; values only exist when
the sheet is about to start)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from podium.core.errors import FieldError
from podium.core.spec.conditions import SkipWhenCommand
from podium.core.spec.dag import Graph, resolve_ref
from podium.core.spec.expressions import constant_keys, evaluate, undefined_in_expression
from podium.core.spec.models import BUILTIN_TEMPLATE_VARIABLES, JobSpec
from podium.core.spec.sheet_reads import SHEETS_NAME, JobSheets, missing_sheet_errors
from podium.core.spec.templating import (
    RenderedSite,
    Renderer,
    SheetLike,
    TemplateContext,
    TemplateRenderError,
    context_variables,
    render,
    render_error,
    undefined_names,
)


@dataclass(frozen=True)
class StageConditions:
    skip_when: str | None = None
    skip_when_command: SkipWhenCommand | None = None
    expression_path: str = ""
    command_path: str = ""


def stage_conditions(
    spec: JobSpec, graph: Graph, errors: list[FieldError]
) -> list[StageConditions]:
    """Conditions by stage (index 0 is stage 1)."""
    if spec.sheets is not None:
        return [
            StageConditions(
                s.skip_when,
                s.skip_when_command,
                f"sheets.{i}.skip_when",
                f"sheets.{i}.skip_when_command.command",
            )
            for i, s in enumerate(spec.sheets)
        ]
    assert spec.sheet is not None
    out = [StageConditions() for _ in range(spec.stage_count)]
    for key, expr in spec.sheet.skip_when.items():
        stage = resolve_ref(key, graph)
        if isinstance(stage, str):
            errors.append(FieldError(f"sheet.skip_when.{key}", stage))
            continue
        old = out[stage - 1]
        out[stage - 1] = StageConditions(
            expr, old.skip_when_command, f"sheet.skip_when.{key}", old.command_path
        )
    for key, command in spec.sheet.skip_when_command.items():
        stage = resolve_ref(key, graph)
        if isinstance(stage, str):
            errors.append(FieldError(f"sheet.skip_when_command.{key}", stage))
            continue
        old = out[stage - 1]
        out[stage - 1] = StageConditions(
            old.skip_when, command, old.expression_path, f"sheet.skip_when_command.{key}.command"
        )
    return out


def check_conditions(spec: JobSpec, conditions: list[StageConditions]) -> list[FieldError]:
    known = BUILTIN_TEMPLATE_VARIABLES | set(spec.variables)
    errors: list[FieldError] = []
    for cond in conditions:
        sites = []
        if cond.skip_when is not None:
            sites.append((cond.expression_path, cond.skip_when, True))
        if cond.skip_when_command is not None:
            sites.append((cond.command_path, cond.skip_when_command.command, False))
        for path, source, is_expression in sites:
            allowed = known | {SHEETS_NAME} if is_expression else known
            try:
                missing = (
                    undefined_in_expression(source, allowed)
                    if is_expression
                    else [name for name, _ in undefined_names(source, allowed)]
                )
            except TemplateRenderError as exc:
                errors.append(FieldError(path, str(exc)))
                continue
            if missing:
                names = ", ".join(repr(n) for n in missing)
                errors.append(
                    FieldError(
                        path,
                        f"undefined name {names}; defined: {', '.join(sorted(allowed))}",
                    )
                )
    return errors


def check_sheet_reads(conditions: list[StageConditions], job: JobSheets) -> list[FieldError]:
    """Reads of sheets the job does not have, once it is expanded (sheet_reads.py)."""
    errors: list[FieldError] = []
    for cond in conditions:
        if cond.skip_when is not None:
            path, expression = cond.expression_path, cond.skip_when
            errors.extend(missing_sheet_errors(path, expression, job, len(errors)))
    return errors


class _PlaceholderSheet:
    """Any sheet of `sheets` at submit: its values exist only when the condition is decided,
    so every field reads as empty text."""

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return ""


class _PlaceholderSheets(Mapping[object, _PlaceholderSheet]):
    """`sheets` at submit: the job's own sheets, found by the same keys as at run time
    (engine/conditions.py), so `'plan' in sheets`, `sheets.get(...)` and iteration behave as
    they will then."""

    def __init__(self, job: JobSheets) -> None:
        self._job = job

    def __getitem__(self, key: object) -> _PlaceholderSheet:
        if not self._job.has(key):
            raise KeyError(key)
        return _PlaceholderSheet()

    def __contains__(self, key: object) -> bool:
        return self._job.has(key)

    def __iter__(self) -> Iterator[object]:
        return iter(range(1, self._job.count + 1))

    def __len__(self) -> int:
        return self._job.count


def _evaluator(job: JobSheets) -> Renderer:
    def evaluate_at_submit(source: str, ctx: TemplateContext, seconds: float) -> object:
        del seconds  # an expression has its own (smaller) budget
        values = context_variables(ctx)
        outputs = values["outputs"]
        for key, by_attribute in constant_keys(source, "outputs"):
            if by_attribute and hasattr(outputs, str(key)):
                continue  # a method (`outputs.get(...)`), not a sheet
            try:
                outputs[key]
            except Exception as exc:  # what the evaluation would raise for this read
                raise render_error(exc, lines=False) from None
        values[SHEETS_NAME] = _PlaceholderSheets(job)
        return evaluate(source, values)

    return evaluate_at_submit


def condition_sites(
    conditions: list[StageConditions], sheet: SheetLike, job: JobSheets
) -> Iterator[RenderedSite]:
    """A sheet's conditions, to be rendered with its own values at submit (the `outputs` it
    reads must be its ancestors', as in its prompt)."""
    if not 1 <= sheet.stage <= len(conditions):
        return
    cond = conditions[sheet.stage - 1]
    if cond.skip_when is not None:
        yield RenderedSite(cond.expression_path, cond.skip_when, _evaluator(job))
    if cond.skip_when_command is not None:
        yield RenderedSite(cond.command_path, cond.skip_when_command.command, render)

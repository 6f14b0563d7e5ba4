"""Checks on raw spec data, for a spec whose models do not validate: its form (sheets or a
batch), dependencies and cycles, template syntax and undefined names, and instruments, so
one answer lists every error of every stage instead of the model's alone."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from podium.core.errors import FieldError
from podium.core.spec.dag import Graph, add_dep, find_cycles
from podium.core.spec.instrument_check import InstrumentLookup
from podium.core.spec.models import (
    BUILTIN_TEMPLATE_VARIABLES,
    TEMPLATED_VALIDATION_FIELDS,
    form_errors,
)
from podium.core.spec.sheet_reads import JobSheets, missing_sheet_errors
from podium.core.spec.templating import name_errors


def raw_form_errors(raw: Mapping[str, Any]) -> list[FieldError]:
    sheets = raw.get("sheets")
    names: list[object] = []
    if isinstance(sheets, list):
        names = [s.get("name") if isinstance(s, Mapping) else None for s in sheets]
    problems = form_errors(
        has_sheets=sheets is not None,
        has_sheet=raw.get("sheet") is not None,
        has_prompt=raw.get("prompt") is not None,
        names=names,
    )
    return [FieldError(path, message) for path, message in problems]


def _raw_template_sites(raw: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(field path, template) of every template in raw spec data that is a string."""

    def validation_sites(prefix: str, validations: object) -> Iterator[tuple[str, str]]:
        if not isinstance(validations, list):
            return
        for j, item in enumerate(validations):
            if not isinstance(item, Mapping):
                continue
            fields = TEMPLATED_VALIDATION_FIELDS.get(str(item.get("type")), ())
            for name in fields:
                value = item.get(name)
                if isinstance(value, str):
                    yield f"{prefix}.{j}.{name}", value

    sheets = raw.get("sheets")
    if isinstance(sheets, list):
        for i, sheet in enumerate(sheets):
            if isinstance(sheet, Mapping):
                if isinstance(sheet.get("prompt"), str):
                    yield f"sheets.{i}.prompt", sheet["prompt"]
                yield from validation_sites(f"sheets.{i}.validations", sheet.get("validations"))
    prompt = raw.get("prompt")
    if isinstance(prompt, Mapping) and isinstance(prompt.get("template"), str):
        yield "prompt.template", prompt["template"]
    yield from validation_sites("validations", raw.get("validations"))


def _raw_instrument_errors(
    raw: Mapping[str, Any], reported: set[str], lookup: InstrumentLookup
) -> list[FieldError]:
    """Unknown or unusable instruments named in raw spec data."""
    sheets = raw.get("sheets")
    sheet_list = sheets if isinstance(sheets, list) else []
    named: list[tuple[str, object]] = []
    default_used = not sheet_list  # the batch form uses the job's instrument
    for i, sheet in enumerate(sheet_list):
        own = sheet.get("instrument") if isinstance(sheet, Mapping) else None
        if own is None:
            default_used = True
        else:
            named.append((f"sheets.{i}.instrument", own))
    if default_used:
        named.insert(0, ("instrument", raw.get("instrument", "shell")))
    errors: list[FieldError] = []
    problems: dict[str, str | None] = {}
    for path, name in named:
        if path in reported or not isinstance(name, str) or not name:
            continue
        if name not in problems:
            problems[name] = lookup(name).problem
        problem = problems[name]
        if problem is not None:
            errors.append(FieldError(path, problem))
    return errors


def _raw_sheet_read_errors(sheets: list[Any], reported: set[str]) -> list[FieldError]:
    """Conditions reading sheets the job does not have (sheet_reads.py), when the sheets it
    expands to can be told from the raw data."""
    job = JobSheets.from_raw(sheets)
    if job is None:
        return []
    errors: list[FieldError] = []
    for i, sheet in enumerate(sheets):
        path, expression = f"sheets.{i}.skip_when", sheet.get("skip_when")
        if isinstance(expression, str) and path not in reported:
            errors.extend(missing_sheet_errors(path, expression, job, len(errors)))
    return errors


def salvage_errors(
    raw: Mapping[str, Any], reported: set[str], instruments: InstrumentLookup | None
) -> list[FieldError]:
    """When the model itself is invalid, still check what can be checked on the raw data
    (dependency references, template syntax and undefined names, instruments), so one answer
    lists every error of every stage. Paths already reported are skipped; this pass is
    best-effort and never raises."""
    errors: list[FieldError] = []
    sheets = raw.get("sheets")
    if isinstance(sheets, list):
        names = {
            s["name"]: i + 1
            for i, s in enumerate(sheets)
            if isinstance(s, Mapping) and isinstance(s.get("name"), str)
        }
        graph = Graph(
            len(sheets),
            names,
            [set() for _ in range(len(sheets) + 1)],
            {},
            {n: name for name, n in names.items()},
        )
        for i, sheet in enumerate(sheets):
            deps = sheet.get("depends_on") if isinstance(sheet, Mapping) else None
            if isinstance(deps, list):
                for j, ref in enumerate(deps):
                    path = f"sheets.{i}.depends_on.{j}"
                    if (
                        path not in reported
                        and isinstance(ref, int | str)
                        and not isinstance(ref, bool)
                    ):
                        add_dep(graph, i + 1, ref, path, errors)
            graph.cycle_paths[i + 1] = f"sheets.{i}.depends_on"
        for cycle in find_cycles(graph):
            chain = " -> ".join(graph.label(n) for n in [*cycle, cycle[0]])
            errors.append(FieldError(graph.cycle_paths[cycle[0]], f"cycle: {chain}"))
        errors.extend(_raw_sheet_read_errors(sheets, reported))
    variables = raw.get("variables")
    known = BUILTIN_TEMPLATE_VARIABLES | (
        {str(k) for k in variables} if isinstance(variables, Mapping) else set()
    )
    known_list = ", ".join(sorted(known))
    for path, template in _raw_template_sites(raw):
        if path in reported:
            continue
        try:
            errors.extend(name_errors(path, template, known, known_list))
        except Exception:  # best effort: anything else is left to the full check
            continue
    if instruments is not None:
        errors.extend(_raw_instrument_errors(raw, reported, instruments))
    return errors

"""Load a job spec from a mapping, YAML/JSON text or a file, and expand it into sheets.

Every problem is collected and raised together in one `SpecError`, so an agent can fix a
spec in one round trip instead of one error per submit. The text is read and parsed by
source.py; a spec whose models do not validate is still checked on its raw data
(salvage.py); a valid one is expanded here and checked against its instruments
(instrument_check.py), conditions, prompt inputs and templates.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from podium.core import jsondata
from podium.core.errors import FieldError, SpecError
from podium.core.spec.base import is_templated
from podium.core.spec.bounds import check_text, check_value
from podium.core.spec.condition_check import (
    StageConditions,
    check_conditions,
    check_sheet_reads,
    condition_sites,
    stage_conditions,
)
from podium.core.spec.conditions import SkipWhenCommand
from podium.core.spec.dag import ancestor_bits, build_graph, find_cycles
from podium.core.spec.fanout import (
    Slot,
    check_names,
    expand_deps,
    instance_name,
    layout,
    sheet_graph,
    stage_counts,
)
from podium.core.spec.field_errors import describe_kind, field_errors
from podium.core.spec.instrument_check import InstrumentLookup, check_instruments
from podium.core.spec.models import (
    BUILTIN_TEMPLATE_VARIABLES,
    MAX_SHEETS,
    InstrumentConfig,
    JobSpec,
    Validation,
    merge_instrument_config,
)
from podium.core.spec.prompt_check import check_prompt_inputs, prompt_input_sites
from podium.core.spec.prompting import InjectionItem
from podium.core.spec.salvage import raw_form_errors, salvage_errors
from podium.core.spec.sheet_reads import JobSheets
from podium.core.spec.source import parse_yaml, read_spec_file
from podium.core.spec.storable import spec_to_storable
from podium.core.spec.templating import (
    PLACEHOLDER_JOB_ID,
    PLACEHOLDER_WORKSPACE,
    RenderedSite,
    TemplateContext,
    TemplateRenderError,
    check_templates,
    render,
    undefined_names,
)
from podium.core.spec.text_values import text_errors


@dataclass(frozen=True)
class ResolvedSheet:
    sheet_num: int  # 1-based
    name: str | None
    prompt: str  # the template, rendered per attempt
    depends_on: tuple[int, ...]
    instrument: str
    instrument_config: InstrumentConfig  # the job's block with the sheet's merged over it
    validations: tuple[Validation, ...]  # the sheet's own, then the job-level ones
    start_item: int | None = None  # batch form only; 1-based, inclusive
    end_item: int | None = None
    # Fan-out: the declared sheet (1-based position) this one is an instance of.
    stage: int = 0
    instance: int = 1
    fan_count: int = 1
    # Instruments to move to, in order, when `instrument` cannot do the work.
    fallbacks: tuple[str, ...] = ()
    # Files whose contents prompt assembly puts in this sheet's prompt.
    cadenzas: tuple[InjectionItem, ...] = ()
    # Conditions that skip the sheet (status `skipped`, its dependents run).
    skip_when: str | None = None
    skip_when_command: SkipWhenCommand | None = None


@dataclass(frozen=True)
class LoadedSpec:
    spec: JobSpec
    sheets: tuple[ResolvedSheet, ...]
    source_path: Path | None = None

    @property
    def total_sheets(self) -> int:
        return len(self.sheets)

    @functools.cached_property
    def sheet_numbers(self) -> dict[str, int]:
        """Sheet numbers by name (for `outputs.NAME`); computed once per loaded spec."""
        return {s.name: s.sheet_num for s in self.sheets if s.name is not None}

    def sheet(self, sheet_num: int) -> ResolvedSheet:
        return self.sheets[sheet_num - 1]

    def ancestors(self, sheet_num: int) -> frozenset[int]:
        """Every sheet `sheet_num` depends on, directly or not: whose `outputs` it may read."""
        seen: set[int] = set()
        todo = list(self.sheet(sheet_num).depends_on)
        while todo:
            num = todo.pop()
            if num not in seen:
                seen.add(num)
                todo.extend(self.sheet(num).depends_on)
        return frozenset(seen)

    def to_storable(self) -> dict[str, Any]:
        return spec_to_storable(self.spec)

    def fingerprint(self) -> str:
        return hashlib.sha256(jsondata.canonical(self.to_storable()).encode("utf-8")).hexdigest()


def _chain_tail(primary: str, own: list[str] | None, spec: JobSpec) -> tuple[str, ...]:
    """The fallbacks after `primary`, each once, never `primary` itself."""
    names = spec.fallbacks if own is None else own
    return tuple(n for n in dict.fromkeys(names) if n != primary)


def _expand(
    spec: JobSpec, slots: list[Slot], deps: list[set[int]], conditions: list[StageConditions]
) -> list[ResolvedSheet]:
    job_validations = tuple(spec.validations)
    out: list[ResolvedSheet] = []
    if spec.sheets is not None:
        for num, slot in enumerate(slots, start=1):
            s = spec.sheets[slot.stage - 1]
            out.append(
                ResolvedSheet(
                    sheet_num=num,
                    name=instance_name(s.name, slot),
                    prompt=s.prompt,
                    depends_on=tuple(sorted(deps[num])),
                    instrument=s.instrument or spec.instrument,
                    fallbacks=_chain_tail(s.instrument or spec.instrument, s.fallbacks, spec),
                    instrument_config=merge_instrument_config(
                        spec.instrument_config, s.instrument_config
                    ),
                    validations=tuple(s.validations) + job_validations,
                    cadenzas=tuple(s.cadenzas),
                    stage=slot.stage,
                    instance=slot.instance,
                    fan_count=slot.fan_count,
                    skip_when=conditions[slot.stage - 1].skip_when,
                    skip_when_command=conditions[slot.stage - 1].skip_when_command,
                )
            )
        return out
    assert spec.sheet is not None and spec.prompt is not None
    size, total = spec.sheet.size, spec.sheet.total_items
    for num, slot in enumerate(slots, start=1):
        out.append(
            ResolvedSheet(
                sheet_num=num,
                name=instance_name(f"sheet-{slot.stage}", slot),
                prompt=spec.prompt.template,
                depends_on=tuple(sorted(deps[num])),
                instrument=spec.instrument,
                fallbacks=_chain_tail(spec.instrument, None, spec),
                instrument_config=spec.instrument_config,
                validations=job_validations,
                start_item=(slot.stage - 1) * size + 1,
                end_item=min(slot.stage * size, total),
                stage=slot.stage,
                instance=slot.instance,
                fan_count=slot.fan_count,
                skip_when=conditions[slot.stage - 1].skip_when,
                skip_when_command=conditions[slot.stage - 1].skip_when_command,
            )
        )
    return out


# --- entry point -----------------------------------------------------------------------------


# What the follow-up's path can be made of: it is rendered once the job has ended, for no
# sheet in particular (core/job_hooks.py).
_CHAIN_NAMES = frozenset({"workspace", "job_id", "total_sheets"})


def _chain_errors(spec: JobSpec) -> list[FieldError]:
    if spec.on_success is None or not is_templated(spec.on_success.submit):
        return []
    path = "on_success.submit"
    known = _CHAIN_NAMES | set(spec.variables)
    try:
        missing = undefined_names(spec.on_success.submit, known)
    except TemplateRenderError as exc:
        return [FieldError(path, str(exc))]
    if missing:
        allowed = ", ".join(sorted(known))
        return [
            FieldError(
                path,
                (
                    f"{name!r} has no value when the job ends, where the follow-up's path is "
                    "rendered"
                    if name in BUILTIN_TEMPLATE_VARIABLES
                    else f"undefined template variable {name!r}"
                )
                + f"; it may use {allowed}",
            )
            for name, _ in missing
        ]
    ctx = TemplateContext(
        workspace=PLACEHOLDER_WORKSPACE,
        job_id=PLACEHOLDER_JOB_ID,
        sheet_num=0,
        total_sheets=0,
        sheet_name=None,
        start_item=None,
        end_item=None,
        variables=spec.variables,
        outputs={},
    )
    try:
        render(spec.on_success.submit, ctx)
    except TemplateRenderError as exc:
        if exc.kind in ("security", "syntax"):
            return [FieldError(path, str(exc))]
    return []


def load_spec(
    *,
    data: Mapping[str, Any] | None = None,
    text: str | None = None,
    path: str | Path | None = None,
    instruments: InstrumentLookup | None = None,
    stored: bool = False,
) -> LoadedSpec:
    """Validate a spec from exactly one source; raise `SpecError` listing every problem.

    `instruments(name)` tells whether an instrument can be used and what settings it takes.
    `stored`: the spec is a job's, accepted before and read back from the store (recovery,
    resume, end hooks). Checks that refuse only what would fail at run time anyway, and
    that an earlier version did not make, are not applied to it, so a job it accepted
    still loads and fails only where it did then (`skip_when` reading a sheet the job
    does not have fails that sheet).
    """
    if sum(source is not None for source in (data, text, path)) != 1:
        raise SpecError(
            [
                FieldError(
                    "",
                    "give exactly one of spec (a mapping), spec_yaml (YAML or JSON text) "
                    "or path (a spec file)",
                )
            ]
        )
    source_path = Path(path).expanduser().absolute() if path is not None else None
    raw: Any = data
    if source_path is not None:
        text = read_spec_file(source_path)
    if text is not None:
        check_text(text, "spec_yaml" if source_path is None else f"spec file {source_path}")
        raw = parse_yaml(text, source_path)
    check_value(raw)
    if not isinstance(raw, Mapping):
        found = "an empty document" if raw is None else describe_kind(raw)
        raise SpecError([FieldError("", f"a spec must be a mapping at the top level, got {found}")])

    errors = raw_form_errors(raw)
    # A stored spec is not held to it: a job accepted before this check fails at run time
    # where it did then.
    text_problems = [] if stored else text_errors(raw)
    errors.extend(text_problems)
    try:
        spec = JobSpec.model_validate(dict(raw))
    except ValidationError as exc:
        # A NUL in an env value is also the model's error; report it once.
        told = {e.path for e in text_problems}
        errors.extend(e for e in field_errors(exc) if e.path not in told)
        errors.extend(salvage_errors(raw, {e.path for e in errors}, instruments))
        raise SpecError(errors or [FieldError("", str(exc))]) from None
    if errors:
        raise SpecError(errors)

    graph = build_graph(spec, errors)
    cycles = find_cycles(graph)
    for cycle in cycles:
        chain = " -> ".join(graph.label(n) for n in [*cycle, cycle[0]])
        errors.append(FieldError(graph.cycle_paths[cycle[0]], f"cycle: {chain}"))
    counts = stage_counts(spec, graph, errors)
    if sum(counts) > MAX_SHEETS:
        raise SpecError(errors)  # too many to expand and check one by one
    check_names(spec, counts, errors)
    slots = layout(counts)
    deps = expand_deps(graph.deps, counts)
    conditions = stage_conditions(spec, graph, errors)
    errors.extend(check_conditions(spec, conditions))
    errors.extend(check_prompt_inputs(spec))
    sheets = _expand(spec, slots, deps, conditions)
    job_sheets = JobSheets.of(spec, sheets)
    if not stored:
        errors.extend(check_sheet_reads(conditions, job_sheets))
    if instruments is not None:
        errors.extend(check_instruments(spec, sheets, instruments))
    expanded = sheet_graph(slots, deps, {s.sheet_num: s.name for s in sheets})
    bits = None if cycles else ancestor_bits(expanded)

    def more_sites(sheet: ResolvedSheet) -> Iterator[RenderedSite]:
        yield from condition_sites(conditions, sheet, job_sheets)
        yield from prompt_input_sites(spec, sheet)

    errors.extend(check_templates(spec, sheets, bits, more_sites))
    errors.extend(_chain_errors(spec))
    if errors:
        raise SpecError(errors)
    return LoadedSpec(spec=spec, sheets=tuple(sheets), source_path=source_path)

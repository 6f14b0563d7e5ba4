"""Load a job spec from a mapping, YAML/JSON text or a file, and expand it into sheets.

Every problem is collected and raised together in one `SpecError`, so an agent can fix a
spec in one round trip instead of one error per submit.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from podium.core import jsondata
from podium.core.errors import FieldError, SpecError
from podium.core.spec.bounds import (
    MAX_SPEC_ALIASES,
    MAX_SPEC_BYTES,
    MAX_SPEC_DEPTH,
    check_text,
    check_value,
    refuse,
)
from podium.core.spec.condition_check import (
    StageConditions,
    check_conditions,
    stage_conditions,
)
from podium.core.spec.conditions import SkipWhenCommand
from podium.core.spec.dag import Graph, add_dep, ancestor_bits, build_graph, find_cycles
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
from podium.core.spec.models import (
    BUILTIN_TEMPLATE_VARIABLES,
    MAX_SHEETS,
    TEMPLATED_VALIDATION_FIELDS,
    InstrumentConfig,
    JobSpec,
    SheetSpec,
    Validation,
    form_errors,
    merge_instrument_config,
)
from podium.core.spec.prompt_check import check_prompt_inputs
from podium.core.spec.prompting import InjectionItem
from podium.core.spec.templating import TemplateRenderError, check_templates, undefined_names

REDACTED = "***"


@dataclass(frozen=True)
class InstrumentTraits:
    """What the loader needs to know of an instrument to check a spec against it."""

    problem: str | None = None  # why the instrument cannot be used; None when it can
    known: bool = True  # False: no such instrument (a typo), not merely one not installed
    permission_modes: frozenset[str] = frozenset()
    accepts_model: bool = False
    runs_nothing: bool = False  # an approval gate: no process, so nothing to validate


InstrumentLookup = Callable[[str], InstrumentTraits]


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


def _config_to_storable(config: InstrumentConfig) -> dict[str, Any]:
    # Only the fields given: an explicit null must survive a round trip, because merging
    # treats "given as null" (clear the job's value) differently from "not given".
    return config.model_dump(exclude_unset=True)


def spec_to_storable(spec: JobSpec) -> dict[str, Any]:
    """Data that loads back to the same spec; defaults are filled in, so equivalent specs
    give equal data (and fingerprints). Python mode, not JSON mode: `variables` keep their
    key types (`{1: Ada}` stays an int key); the store writes it with `jsondata`, which
    keeps them too."""
    data = spec.model_dump(exclude_none=True, exclude={"instrument_config", "sheets"})
    data["instrument_config"] = _config_to_storable(spec.instrument_config)
    if spec.sheets is not None:
        sheets: list[dict[str, Any]] = []
        for sheet in spec.sheets:
            item = sheet.model_dump(exclude_none=True, exclude={"instrument_config"})
            if sheet.instrument_config is not None:
                config = _config_to_storable(sheet.instrument_config)
                if config:
                    item["instrument_config"] = config
            sheets.append(item)
        data["sheets"] = sheets
    return {key: data[key] for key in JobSpec.model_fields if key in data}


def redact_spec(data: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy with the values of every instrument_config.env replaced by "***"."""
    out = copy.deepcopy(dict(data))

    def redact(block: Any) -> None:
        if isinstance(block, dict) and isinstance(block.get("env"), dict):
            block["env"] = dict.fromkeys(block["env"], REDACTED)

    redact(out.get("instrument_config"))
    sheets = out.get("sheets")
    if isinstance(sheets, list):
        for sheet in sheets:
            if isinstance(sheet, dict):
                redact(sheet.get("instrument_config"))
    return out


# --- sources -------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """Rejects duplicate keys, which plain YAML loading resolves silently to the last one, and
    documents nested too deep or using too many aliases (before they cost anything)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_SPEC_ALIASES:
                raise refuse(f"the YAML uses more than {MAX_SPEC_ALIASES} aliases")
        self._depth += 1
        try:
            if self._depth > MAX_SPEC_DEPTH:
                raise refuse(f"the spec is nested deeper than {MAX_SPEC_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<:` merges are meant to be overridden
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable keys get SafeLoader's own error
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, source: Path | None) -> Any:
    try:
        # A SafeLoader subclass, so YAML tags cannot build arbitrary Python objects.
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except RecursionError:
        raise refuse(f"the spec is nested deeper than {MAX_SPEC_DEPTH} levels") from None
    except yaml.YAMLError as exc:
        where = f" in {source}" if source else ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where += f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise SpecError([FieldError("", f"invalid YAML{where}: {detail}")]) from None


def _read(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
        if len(data) > MAX_SPEC_BYTES:
            message = f"spec file {path} is larger than {MAX_SPEC_BYTES} bytes (MAX_SPEC_BYTES)"
        else:
            return data.decode("utf-8")
    except FileNotFoundError:
        message = f"spec file not found: {path}"
    except IsADirectoryError:
        message = f"spec path is a directory, not a file: {path}"
    except UnicodeDecodeError as exc:
        message = f"spec file {path} is not UTF-8 text: {exc.reason}"
    except OSError as exc:
        message = f"cannot read spec file {path}: {exc.strerror or exc}"
    raise SpecError([FieldError("", message)])


def _raw_form_errors(raw: Mapping[str, Any]) -> list[FieldError]:
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


# --- sheets -----------------------------------------------------------------------------------


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


def _salvage_errors(
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
    variables = raw.get("variables")
    known = BUILTIN_TEMPLATE_VARIABLES | (
        {str(k) for k in variables} if isinstance(variables, Mapping) else set()
    )
    known_list = ", ".join(sorted(known))
    for path, template in _raw_template_sites(raw):
        if path in reported:
            continue
        try:
            missing = undefined_names(template, known)
        except TemplateRenderError as exc:
            errors.append(FieldError(path, str(exc)))
            continue
        except Exception:  # best effort: anything else is left to the full check
            continue
        for name, line in missing:
            at = f" at line {line}" if line else ""
            errors.append(
                FieldError(path, f"undefined template variable {name!r}{at}; defined: {known_list}")
            )
    if instruments is not None:
        errors.extend(_raw_instrument_errors(raw, reported, instruments))
    return errors


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


# --- instruments and templates ---------------------------------------------------------------


def _config_origin(
    spec: JobSpec, sheet: SheetSpec | None, index: int, field: str
) -> tuple[str, bool] | None:
    """Where a sheet's effective `field` was set: (path, set on the sheet itself)."""
    own = sheet.instrument_config if sheet is not None else None
    if own is not None and field in own.model_fields_set:
        if getattr(own, field) is None:
            return None  # cleared on the sheet
        return f"sheets.{index}.instrument_config.{field}", True
    if getattr(spec.instrument_config, field) is not None:
        return f"instrument_config.{field}", False
    return None


def _check_instrument_settings(
    spec: JobSpec,
    resolved: ResolvedSheet,
    sheet: SheetSpec | None,
    index: int,
    traits: InstrumentTraits,
) -> list[FieldError]:
    """A job-level default that an instrument has no notion of (a permission mode or model
    for `shell`) does not apply to that instrument's sheets; set on the sheet itself it is an
    error, and so is a value the instrument does not know. Never a run-time failure."""
    errors: list[FieldError] = []
    config = resolved.instrument_config
    name = resolved.instrument
    mode = config.permission_mode
    origin = _config_origin(spec, sheet, index, "permission_mode")
    if mode is not None and origin is not None:
        path, on_sheet = origin
        if not traits.permission_modes:
            if on_sheet:
                errors.append(
                    FieldError(path, f"instrument {name!r} has no permission modes; remove it")
                )
        elif mode not in traits.permission_modes:
            allowed = ", ".join(sorted(traits.permission_modes))
            errors.append(
                FieldError(
                    path,
                    f"instrument {name!r} has no permission mode {mode!r} (allowed: {allowed})",
                )
            )
    origin = _config_origin(spec, sheet, index, "model")
    if config.model is not None and origin is not None and not traits.accepts_model:
        path, on_sheet = origin
        if on_sheet:
            errors.append(FieldError(path, f"instrument {name!r} takes no model; remove it"))
    if traits.runs_nothing and sheet is not None and sheet.validations:
        errors.append(
            FieldError(
                f"sheets.{index}.validations",
                f"instrument {name!r} runs nothing, so there is nothing to validate: an "
                "approval would pass these unchecked; remove them (a later sheet can check)",
            )
        )
    return errors


def _check_instruments(
    spec: JobSpec, sheets: list[ResolvedSheet], lookup: InstrumentLookup
) -> list[FieldError]:
    """Unknown instruments, and instruments that cannot run a sheet which has no installed
    fallback; a sheet whose own instrument is missing starts on its first installed one."""
    traits: dict[str, InstrumentTraits] = {}

    def get(name: str) -> InstrumentTraits:
        found = traits.get(name)
        if found is None:
            found = traits[name] = lookup(name)
        return found

    errors: list[FieldError] = []
    for resolved in sheets:
        index = resolved.stage - 1
        sheet = spec.sheets[index] if spec.sheets else None
        named_here = sheet is not None and sheet.instrument is not None
        path = f"sheets.{index}.instrument" if named_here else "instrument"
        primary = get(resolved.instrument)
        if primary.problem is None:
            errors.extend(_check_instrument_settings(spec, resolved, sheet, index, primary))
        elif not (primary.known and any(get(f).problem is None for f in resolved.fallbacks)):
            errors.append(FieldError(path, primary.problem))
        own = sheet is not None and sheet.fallbacks is not None
        listed = (sheet.fallbacks or []) if own and sheet is not None else spec.fallbacks
        prefix = f"sheets.{index}.fallbacks" if own else "fallbacks"
        for j, name in enumerate(listed):
            found = get(name)
            if not found.known and found.problem is not None:
                errors.append(FieldError(f"{prefix}.{j}", found.problem))
    # A job-level value wrong for several sheets' instrument is one error, not one per sheet.
    return list(dict.fromkeys(errors))


# --- entry point -----------------------------------------------------------------------------


def load_spec(
    *,
    data: Mapping[str, Any] | None = None,
    text: str | None = None,
    path: str | Path | None = None,
    instruments: InstrumentLookup | None = None,
) -> LoadedSpec:
    """Validate a spec from exactly one source; raise `SpecError` listing every problem.

    `instruments(name)` tells whether an instrument can be used and what settings it takes.
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
        text = _read(source_path)
    if text is not None:
        check_text(text, "spec_yaml" if source_path is None else f"spec file {source_path}")
        raw = _parse_yaml(text, source_path)
    check_value(raw)
    if not isinstance(raw, Mapping):
        found = "an empty document" if raw is None else describe_kind(raw)
        raise SpecError([FieldError("", f"a spec must be a mapping at the top level, got {found}")])

    errors = _raw_form_errors(raw)
    try:
        spec = JobSpec.model_validate(dict(raw))
    except ValidationError as exc:
        errors.extend(field_errors(exc))
        errors.extend(_salvage_errors(raw, {e.path for e in errors}, instruments))
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
    if instruments is not None:
        errors.extend(_check_instruments(spec, sheets, instruments))
    expanded = sheet_graph(slots, deps, {s.sheet_num: s.name for s in sheets})
    errors.extend(check_templates(spec, sheets, None if cycles else ancestor_bits(expanded)))
    if errors:
        raise SpecError(errors)
    return LoadedSpec(spec=spec, sheets=tuple(sheets), source_path=source_path)

"""A Marianne score's sheets, stage by stage.

Marianne declares stages (`sheet.size`/`total_items`, `fan_out`, `dependencies`, and the
stage-keyed `skip_when`), but keys its per-sheet settings (`per_sheet_instruments`,
`cadenzas`, `descriptions`, validation conditions...) by the sheet number after fan-out. A
per-sheet setting becomes its stage's when every instance of the stage has the same one;
otherwise it cannot be carried over and is reported."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podium.core.importer.formats import (
    condition_holds,
    condition_test,
    format_to_jinja,
    python_to_jinja,
    sheet_name,
    workspace_relative,
)
from podium.core.importer.instruments import Instruments, config_block
from podium.core.importer.tracker import Tracker, join
from podium.core.spec.base import climbs_out, is_templated
from podium.core.spec.expressions import undefined_in_expression
from podium.core.spec.models import BUILTIN_TEMPLATE_VARIABLES, MAX_SHEETS
from podium.core.spec.prompt_check import input_path_problem
from podium.core.spec.sheet_reads import SHEETS_NAME
from podium.core.spec.templating import TemplateRenderError

_CONTENT_TYPES = ("file_exists", "file_modified", "content_contains", "content_regex")
# Marianne's default for command_succeeds validations (Podium's is 60 s).
COMMAND_TIMEOUT_SECONDS = 3600


@dataclass
class Stage:
    num: int
    count: int = 1
    count_from: str = "sheet.fan_out"  # the score field the instance count came from
    name: str | None = None
    instrument: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    fallbacks: list[str] | None = None
    depends_on: list[int] = field(default_factory=list)
    skip_when: str | None = None
    skip_when_command: dict[str, Any] | None = None
    cadenzas: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # inline prompt extensions, before the task
    validations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def uniform(self) -> bool:
        """Nothing that only the explicit form can say."""
        return not (
            self.name
            or self.instrument
            or self.config
            or self.fallbacks is not None
            or self.cadenzas
            or self.texts
            or self.validations
        )


@dataclass
class Plan:
    stages: list[Stage]
    size: int
    total_items: int
    start_item: int
    job_validations: list[dict[str, Any]]

    @property
    def uniform(self) -> bool:
        """The batch form can say it all."""
        return self.start_item == 1 and all(s.uniform for s in self.stages)

    def sheets_of(self, stage: int) -> list[int]:
        first = 1 + sum(s.count for s in self.stages[: stage - 1])
        return list(range(first, first + self.stages[stage - 1].count))


def _int(t: Tracker, path: str, default: int) -> int:
    value = t.get(path, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{path}: must be a positive integer, got {value!r}")
    return value


def _number(value: Any) -> int | None:
    """A whole number as Marianne's models read one: an int, or digits in a string (the
    only way a JSON score can write a mapping key)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _stage_keyed(t: Tracker, path: str, count: int) -> dict[int, Any]:
    """A map keyed by stage number (as Marianne declares it)."""
    block = t.peek(path)
    out: dict[int, Any] = {}
    if block is not None and not isinstance(block, Mapping):
        t.drop(path, f"must be a mapping keyed by stage number (1..{count})")
        return out
    for key, value in (block or {}).items():
        where = join(path, key)
        num = _number(key)
        if num is not None and 1 <= num <= count:
            out[num] = value
            t.use(where)
        else:
            t.drop(where, f"no stage {key} (stages are 1..{count})")
    return out


def _check_size(stages: list[Stage]) -> None:
    """Refuse a plan with more sheets than a job may have before anything is built per
    sheet (a count in the billions would take the machine's memory first)."""
    for stage in stages:
        if stage.count > MAX_SHEETS:
            raise ValueError(
                f"{stage.count_from}: {stage.count} instances; a Podium job has at most "
                f"{MAX_SHEETS} sheets"
            )
    total = sum(stage.count for stage in stages)
    if total > MAX_SHEETS:
        raise ValueError(
            f"sheet.fan_out: the stages expand to {total} sheets; a Podium job has at most "
            f"{MAX_SHEETS}"
        )


class StageBuilder:
    def __init__(self, t: Tracker, instruments: Instruments, variables: set[str]) -> None:
        self.t = t
        self.instruments = instruments
        self.variables = variables

    def build(self) -> Plan:
        t = self.t
        size = _int(t, "sheet.size", 1)
        total = _int(t, "sheet.total_items", 1)
        start = _int(t, "sheet.start_item", 1)
        if start > total:
            raise ValueError(f"sheet.start_item: {start} is past total_items {total}")
        count = math.ceil((total - start + 1) / size)
        if count > MAX_SHEETS:
            raise ValueError(
                f"sheet.total_items: {total - start + 1} items in sheets of {size} make "
                f"{count} sheets; a Podium job has at most {MAX_SHEETS} (use a larger size)"
            )
        stages = [Stage(n) for n in range(1, count + 1)]
        self._movements(stages)
        for num, value in _stage_keyed(t, "sheet.fan_out", count).items():
            fans = _number(value)
            if fans is not None and fans >= 1:
                stages[num - 1].count = fans
                stages[num - 1].count_from = f"sheet.fan_out.{num}"
            else:
                t.drop(f"sheet.fan_out.{num}", f"instance count must be >= 1, got {value!r}")
        _check_size(stages)
        for num, deps in _stage_keyed(t, "sheet.dependencies", count).items():
            where = f"sheet.dependencies.{num}"
            if not isinstance(deps, list):
                t.drop(where, f"must be a list of stage numbers, got {deps!r}")
                continue
            valid: list[int] = []
            for index, dep in enumerate(deps):
                n = _number(dep)
                if n is None or not 1 <= n <= count:
                    t.drop(f"{where}.{index}", f"no stage {dep!r} (stages are 1..{count})")
                elif n == num:
                    t.drop(f"{where}.{index}", "a stage cannot depend on itself")
                else:
                    valid.append(n)
            stages[num - 1].depends_on = valid
        for num, expr in _stage_keyed(t, "sheet.skip_when", count).items():
            stages[num - 1].skip_when = self._expression(f"sheet.skip_when.{num}", str(expr))
        for num, rule in _stage_keyed(t, "sheet.skip_when_command", count).items():
            stages[num - 1].skip_when_command = self._skip_command(
                f"sheet.skip_when_command.{num}", rule
            )
        plan = Plan(stages, size, total, start, [])
        self._per_sheet(plan)
        plan.job_validations = self._validations(plan)
        return plan

    # ----- movements ------------------------------------------------------------------------

    def _movements(self, stages: list[Stage]) -> None:
        t = self.t
        block = _stage_keyed(t, "movements", len(stages))
        taken: set[str] = set()
        for num in block:
            where = f"movements.{num}"
            stage = stages[num - 1]
            label = t.get(f"{where}.name")
            if isinstance(label, str):
                stage.name = sheet_name(label, taken)
            named = t.get(f"{where}.instrument")
            if isinstance(named, str):
                stage.instrument, stage.config = self.instruments.resolve(named, where)
            stage.config = {**stage.config, **config_block(t, f"{where}.instrument_config")}
            voices = _number(t.get(f"{where}.voices"))
            if voices is not None and voices >= 1:
                stage.count = voices
                stage.count_from = f"{where}.voices"
            chain = t.peek(f"{where}.instrument_fallbacks")
            if chain:
                stage.fallbacks = self._fallbacks(f"{where}.instrument_fallbacks")

    def _fallbacks(self, path: str) -> list[str]:
        names = self.t.get(path) or []
        return [self.instruments.resolve(str(n), path)[0] for n in names]

    # ----- per-sheet maps -------------------------------------------------------------------

    def _by_stage(self, plan: Plan, path: str) -> dict[int, Any]:
        """A map keyed by sheet number, as stage -> value where every instance agrees."""
        t = self.t
        block = t.peek(path)
        if not isinstance(block, Mapping):
            return {}
        values = {}
        for key, value in block.items():
            if str(key).isdigit():
                values[int(key)] = (key, value)
            else:
                t.drop(join(path, key), "not a sheet number")
        out: dict[int, Any] = {}
        for stage in plan.stages:
            sheets = plan.sheets_of(stage.num)
            present = [values[n] for n in sheets if n in values]
            if not present:
                continue
            same = len(present) == len(sheets) and all(v == present[0][1] for _, v in present)
            for key, _ in present:
                if same:
                    t.use(join(path, key))
                else:
                    t.drop(
                        join(path, key),
                        f"differs between the {len(sheets)} instances of stage {stage.num}; "
                        "Podium sets it per stage",
                    )
            if same:
                out[stage.num] = present[0][1]
        for num, (key, _) in values.items():
            if num > sum(s.count for s in plan.stages):
                t.drop(join(path, key), f"no sheet {num}")
        return out

    def _per_sheet(self, plan: Plan) -> None:
        t = self.t
        stages = plan.stages
        taken = {s.name.lower() for s in stages if s.name}
        for num, text in self._by_stage(plan, "sheet.descriptions").items():
            if stages[num - 1].name is None and isinstance(text, str):
                stages[num - 1].name = sheet_name(text, taken)
        mapped = t.peek("sheet.instrument_map")
        by_sheet: dict[int, str] = {}
        if isinstance(mapped, Mapping):
            for name, sheets in mapped.items():
                for index, n in enumerate(sheets or []):
                    by_sheet[int(n)] = str(name)
                    t.use(f"sheet.instrument_map.{name}.{index}")
        for stage in stages:
            chosen = {by_sheet.get(n) for n in plan.sheets_of(stage.num)}
            if len(chosen) == 1 and None not in chosen:
                (name,) = chosen
                assert name is not None
                stage.instrument, stage.config = self.instruments.resolve(
                    name, "sheet.instrument_map"
                )
        for num, name in self._by_stage(plan, "sheet.per_sheet_instruments").items():
            stages[num - 1].instrument, alias = self.instruments.resolve(
                str(name), "sheet.per_sheet_instruments"
            )
            stages[num - 1].config = {**stages[num - 1].config, **alias}
        for num, block in self._by_stage(plan, "sheet.per_sheet_instrument_config").items():
            first = plan.sheets_of(num)[0]
            extra = config_block(t, f"sheet.per_sheet_instrument_config.{first}")
            stages[num - 1].config = {**stages[num - 1].config, **extra}
            del block
        for num, chain in self._by_stage(plan, "sheet.per_sheet_fallbacks").items():
            stages[num - 1].fallbacks = [
                self.instruments.resolve(str(n), "sheet.per_sheet_fallbacks")[0] for n in chain
            ]
        for num, secs in self._by_stage(plan, "backend.timeout_overrides").items():
            stages[num - 1].config["timeout_seconds"] = secs
        for num, override in self._by_stage(plan, "backend.sheet_overrides").items():
            first = plan.sheets_of(num)[0]
            stages[num - 1].config.update(config_block(t, f"backend.sheet_overrides.{first}"))
            del override
        for num, items in self._by_stage(plan, "sheet.cadenzas").items():
            first = plan.sheets_of(num)[0]
            stages[num - 1].cadenzas = injections(t, f"sheet.cadenzas.{first}", items)
        for num, extensions in self._by_stage(plan, "sheet.prompt_extensions").items():
            first = plan.sheets_of(num)[0]
            files, texts = extension_parts(f"sheet.prompt_extensions.{first}", extensions, t)
            stages[num - 1].cadenzas += files
            stages[num - 1].texts = texts

    # ----- conditions -----------------------------------------------------------------------

    def _expression(self, path: str, expr: str) -> str | None:
        """The condition in Jinja's spelling, when Podium can evaluate it."""
        text = python_to_jinja(expr)
        known = BUILTIN_TEMPLATE_VARIABLES | {SHEETS_NAME} | self.variables
        try:
            missing = undefined_in_expression(text, known)
        except TemplateRenderError as exc:
            self.t.drop(path, f"not an expression Podium can evaluate ({exc})")
            return None
        if missing:
            names = ", ".join(missing)
            self.t.drop(path, f"reads {names}, which Podium conditions do not have (they see "
                        "`sheets` and the template variables)")  # fmt: skip
            return None
        return text

    def _skip_command(self, path: str, rule: Any) -> dict[str, Any] | None:
        t = self.t
        if not isinstance(rule, Mapping) or not isinstance(rule.get("command"), str):
            t.drop(path, "a skip_when_command needs a command")
            return None
        out: dict[str, Any] = {"command": format_to_jinja(t.get(f"{path}.command"))}
        timeout = t.get(f"{path}.timeout_seconds")
        if timeout is not None:
            out["timeout_seconds"] = timeout
        description = t.get(f"{path}.description")
        if description is not None:
            out["description"] = str(description)
        return out

    # ----- validations ----------------------------------------------------------------------

    def _validations(self, plan: Plan) -> list[dict[str, Any]]:
        """The job-wide validations; conditional ones go onto the stages they hold for."""
        t = self.t
        job: list[dict[str, Any]] = []
        block = t.peek("validations")
        if block is not None and not isinstance(block, list):
            t.drop("validations", "must be a list of validations")
            return job
        for index, _ in enumerate(block or []):
            where = f"validations.{index}"
            check = self._validation(where)
            if check is None:
                continue
            condition = t.peek(f"{where}.condition")
            only = t.peek(f"{where}.sheet")
            if condition is None and only is None:
                job.append(check)
                continue
            test = condition_test(str(condition)) if condition is not None else ("==", int(only))
            if test is None:
                t.drop(
                    f"{where}.condition",
                    "only `sheet_num OP N` conditions carry over: the validation applies to "
                    "every sheet",
                )
                job.append(check)
                continue
            t.use(f"{where}.condition")
            t.use(f"{where}.sheet")
            for stage in plan.stages:
                holds = {condition_holds(test, n) for n in plan.sheets_of(stage.num)}
                if holds == {True}:
                    stage.validations.append(check)
                elif len(holds) == 2:
                    t.note(where, f"holds for some instances of stage {stage.num} only: "
                           "left off that stage")  # fmt: skip
        return job

    def _validation(self, where: str) -> dict[str, Any] | None:
        t = self.t
        if not isinstance(t.peek(where), Mapping):
            t.drop(where, "not a validation: a validation is a mapping with a type")
            return None
        kind = t.get(f"{where}.type")
        check: dict[str, Any] = {"type": kind}
        if kind in _CONTENT_TYPES:
            path = t.get(f"{where}.path")
            if not isinstance(path, str):
                t.drop(where, f"a {kind} validation needs a path")
                return None
            relative = workspace_relative(path)
            if climbs_out(relative):
                t.drop(where, f"its path {relative!r} leaves the workspace, which a Podium "
                       "validation path must stay inside")  # fmt: skip
                return None
            check["path"] = format_to_jinja(relative)
            if kind in ("content_contains", "content_regex"):
                pattern = t.get(f"{where}.pattern")
                if not isinstance(pattern, str):
                    t.drop(where, f"a {kind} validation needs a pattern")
                    return None
                check["pattern"] = pattern
                if is_templated(pattern):
                    check["pattern"] = "{% raw %}" + pattern + "{% endraw %}"
        elif kind == "command_succeeds":
            command = t.get(f"{where}.command")
            if not isinstance(command, str):
                t.drop(where, "a command_succeeds validation needs a command")
                return None
            directory = t.get(f"{where}.working_directory")
            if isinstance(directory, str):
                command = f"cd {directory} && {command}"
            check["command"] = format_to_jinja(command)
            check["timeout_seconds"] = t.get(f"{where}.timeout_seconds") or COMMAND_TIMEOUT_SECONDS
        else:
            t.drop(where, f"validation type {kind!r} does not exist in Podium")
            return None
        for key, why in (
            ("description", "Podium validations have no description"),
            ("retry_count", "Podium checks files once, after the run ended"),
            ("retry_delay_ms", "Podium checks files once, after the run ended"),
        ):
            t.drop(f"{where}.{key}", why)
        stage = t.peek(f"{where}.stage")
        if stage not in (None, 1):
            t.drop(f"{where}.stage", "Podium runs every validation; there are no stages")
        else:
            t.use(f"{where}.stage")
        return check


def injections(t: Tracker, path: str, items: Any) -> list[dict[str, Any]]:
    """Marianne injection items ({file|directory, as}) as Podium's ({file, as})."""
    out: list[dict[str, Any]] = []
    for index, item in enumerate(items or []):
        where = join(path, index)
        if not isinstance(item, Mapping) or not isinstance(item.get("file"), str):
            t.drop(where, "only single files carry over (a directory cannot be injected)")
            continue
        problem = input_path_problem(item["file"])
        if problem is not None:
            t.drop(where, f"Podium refuses the path: {problem}")
            continue
        out.append({"file": t.get(f"{where}.file"), "as": t.get(f"{where}.as") or "context"})
    return out


def extension_parts(
    path: str, extensions: Any, t: Tracker
) -> tuple[list[dict[str, Any]], list[str]]:
    """Prompt extensions: files (injected as skills) and inline texts."""
    files: list[dict[str, Any]] = []
    texts: list[str] = []
    for index, entry in enumerate(extensions or []):
        where = join(path, index)
        text = str(entry)
        if text.strip().endswith((".md", ".txt")) and "\n" not in text.strip():
            problem = input_path_problem(text.strip())
            if problem is not None:
                t.drop(where, f"Podium refuses the path: {problem}")
                continue
            files.append({"file": text.strip(), "as": "skill"})
        else:
            texts.append(text)
        t.use(where)
    return files, texts

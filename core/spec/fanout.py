"""Fan-out: one declared sheet (a *stage*) run as N parallel instances.

Dependencies are declared between stages and expanded to sheets here: a stage depending on
a single-instance stage waits for that sheet; two stages with the same fan count pair
instance i with instance i (a map followed by a map); any other pairing waits for every
instance (fan-in). Stage graphs are checked for cycles before expansion, and the expansion
adds no cycle, since every sheet edge follows a stage edge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from podium.core.errors import FieldError
from podium.core.spec.dag import Graph, resolve_ref
from podium.core.spec.models import MAX_SHEETS, SHEET_NAME_PATTERN, JobSpec

_NAME_MAX = 64


@dataclass(frozen=True)
class Slot:
    """Where one sheet sits: its stage (1-based declared position) and instance."""

    stage: int
    instance: int
    fan_count: int


def stage_counts(spec: JobSpec, graph: Graph, errors: list[FieldError]) -> list[int]:
    """Instances per stage (index 0 is stage 1); problems go to `errors`."""
    if spec.sheets is not None:
        counts = [s.fan_out or 1 for s in spec.sheets]
        where = "sheets"
    else:
        assert spec.sheet is not None
        counts = [1] * spec.stage_count
        where = "sheet.fan_out"
        for key, count in spec.sheet.fan_out.items():
            stage = resolve_ref(key, graph)
            if isinstance(stage, str):
                errors.append(FieldError(f"sheet.fan_out.{key}", stage))
            else:
                counts[stage - 1] = count
    total = sum(counts)
    if total > MAX_SHEETS:
        errors.append(
            FieldError(
                where,
                f"fan-out makes {total} sheets; at most {MAX_SHEETS} are allowed in one job",
            )
        )
    return counts


def layout(counts: Sequence[int]) -> list[Slot]:
    return [
        Slot(stage, instance, count)
        for stage, count in enumerate(counts, start=1)
        for instance in range(1, count + 1)
    ]


def instance_name(stage_name: str | None, slot: Slot) -> str | None:
    if stage_name is None or slot.fan_count == 1:
        return stage_name
    return f"{stage_name}-{slot.instance}"


def check_names(spec: JobSpec, counts: Sequence[int], errors: list[FieldError]) -> None:
    """Instance names must fit the name rules and not collide with another sheet's name."""
    if spec.sheets is None:
        return
    # Names shaped like an instance name ("NAME-3"), by their prefix: one pass over the names.
    shaped: dict[str, list[tuple[int, int, str]]] = {}
    for at, sheet in enumerate(spec.sheets):
        prefix, _, number = (sheet.name or "").rpartition("-")
        if prefix and number.isdigit() and str(int(number)) == number:
            shaped.setdefault(prefix, []).append((int(number), at, sheet.name or ""))
    for index, (sheet, count) in enumerate(zip(spec.sheets, counts, strict=True)):
        if sheet.name is None or count == 1:
            continue
        longest = f"{sheet.name}-{count}"
        if len(longest) > _NAME_MAX:
            errors.append(
                FieldError(
                    f"sheets.{index}.name",
                    f"with fan_out {count} the instance names ({sheet.name}-1..{longest}) are "
                    f"longer than {_NAME_MAX} characters ({SHEET_NAME_PATTERN}); shorten the name",
                )
            )
        for taken, at, other in shaped.get(sheet.name, []):
            if 1 <= taken <= count:
                errors.append(
                    FieldError(
                        f"sheets.{at}.name",
                        f"sheet name {other!r} is also the name of instance {taken} of "
                        f"sheets.{index} ({sheet.name!r}, fan_out {count}); rename one",
                    )
                )


def expand_deps(stage_deps: Sequence[set[int]], counts: Sequence[int]) -> list[set[int]]:
    """Sheet-level dependencies (indexed by sheet number, [0] unused) from stage-level ones
    (indexed by stage number)."""
    first: list[int] = [0]
    for count in counts:
        first.append(first[-1] + count)
    # first[s - 1] + 1 is stage s's first sheet number.
    deps: list[set[int]] = [set()]
    for stage, count in enumerate(counts, start=1):
        for instance in range(1, count + 1):
            mine: set[int] = set()
            for dep in stage_deps[stage]:
                dep_count = counts[dep - 1]
                base = first[dep - 1]
                if dep_count == 1:
                    mine.add(base + 1)
                elif dep_count == count:
                    mine.add(base + instance)
                else:
                    mine.update(range(base + 1, base + dep_count + 1))
            deps.append(mine)
    return deps


def sheet_graph(
    slots: Sequence[Slot], deps: list[set[int]], names: Mapping[int, str | None]
) -> Graph:
    """The expanded DAG (for each sheet's ancestors, whose `outputs` it may read)."""
    by_name = {name: num for num, name in names.items() if name is not None}
    labels = {num: name for name, num in by_name.items()}
    return Graph(len(slots), by_name, deps, {}, labels)

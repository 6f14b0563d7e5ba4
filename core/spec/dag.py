"""The sheet DAG of a spec: dependency references resolved to sheet numbers, cycles, and
each sheet's ancestors (whose `outputs` its templates may read)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from podium.core.errors import FieldError
from podium.core.spec.models import JobSpec


@dataclass
class Graph:
    count: int
    names: dict[str, int]
    deps: list[set[int]]  # indexed by sheet number; [0] unused
    cycle_paths: dict[int, str]  # where a cycle through a sheet is reported
    labels: dict[int, str]  # names by number, for messages

    def label(self, num: int) -> str:
        return self.labels.get(num, f"sheet {num}")


def resolve_ref(ref: int | str, graph: Graph) -> int | str:
    """A sheet number, or an error message."""
    if isinstance(ref, str) and ref.isdigit():
        ref = int(ref)
    if isinstance(ref, int):
        if 1 <= ref <= graph.count:
            return ref
        return f"no sheet {ref}; sheet numbers are 1..{graph.count}"
    if ref in graph.names:
        return graph.names[ref]
    if graph.names:
        listed = sorted(graph.names)
        more = ", ..." if len(listed) > 20 else ""
        names = f"a sheet name ({', '.join(repr(n) for n in listed[:20])}{more})"
    else:
        names = "a sheet name (no sheet has one)"
    return f"unknown sheet {ref!r}; use a sheet number 1..{graph.count} or {names}"


def add_dep(graph: Graph, num: int, ref: int | str, path: str, errors: list[FieldError]) -> None:
    target = resolve_ref(ref, graph)
    if isinstance(target, str):
        errors.append(FieldError(path, target))
    elif target == num:
        errors.append(FieldError(path, f"{graph.label(num)} depends on itself"))
    else:
        graph.deps[num].add(target)


def build_graph(spec: JobSpec, errors: list[FieldError]) -> Graph:
    """The DAG of the sheets as declared (stages, before any fan-out)."""
    count = spec.stage_count
    if spec.sheets is not None:
        names = {s.name: i + 1 for i, s in enumerate(spec.sheets) if s.name is not None}
    else:
        names = {f"sheet-{n}": n for n in range(1, count + 1)}
    labels = {n: name for name, n in names.items()}
    graph = Graph(count, names, [set() for _ in range(count + 1)], {}, labels)
    if spec.sheets is not None:
        for i, sheet in enumerate(spec.sheets):
            graph.cycle_paths[i + 1] = f"sheets.{i}.depends_on"
            for j, ref in enumerate(sheet.depends_on):
                add_dep(graph, i + 1, ref, f"sheets.{i}.depends_on.{j}", errors)
        return graph
    assert spec.sheet is not None
    for key, refs in spec.sheet.dependencies.items():
        key_path = f"sheet.dependencies.{key}"
        num = resolve_ref(key, graph)
        if isinstance(num, str):
            errors.append(FieldError(key_path, num))
            continue
        graph.cycle_paths.setdefault(num, key_path)
        for j, ref in enumerate(refs):
            add_dep(graph, num, ref, f"{key_path}.{j}", errors)
    return graph


def find_cycles(graph: Graph) -> list[list[int]]:
    # Iterative DFS: a chain of 10000 sheets would overflow Python's recursion limit.
    state = [0] * (graph.count + 1)  # 0 new, 1 on the current path, 2 done
    cycles: list[list[int]] = []
    for start in range(1, graph.count + 1):
        if state[start]:
            continue
        state[start] = 1
        path = [start]
        stack: list[Iterator[int]] = [iter(sorted(graph.deps[start]))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state[nxt] == 0:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.deps[nxt])))
            elif state[nxt] == 1:
                cycle = path[path.index(nxt) :]
                low = cycle.index(min(cycle))
                cycles.append(cycle[low:] + cycle[:low])
    return cycles


def ancestor_bits(graph: Graph) -> list[int]:
    """Transitive ancestors per sheet as bit sets (bit n = sheet n), in one topological
    pass; sets of ints would cost O(n^2) memory for a long chain."""
    dependents: list[list[int]] = [[] for _ in range(graph.count + 1)]
    waiting = [len(d) for d in graph.deps]
    for num in range(1, graph.count + 1):
        for dep in graph.deps[num]:
            dependents[dep].append(num)
    bits = [0] * (graph.count + 1)
    ready = [n for n in range(1, graph.count + 1) if waiting[n] == 0]
    while ready:
        num = ready.pop()
        for dep in graph.deps[num]:
            bits[num] |= bits[dep] | (1 << dep)
        for child in dependents[num]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return bits

"""What a spec will take before it runs (the `estimate` tool).

Each sheet's duration comes from earlier runs: the same sheet (by name, else number) in
earlier jobs with the same name first, else the same instrument's completed sheets in recent
jobs. The job's duration is then a simulation of Podium's own dispatch over the DAG with the
job's and the conductor's concurrency limits, so parallelism and the critical path both count.

Durations are working time. What a sheet spent waiting — held by a rate limit, for a person
at an approval gate, held back between attempts — says when the wait happened to lift, not
what the sheet takes: one run that sat two hours behind a rate limit must not make every
later estimate two hours longer. Those waits are reported next to the figure (`note`, and
`observed_seconds`, what earlier runs took with them), never inside it.

Pure: the conductor gathers the samples.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from podium.core.spec.loader import LoadedSpec, ResolvedSheet

# The answer is bounded (SPEC §9 trap 12) as `diagnose`'s is: a 10,000-sheet spec listed
# every sheet (~32 KB) and a chain of them as many numbers. Past these, the totals
# (`sheets_total`, `critical_path_total`) and `note` say what was left out; the figures
# still cover every sheet.
MAX_LISTED_SHEETS = 50
MAX_LISTED_PATH = 100
MAX_ESTIMATE_BYTES = 16 * 1024
StartsOn = Callable[[ResolvedSheet], str]
# What a sheet waited for instead of working: a rate limit (its rate-limited attempts and the
# holds after them), a person (an approval gate), or anything else that held it between
# attempts beyond its retry backoff (backpressure, a paused or failed job resumed later).
WaitKind = Literal["rate_limit", "approval", "held"]
WAIT_WORDS: dict[WaitKind, str] = {
    "rate_limit": "rate limits",
    "approval": "approvals",
    "held": "other holds",
}
Basis = Literal["same_sheet", "same_instrument", "assumed", "none"]
Confidence = Literal["none", "low", "medium", "high"]


@dataclass(frozen=True)
class SheetSample:
    """One completed run of a sheet: its working time (the attempts that ran, failed ones
    that were retried included, and their retry backoff), its cost when the instrument
    reported one, its attempts, and the seconds it waited instead, by kind."""

    seconds: float
    cost_usd: float | None
    attempts: int
    waits: Mapping[WaitKind, float] = field(default_factory=dict)


@dataclass
class SheetSamples:
    """Every sample of one sheet key or one instrument, newest first."""

    seconds: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    attempts: int = 0
    # The samples themselves: one sheet run is in its sheet's and its instrument's samples,
    # and is one sample however many rows draw on it.
    runs: list[SheetSample] = field(default_factory=list)

    def add(self, sample: SheetSample) -> None:
        self.seconds.append(sample.seconds)
        self.runs.append(sample)
        if sample.cost_usd is not None:
            self.costs.append(sample.cost_usd)
        self.attempts += sample.attempts


@dataclass
class History:
    # Keyed by `sheet_key` (name or "#<num>", and a batch sheet's items), from earlier runs of
    # this job name.
    by_sheet: dict[str, SheetSamples] = field(default_factory=dict)
    by_instrument: dict[str, SheetSamples] = field(default_factory=dict)
    earlier_runs: int = 0
    # Per earlier run (completed, failed or cancelled): actual job seconds minus the simulated
    # seconds of the sheets that ran (each over its whole span, waits included), per sheet
    # that ran — the engine's overhead that no sheet's duration shows (dispatch,
    # validations), which grows with the sheets it dispatches — and any wait before a
    # sheet's first attempt, which leaves no record of its own, so the smallest is the one
    # to trust.
    overheads_per_sheet: list[float] = field(default_factory=list)
    # Actual seconds of each earlier completed run of the same name and the same sheets,
    # waits included (a run of other sheets says nothing of how long these take together).
    observed: list[float] = field(default_factory=list)
    # Earlier runs of the same name whose sheets were not the spec's (by `sheet_key`: a batch
    # of another size is another shape).
    other_shapes: int = 0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SheetEstimate(_Model):
    sheet_num: int
    name: str | None
    instrument: str
    expected_seconds: float | None
    expected_cost_usd: float | None
    samples: int = Field(description="earlier completed runs of this sheet the figure draws on")
    basis: Basis


class Estimate(_Model):
    name: str
    total_sheets: int
    expected_seconds: float | None = Field(
        description="the whole job without waits, simulated over the DAG with its concurrency "
        "limits"
    )
    observed_seconds: float | None = Field(
        description="earlier runs' median actual duration, waits included"
    )
    critical_path_seconds: float | None = Field(
        description="the longest chain of dependent sheets; no amount of parallelism beats it"
    )
    critical_path: list[int] = Field(description="sheet numbers along that chain")
    critical_path_total: int
    sequential_seconds: float | None = Field(description="every sheet one after another")
    parallelism: int = Field(description="sheets that may run at once for this job")
    expected_cost_usd: float | None
    cost_sheets: int
    earlier_runs: int = Field(description="earlier jobs with this name the estimate draws on")
    samples: int = Field(description="earlier completed sheet runs the estimate draws on")
    attempts: int = Field(description="earlier attempts (retries included) behind the samples")
    confidence: Confidence
    note: str
    sheets: list[SheetEstimate]
    sheets_total: int


ItemRange = tuple[int, int] | None  # a batch-form sheet's first and last item


def sheet_key(name: str | None, sheet_num: int, items: ItemRange = None) -> str:
    """What makes two runs of a sheet the same work: its name (else number), and in the
    batch form the items it covers — `sheet-1` of 2 items a sheet is other work than
    `sheet-1` of 1 (no sheet name holds a bracket, so the two never collide)."""
    key = name if name else f"#{sheet_num}"
    return key if items is None else f"{key}[{items[0]}-{items[1]}]"


def spec_sheet_key(sheet: ResolvedSheet) -> str:
    if sheet.start_item is None or sheet.end_item is None:
        return sheet_key(sheet.name, sheet.sheet_num)
    return sheet_key(sheet.name, sheet.sheet_num, (sheet.start_item, sheet.end_item))


def _typical(values: Sequence[float]) -> float:
    return float(statistics.median(values))


@dataclass
class _PerSheet:
    seconds: dict[int, float | None] = field(default_factory=dict)
    costs: dict[int, float | None] = field(default_factory=dict)
    rows: list[SheetEstimate] = field(default_factory=list)
    # The samples the rows draw on, by identity (one instrument's are shared by its rows).
    drawn: dict[int, SheetSamples] = field(default_factory=dict)


def _per_sheet(loaded: LoadedSpec, history: History, starts_on: StartsOn) -> _PerSheet:
    found = _PerSheet()
    for sheet in loaded.sheets:
        instrument = starts_on(sheet)
        basis: Basis = "none"
        samples = history.by_sheet.get(spec_sheet_key(sheet))
        if samples is not None and samples.seconds:
            basis = "same_sheet"
        else:
            samples = history.by_instrument.get(instrument)
            if samples is not None and samples.seconds:
                basis = "same_instrument"
        if samples is not None and basis != "none":
            found.drawn[id(samples)] = samples
        value = _typical(samples.seconds) if samples and samples.seconds else None
        cost = _typical(samples.costs) if samples and samples.costs else None
        found.seconds[sheet.sheet_num] = value
        found.costs[sheet.sheet_num] = cost
        found.rows.append(
            SheetEstimate(
                sheet_num=sheet.sheet_num,
                name=sheet.name,
                instrument=instrument,
                expected_seconds=None if value is None else round(value, 3),
                expected_cost_usd=None if cost is None else round(cost, 6),
                samples=len(samples.seconds) if samples and basis != "none" else 0,
                basis=basis,
            )
        )
    return found


def span_text(seconds: float) -> str:
    """A duration for a person: 7260 -> 2h01m, 95 -> 1m35s, 4.2 -> 4.2s."""
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{int(hours)}h{int(minutes):02d}m"
    if minutes:
        return f"{int(minutes)}m{int(secs):02d}s"
    return f"{seconds:.1f}s"


def _waits_note(drawn: Sequence[SheetSample]) -> str | None:
    """What the sheet runs drawn on waited for, which the figures leave out. Each run once:
    one is in its sheet's samples and its instrument's, and both may be drawn on."""
    parts = []
    for kind, words in WAIT_WORDS.items():
        waited = [run.waits[kind] for run in drawn if run.waits.get(kind, 0) > 0]
        if waited:
            parts.append(f"{words} ({len(waited)} sheet run(s), longest {span_text(max(waited))})")
    if not parts:
        return None
    return "durations are working time; left out, the waits of earlier runs: " + ", ".join(parts)


def critical_path(
    durations: Mapping[int, float], deps: Mapping[int, Sequence[int]]
) -> tuple[float, list[int]]:
    """Longest chain by total duration; sheets are numbered in an order where every
    dependency is checked acyclic at submit, so one pass in topological order does."""
    finish: dict[int, float] = {}
    previous: dict[int, int | None] = {}
    for num in _topological(deps):
        best = max(deps[num], key=lambda d: finish[d], default=None)
        finish[num] = durations[num] + (finish[best] if best is not None else 0.0)
        previous[num] = best
    if not finish:
        return 0.0, []
    end = max(finish, key=lambda n: finish[n])
    chain = [end]
    while (before := previous[chain[-1]]) is not None:
        chain.append(before)
    return finish[end], chain[::-1]


def _topological(deps: Mapping[int, Sequence[int]]) -> list[int]:
    remaining = {n: len(d) for n, d in deps.items()}
    children: dict[int, list[int]] = {n: [] for n in deps}
    for num, parents in deps.items():
        for parent in parents:
            children[parent].append(num)
    # A heap, not a list sorted after each pop: 10,000 independent sheets took ~0.5 s of the
    # event loop per pass, and an estimate makes one pass per earlier run.
    ready = [n for n, count in remaining.items() if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        num = heapq.heappop(ready)
        order.append(num)
        for child in children[num]:
            remaining[child] -= 1
            if remaining[child] == 0:
                heapq.heappush(ready, child)
    return order


def _depths(deps: Mapping[int, Sequence[int]]) -> dict[int, int]:
    depth: dict[int, int] = {}
    for num in _topological(deps):
        depth[num] = 1 + max((depth[d] for d in deps[num]), default=0)
    return depth


def simulate(
    durations: Mapping[int, float], deps: Mapping[int, Sequence[int]], slots: int
) -> float:
    """Makespan of Podium's dispatch: whenever a slot is free, the ready sheet of least DAG
    depth (then lowest number) starts, as the scheduler picks within a job."""
    depth = _depths(deps)
    waiting = {n: set(d) for n, d in deps.items()}
    children: dict[int, list[int]] = {n: [] for n in deps}
    for num, parents in deps.items():
        for parent in parents:
            children[parent].append(num)
    ready = [(depth[n], n) for n, d in waiting.items() if not d]
    heapq.heapify(ready)
    running: list[tuple[float, int]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < max(1, slots):
            _, num = heapq.heappop(ready)
            heapq.heappush(running, (now + durations[num], num))
        now, done = heapq.heappop(running)
        for child in children[done]:
            waiting[child].discard(done)
            if not waiting[child]:
                heapq.heappush(ready, (depth[child], child))
    return now


def _confidence(rows: Sequence[SheetEstimate], earlier_runs: int) -> Confidence:
    if not rows or all(r.basis == "none" for r in rows):
        return "none"
    same = sum(1 for r in rows if r.basis == "same_sheet")
    if same == len(rows) and earlier_runs >= 3:
        return "high"
    if same == len(rows) or (same > len(rows) / 2 and earlier_runs >= 2):
        return "medium"
    return "low"


def _left_out(sheets: int, path: int) -> list[str]:
    """What the capped lists leave out, for `note`."""
    parts = []
    if sheets > MAX_LISTED_SHEETS:
        parts.append(f"sheets lists the first {MAX_LISTED_SHEETS} of {sheets}")
    if path > MAX_LISTED_PATH:
        parts.append(f"critical_path the first {MAX_LISTED_PATH} of its {path}")
    return parts


def own_instrument(sheet: ResolvedSheet) -> str:
    return sheet.instrument


def no_gates(instrument: str) -> bool:
    return False


def estimate(
    loaded: LoadedSpec,
    history: History,
    *,
    max_concurrent_sheets: int,
    starts_on: StartsOn = own_instrument,
    gate: Callable[[str], bool] = no_gates,
) -> Estimate:
    """`starts_on`: the instrument a sheet will run on (its own, or its first installed
    fallback when its own is not installed), whose history it draws on. `gate`: whether an
    instrument is an approval gate, which runs nothing: its sheets need no working time."""
    found = _per_sheet(loaded, history, starts_on)
    seconds, costs, rows = found.seconds, found.costs, found.rows
    gates = {r.sheet_num for r in rows if gate(r.instrument)}
    # A gate's zero says nothing of how long the other sheets take.
    known = [v for n, v in seconds.items() if v is not None and n not in gates]
    parallelism = min(loaded.spec.concurrency.max_parallel_sheets, max_concurrent_sheets)
    drawn = {id(run): run for samples_of in found.drawn.values() for run in samples_of.runs}
    samples = len(drawn)
    attempts = sum(run.attempts for run in drawn.values())
    base = {
        "name": loaded.spec.name,
        "total_sheets": loaded.total_sheets,
        "parallelism": parallelism,
        "observed_seconds": round(_typical(history.observed), 3) if history.observed else None,
        "earlier_runs": history.earlier_runs,
        "samples": samples,
        "attempts": attempts,
        "sheets": rows[:MAX_LISTED_SHEETS],
        "sheets_total": len(rows),
    }
    if not known and len(gates) < len(rows):
        return Estimate(
            **base,
            expected_seconds=None,
            critical_path_seconds=None,
            critical_path=[],
            critical_path_total=0,
            sequential_seconds=None,
            expected_cost_usd=None,
            cost_sheets=0,
            confidence="none",
            note="; ".join(
                [
                    "no history: no earlier job with this name, and no earlier completed sheet "
                    "of these instruments",
                    *_left_out(len(rows), 0),
                ]
            ),
        )
    fallback = _typical(known) if known else 0.0
    assumed = [r for r in rows if r.expected_seconds is None]
    for row in assumed:
        row.basis = "assumed"
    filled = {
        n: (v if v is not None else 0.0 if n in gates else fallback) for n, v in seconds.items()
    }
    deps = {s.sheet_num: list(s.depends_on) for s in loaded.sheets}
    # Waits only ever add to a run's overhead: the run that shows the least is the nearest
    # to the engine's own.
    per_sheet = min(history.overheads_per_sheet) if history.overheads_per_sheet else 0.0
    overhead = per_sheet * loaded.total_sheets
    makespan = simulate(filled, deps, parallelism) + max(0.0, overhead)
    path_seconds, path = critical_path(filled, deps)
    known_costs = [c for c in costs.values() if c is not None]
    # A gate runs nothing and costs nothing: it is not a sheet the cost leaves out.
    payable = len(rows) - sum(1 for n in gates if costs.get(n) is None)
    if history.earlier_runs:
        drawn_from = f"from {history.earlier_runs} earlier run(s) of {loaded.spec.name!r}"
        if history.other_shapes:
            drawn_from += (
                f" ({history.other_shapes} of them with other sheets than this spec's, or "
                "other items per sheet: observed_seconds leaves them out)"
            )
    elif samples:
        drawn_from = (
            f"no earlier run of {loaded.spec.name!r}; from other jobs' sheets of the same "
            "instruments"
        )
    else:
        drawn_from = f"no earlier run of {loaded.spec.name!r}, and no sample of its instruments"
    notes = [drawn_from]
    assumed_gates = [r for r in assumed if r.sheet_num in gates]
    if len(assumed_gates) < len(assumed):
        notes.append(
            f"{len(assumed) - len(assumed_gates)} sheet(s) without history assumed to take the "
            f"median of the others ({fallback:.1f}s)"
        )
    if assumed_gates:
        notes.append(
            f"{len(assumed_gates)} approval sheet(s) without history assumed to need no "
            "working time"
        )
    waits = _waits_note(list(drawn.values()))
    if waits:
        notes.append(waits)
    if not known_costs:
        notes.append("no instrument reported a cost")
    elif len(known_costs) < payable:
        notes.append(
            f"expected_cost_usd covers {len(known_costs)} of {payable} sheets: no cost was "
            "reported for the others, whose cost it leaves out"
        )
    notes.extend(_left_out(len(rows), len(path)))
    return Estimate(
        **base,
        expected_seconds=round(makespan, 3),
        critical_path_seconds=round(path_seconds, 3),
        critical_path=path[:MAX_LISTED_PATH],
        critical_path_total=len(path),
        sequential_seconds=round(sum(filled.values()), 3),
        expected_cost_usd=round(sum(known_costs), 6) if known_costs else None,
        cost_sheets=len(known_costs),
        confidence=_confidence(rows, history.earlier_runs),
        note="; ".join(notes),
    )

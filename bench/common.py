"""What every benchmark shares: rounds with median and spread, result rows, homes."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from podium.core.config import PodiumConfig, load_config


@dataclass
class Figure:
    """One measured figure next to the baseline measured in the same run."""

    group: str
    name: str
    unit: str
    values: list[float]
    baseline_name: str | None = None
    baseline_values: list[float] = field(default_factory=list)
    # How the figure compares with the baseline: "ratio" (figure / baseline, lower is better
    # for times, e.g. 1.3x the floor) or "speed" (baseline / figure for rates: how many
    # times slower than the baseline).
    compare: str = "ratio"
    target: float | None = None  # the bound on the comparison, when it sets one
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.values), max(self.values)

    @property
    def baseline(self) -> float | None:
        return statistics.median(self.baseline_values) if self.baseline_values else None

    @property
    def comparison(self) -> float | None:
        base = self.baseline
        if base is None or base == 0 or self.median == 0:
            return None
        return self.median / base if self.compare == "ratio" else base / self.median

    @property
    def met(self) -> bool | None:
        if self.target is None or self.comparison is None:
            return None
        return self.comparison <= self.target

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            median=self.median,
            spread=self.spread,
            baseline=self.baseline,
            comparison=self.comparison,
            met=self.met,
        )
        return data


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def table(figures: Sequence[Figure]) -> str:
    headers = ["group", "figure", "median", "spread", "baseline", "vs baseline", "target", "met"]
    rows = []
    for f in figures:
        low, high = f.spread
        comparison = f.comparison
        how = "x slower" if f.compare == "speed" else "x"
        rows.append(
            [
                f.group,
                f.name,
                fmt(f.median, f.unit),
                f"{fmt(low)}..{fmt(high)}",
                f"{fmt(f.baseline, f.unit)} ({f.baseline_name})" if f.baseline_name else "-",
                f"{comparison:.2f}{how}" if comparison is not None else "-",
                f"<= {f.target:g}{how}" if f.target is not None else "-",
                {True: "yes", False: "NO", None: "-"}[f.met],
            ]
        )
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def scratch_root() -> Path:
    """Where the benchmarks' homes go: `PODIUM_BENCH_DIR`, else `~/.cache/podium-bench`,
    beside where a real home lives (`~/.podium`), not the shared temporary directory. On an
    ext4 without a journal (the development VM's), creating a file skips every inode of its
    block group deleted in the last minutes, one buffer lookup each; in a /tmp where test
    suites delete thousands of files a minute that made each sheet's log file cost 0.2-0.7
    ms of CPU, more than the rest of its start, and the figure measured the machine's other
    work rather than the conductor."""
    configured = os.environ.get("PODIUM_BENCH_DIR")
    root = Path(configured) if configured else Path.home() / ".cache" / "podium-bench"
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"podium-bench-{prefix}-", dir=scratch_root()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def bench_config(home: Path, **overrides: Any) -> PodiumConfig:
    overrides.setdefault("kill_grace_seconds", 1)
    return load_config(home=home, overrides=overrides, env={})


async def rounds(n: int, once: Callable[[], Awaitable[float]]) -> list[float]:
    return [await once() for _ in range(n)]


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]

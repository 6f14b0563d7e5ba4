"""Resource monitor and backpressure (SPEC §6).

Memory (RSS of the conductor plus all its descendants, against `max_memory_mb`) and the
descendant count (against `max_processes`) each give a level; the worse one wins. `high`
slows dispatch, `critical` stops it and refuses new jobs. A probe that fails counts as
`critical`: when Podium cannot see its own footprint it must not keep adding to it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import anyio
import psutil
import structlog

log = structlog.get_logger("podium.pressure")


class PressureLevel(StrEnum):
    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


_ORDER = list(PressureLevel)
_THRESHOLDS = (
    (0.95, PressureLevel.CRITICAL),
    (0.85, PressureLevel.HIGH),
    (0.70, PressureLevel.MEDIUM),
    (0.50, PressureLevel.LOW),
)


def level_for(fraction: float) -> PressureLevel:
    for threshold, level in _THRESHOLDS:
        if fraction >= threshold:
            return level
    return PressureLevel.NONE


def worst(*levels: PressureLevel) -> PressureLevel:
    return max(levels, key=_ORDER.index)


@dataclass(frozen=True)
class ResourceSample:
    memory_mb: float | None
    processes: int | None
    zombies: int
    level: PressureLevel
    reason: str | None  # why the level is what it is, for errors and status
    taken_at: float


def probe(max_memory_mb: float, max_processes: int, pid: int | None = None) -> ResourceSample:
    """One measurement. Raises nothing: a failure becomes a critical sample with its reason."""
    now = time.monotonic()
    try:
        me = psutil.Process(pid or os.getpid())
        children = me.children(recursive=True)
        rss = me.memory_info().rss
        zombies = 0
        for child in children:
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    zombies += 1
                    continue
                rss += child.memory_info().rss
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
    except (psutil.Error, OSError) as exc:
        return ResourceSample(
            None,
            None,
            0,
            PressureLevel.CRITICAL,
            f"resource probe failed ({exc}); failing closed",
            now,
        )
    memory_mb = rss / 1_048_576
    processes = len(children) - zombies
    memory_level = level_for(memory_mb / max_memory_mb)
    process_level = level_for(processes / max_processes)
    level = worst(memory_level, process_level)
    reason = None
    if level is not PressureLevel.NONE:
        if _ORDER.index(memory_level) >= _ORDER.index(process_level):
            reason = (
                f"memory: {memory_mb:.0f} MB used of max_memory_mb {max_memory_mb:g} "
                f"({level.value})"
            )
        else:
            reason = (
                f"processes: {processes} descendants of max_processes {max_processes} "
                f"({level.value})"
            )
    return ResourceSample(round(memory_mb, 1), processes, zombies, level, reason, now)


class ResourceMonitor:
    """Samples on an interval; limits can change at runtime (config reload)."""

    def __init__(
        self,
        max_memory_mb: float,
        max_processes: int,
        interval_seconds: float,
        prober: Callable[[float, int], ResourceSample] = probe,
    ) -> None:
        self.max_memory_mb = max_memory_mb
        self.max_processes = max_processes
        self.interval_seconds = interval_seconds
        self._prober = prober
        self.consecutive_failures = 0
        self.last = self.sample()

    def sample(self) -> ResourceSample:
        sample = self._prober(self.max_memory_mb, self.max_processes)
        self.consecutive_failures = self.consecutive_failures + 1 if sample.memory_mb is None else 0
        if sample.level is not getattr(getattr(self, "last", None), "level", None):
            log.info("pressure level", level=sample.level.value, reason=sample.reason)
        self.last = sample
        return sample

    def set_limits(self, max_memory_mb: float, max_processes: int, interval_seconds: float) -> None:
        self.max_memory_mb = max_memory_mb
        self.max_processes = max_processes
        self.interval_seconds = interval_seconds
        self.sample()

    @property
    def degraded(self) -> bool:
        return self.consecutive_failures >= 3

    async def run(self, on_sample: Callable[[ResourceSample], None]) -> None:
        while True:
            await anyio.sleep(self.interval_seconds)
            on_sample(await anyio.to_thread.run_sync(self.sample))

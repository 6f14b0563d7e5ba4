"""What every part of the engine reads and nothing writes but the engine itself: the
configuration and instrument catalog in force (both change on reload), backpressure, and
recent outcomes for readiness."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from podium.core.config import PodiumConfig
from podium.core.engine.rules import RetryLimits
from podium.core.engine.scheduler import Limits
from podium.core.instruments.catalog import InstrumentCatalog
from podium.core.models import utcnow
from podium.core.pressure import PressureLevel
from podium.core.store.rows import JobRow

RECENT_OUTCOMES = 50
MIN_OUTCOMES_FOR_RATE = 10
HIGH_PRESSURE_GAP_SECONDS = 2.0
_PRESSURE_ORDER = list(PressureLevel)

TerminalHook = Callable[[JobRow], Awaitable[None]]


@dataclass
class EngineContext:
    config: PodiumConfig
    catalog: InstrumentCatalog
    on_terminal: TerminalHook | None = None
    pressure: PressureLevel = PressureLevel.NONE
    pressure_reason: str | None = None
    last_slow_dispatch: float = 0.0
    recent_outcomes: deque[bool] = field(default_factory=lambda: deque(maxlen=RECENT_OUTCOMES))
    base_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    # What dates a CLI's reset wording ("resets 1pm", "try again in 2 hours") and the zone a
    # clock time without one is read in (None: the machine's, where the CLI printed it).
    # Tests freeze them; the engine's own bookkeeping keeps the real time.
    clock: Callable[[], datetime] = utcnow
    zone: tzinfo | None = None

    def __post_init__(self) -> None:
        # A sheet that runs `podium ...` (a chained `podium run`, a `podium status`) talks to
        # the conductor running it, even when this conductor's home came from a flag.
        self.base_env = {**self.base_env, "PODIUM_HOME": str(self.config.home)}

    @property
    def limits(self) -> Limits:
        return Limits(self.config.max_concurrent_jobs, self.config.max_concurrent_sheets)

    @property
    def retry_limits(self) -> RetryLimits:
        return RetryLimits(
            self.config.max_rate_limit_retries, self.config.max_rate_limit_wait_seconds
        )

    def usable(self, instrument: str) -> bool:
        """Whether `instrument` is known and installed (as probed at start or reload)."""
        info = self.catalog.get(instrument)
        return info is not None and info.available

    @property
    def failure_rate(self) -> float | None:
        if len(self.recent_outcomes) < MIN_OUTCOMES_FOR_RATE:
            return None
        return 1 - sum(self.recent_outcomes) / len(self.recent_outcomes)

    def set_pressure(self, level: PressureLevel, reason: str | None) -> bool:
        """Returns whether pressure eased (dispatch may have more to do)."""
        eased = _PRESSURE_ORDER.index(level) < _PRESSURE_ORDER.index(self.pressure)
        self.pressure, self.pressure_reason = level, reason
        return eased

    def may_dispatch(self) -> bool:
        if self.pressure is PressureLevel.CRITICAL:
            return False
        if self.pressure is PressureLevel.HIGH:
            return time.monotonic() - self.last_slow_dispatch >= HIGH_PRESSURE_GAP_SECONDS
        return True

"""Diagnose and estimate over the conductor's reads: why a job failed or is stuck (the
history, the logs around each error, the holds), and what a spec will take from the history
of similar jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from podium.core.diagnosis import diagnose
from podium.core.diagnosis_answer import Diagnosis
from podium.core.engine.fallbacks import first_usable
from podium.core.errors import PodiumError
from podium.core.estimate import (
    Estimate,
    History,
    SheetSamples,
    StartsOn,
    estimate,
    spec_sheet_key,
)
from podium.core.history_samples import RunSamples, run_samples
from podium.core.instruments.profile import APPROVAL_KIND
from podium.core.log_excerpt import LOG_TAIL_SCANNED
from podium.core.models import JobStatus
from podium.core.spec.loader import LoadedSpec, ResolvedSheet
from podium.core.spec.models import ConcurrencySpec

if TYPE_CHECKING:
    from podium.core.conductor import Conductor

DIAGNOSE_HISTORY_LIMIT = 50_000
MAX_SHEET_PAGE = 10_000
# Earlier runs of the same job name, and recent jobs searched for an instrument's sheets.
ESTIMATE_EARLIER_RUNS = 20
ESTIMATE_INSTRUMENT_RUNS = 30


class Insight:
    def __init__(self, conductor: Conductor) -> None:
        self._c = conductor

    async def diagnose(self, job_id: str) -> Diagnosis:
        """Why a job failed or is stuck, with next steps, in one answer of bounded size."""
        detail = await self._c.checkpoint(job_id)
        entries, _ = await self._c.get_execution_history(job_id, limit=DIAGNOSE_HISTORY_LIMIT)

        async def read_log(sheet_num: int, attempt: int) -> str:
            try:
                chunk = await self._c.read_logs(
                    job_id, sheet=sheet_num, attempt=attempt, tail_lines=LOG_TAIL_SCANNED
                )
            except PodiumError:
                return ""
            return chunk.text

        status = await self._c.status()
        return await diagnose(
            detail,
            entries,
            read_log,
            rate_limits=[(r.instrument, r.until) for r in status.rate_limits],
            pressure_level=status.pressure_level,
            pressure_reason=status.pressure_reason,
            gate=self._gate,
        )

    def _gate(self, instrument: str) -> bool:
        """Whether `instrument` is an approval gate: it runs nothing, it waits for a person."""
        catalog = self._c.catalog
        info = catalog.get(instrument) if catalog is not None else None
        return info is not None and info.profile.kind == APPROVAL_KIND

    async def estimate(self, loaded: LoadedSpec) -> Estimate:
        """Expected duration and cost of a spec from the history of similar jobs."""
        catalog = self._c.catalog

        def usable(name: str) -> bool:
            info = catalog.get(name) if catalog is not None else None
            return info is not None and info.available

        # As the engine places a new sheet: its own instrument, else its first installed
        # fallback.
        def starts_on(sheet: ResolvedSheet) -> str:
            return first_usable(sheet, usable)

        history = await self._estimate_history(loaded, starts_on)
        limit = self._c.config.max_concurrent_sheets
        return estimate(
            loaded, history, max_concurrent_sheets=limit, starts_on=starts_on, gate=self._gate
        )

    async def _estimate_history(self, loaded: LoadedSpec, starts_on: StartsOn) -> History:
        history = History()
        # A cancelled run's completed sheets are samples, and its timeline tells the
        # engine's overhead, as a failed run's does.
        finished = [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED]
        runs, _ = await self._c.list_jobs(
            statuses=finished, name=loaded.spec.name, limit=ESTIMATE_EARLIER_RUNS
        )
        seen: set[str] = set()
        shape = frozenset(spec_sheet_key(s) for s in loaded.sheets)
        for run in runs:
            seen.add(run.job_id)
            samples = await self._sheet_samples(run.job_id)
            if not samples.sheets:
                continue
            history.earlier_runs += 1
            for key, instrument, sample in samples.sheets:
                history.by_sheet.setdefault(key, SheetSamples()).add(sample)
                history.by_instrument.setdefault(instrument, SheetSamples()).add(sample)
            if samples.overhead is not None and samples.ran:
                history.overheads_per_sheet.append(samples.overhead / samples.ran)
            if samples.keys != shape:
                history.other_shapes += 1
            elif samples.seconds is not None:
                history.observed.append(samples.seconds)
        wanted = {starts_on(s) for s in loaded.sheets} - set(history.by_instrument)
        if wanted:
            # A sheet that completed is a sample whatever became of its job afterwards, as
            # it is for the runs of the same name above.
            recent, _ = await self._c.list_jobs(statuses=finished, limit=ESTIMATE_INSTRUMENT_RUNS)
            for run in recent:
                if run.job_id in seen:
                    continue
                samples = await self._sheet_samples(run.job_id)
                for _, instrument, sample in samples.sheets:
                    if instrument in wanted:
                        history.by_instrument.setdefault(instrument, SheetSamples()).add(sample)
        return history

    async def _sheet_samples(self, job_id: str) -> RunSamples:
        detail = await self._c.get_job(job_id, sheet_limit=MAX_SHEET_PAGE, include_spec=True)
        entries, _ = await self._c.get_execution_history(job_id, limit=DIAGNOSE_HISTORY_LIMIT)
        concurrency = ConcurrencySpec.model_validate((detail.spec or {}).get("concurrency") or {})
        return run_samples(
            detail,
            entries,
            parallelism=min(concurrency.max_parallel_sheets, self._c.config.max_concurrent_sheets),
            gate=self._gate,
        )

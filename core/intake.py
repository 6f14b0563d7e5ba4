"""Specs coming in through the facade: loaded from exactly one source (a mapping, YAML or
JSON text, or a file confined to the allowed roots) against the instrument catalog, checked
into a validation report, or submitted as a new job (its id checked, new work refused at
critical pressure, its workspace made before the job exists)."""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from podium.core.errors import BackpressureError, PodiumError, SpecError, quoted
from podium.core.job_hooks import ChainLink
from podium.core.models import utcnow
from podium.core.paths import confine, resolve_workspace
from podium.core.pressure import PressureLevel
from podium.core.spec.loader import LoadedSpec, load_spec
from podium.core.store.rows import TaskRow
from podium.core.views import SheetPlan, SpecErrorItem, SubmittedJob, ValidationReport

if TYPE_CHECKING:
    from podium.core.conductor import Conductor

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SUBMIT_SAMPLE_SECONDS = 1.0


@dataclass(frozen=True)
class SpecSource:
    """A spec as a call gives it: exactly one of a mapping, YAML or JSON text, or a file
    path; `extra_roots` are where else than the configured roots a path may point."""

    spec: Mapping[str, Any] | None = None
    spec_yaml: str | None = None
    path: str | Path | None = None
    extra_roots: Sequence[Path] = ()


def new_job_id(name: str) -> str:
    return f"{name}-{utcnow().strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"


class Intake:
    def __init__(self, conductor: Conductor) -> None:
        self._c = conductor

    def _load(self, source: SpecSource) -> LoadedSpec:
        spec, spec_yaml, path = source.spec, source.spec_yaml, source.path
        given = [
            name
            for name, v in (("spec", spec), ("spec_yaml", spec_yaml), ("path", path))
            if v is not None
        ]
        if len(given) != 1:
            which = ", ".join(given) if given else "none"
            raise PodiumError(f"give exactly one of spec, spec_yaml or path (got: {which})")
        confined = None
        if path is not None:
            confined = confine(path, [*self._c.config.roots(), *source.extra_roots], field="path")
        catalog = self._c.catalog
        traits = catalog.traits if catalog is not None else None
        return load_spec(data=spec, text=spec_yaml, path=confined, instruments=traits)

    async def load(self, source: SpecSource) -> LoadedSpec:
        """Loading parses YAML, validates models and renders every template: CPU work on
        untrusted input (bounded in size and time by the loader and the sandbox), done in a
        worker thread so the event loop keeps answering every other client meanwhile."""
        return await anyio.to_thread.run_sync(self._load, source)

    async def validate(self, source: SpecSource) -> ValidationReport:
        try:
            loaded = await self.load(source)
        except SpecError as exc:
            return ValidationReport(
                valid=False,
                errors=[SpecErrorItem(path=e.path, message=e.message) for e in exc.errors],
                sheets=[],
            )
        return ValidationReport(
            valid=True,
            errors=[],
            sheets=[
                SheetPlan(
                    sheet_num=s.sheet_num,
                    name=s.name,
                    depends_on=list(s.depends_on),
                    instrument=s.instrument,
                )
                for s in loaded.sheets
            ],
        )

    async def submit(
        self,
        source: SpecSource,
        *,
        job_id: str | None,
        start: bool,
        chain: ChainLink | None,
        task: Callable[[str], TaskRow] | None,
    ) -> SubmittedJob:
        if job_id is not None and not JOB_ID_PATTERN.match(job_id):
            raise PodiumError(
                f"job_id: {quoted(job_id)} is not allowed; use 1-128 characters from letters, "
                "digits, "
                "'.', '_' and '-', starting with a letter or digit"
            )
        if self._c.stopping:
            raise PodiumError("the conductor is shutting down; submit again after it restarts")
        loaded = await self.load(source)
        await self._check_pressure()
        config = self._c.config
        job_id = job_id or new_job_id(loaded.spec.name)
        base_dir = loaded.source_path.parent if loaded.source_path else config.workspaces_dir
        workspace = resolve_workspace(
            loaded.spec.workspace,
            job_id=job_id,
            base_dir=base_dir,
            default_dir=config.workspaces_dir,
            roots=[*config.roots(), *source.extra_roots],
            home=config.home,
        )
        # Made before the job exists (its first sheet may start at once); removed again if
        # this submit turns out to add no job.
        made = not workspace.exists()
        workspace.mkdir(parents=True, exist_ok=True)
        try:
            job, created = await self._c.engine.submit(
                loaded,
                job_id=job_id,
                workspace=workspace,
                start=start,
                spec_path=loaded.source_path,
                chain=(chain.parent, chain.depth) if chain is not None else None,
                task=task(job_id) if task is not None else None,
            )
        except BaseException:
            if made:
                with contextlib.suppress(OSError):
                    workspace.rmdir()
            raise
        return SubmittedJob(**job.summary().model_dump(), workspace=job.workspace, created=created)

    async def _check_pressure(self) -> None:
        """Refuse new work at critical pressure, with the reason (memory or processes)."""
        monitor = self._c.monitor
        if monitor is None:
            return
        sample = monitor.last
        # A sample this fresh is as good as a new one; a burst of submits (an agent fanning
        # out) costs one walk of the process table, not one each.
        if time.monotonic() - sample.taken_at >= SUBMIT_SAMPLE_SECONDS:
            sample = await anyio.to_thread.run_sync(monitor.sample)
        self._c.engine.set_pressure(sample.level, sample.reason)
        if sample.level is PressureLevel.CRITICAL:
            raise BackpressureError(
                f"not accepting jobs: {sample.reason}; running jobs continue, submit again "
                "when usage drops or raise the limit (config.yaml, then podium reload)",
                reason=sample.reason,
            )

"""What a sheet's templates and conditions see of its job when it is about to run."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from podium.core.engine.state import JobState
from podium.core.spec.templating import TemplateContext

OUTPUTS_CHARS = 4096


class AncestorOutputs(Mapping[int, str]):
    """`outputs[N]` for a sheet: the stdout tails of its ancestors, looked up only for the
    keys a template actually reads (a sheet at the end of a long chain has many)."""

    def __init__(self, job_state: JobState, sheet_num: int) -> None:
        self._state = job_state
        self._num = sheet_num
        self._ancestors: frozenset[int] | None = None

    def _known(self) -> frozenset[int]:
        if self._ancestors is None:
            self._ancestors = frozenset(self._state.ancestors(self._num))
        return self._ancestors

    def __getitem__(self, key: int) -> str:
        if key not in self._known():
            raise KeyError(key)
        # A sheet may keep more of its output for `context`; `outputs` stays the last 4 KiB.
        return (self._state.sheets[key].output_tail or "")[-OUTPUTS_CHARS:]

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._known()))

    def __len__(self) -> int:
        return len(self._known())


def template_context(
    job_state: JobState,
    sheet_num: int,
    *,
    previous_outputs: Mapping[int, str] | None = None,
    previous_files: Mapping[str, str] | None = None,
) -> TemplateContext:
    """What a sheet's templates (prompt, validations, conditions) may read. The job's spec
    must load."""
    loaded = job_state.spec
    assert loaded is not None
    resolved = loaded.sheet(sheet_num)
    job = job_state.job
    return TemplateContext(
        workspace=job.workspace,
        job_id=job.job_id,
        sheet_num=sheet_num,
        total_sheets=len(job_state.sheets),
        sheet_name=resolved.name,
        start_item=resolved.start_item,
        end_item=resolved.end_item,
        variables=loaded.spec.variables,
        outputs=AncestorOutputs(job_state, sheet_num),
        sheet_names=loaded.sheet_numbers,
        stage=resolved.stage,
        instance=resolved.instance,
        fan_count=resolved.fan_count,
        previous_outputs=previous_outputs or {},
        previous_files=previous_files or {},
    )

"""What prompt assembly and the context variables read when a sheet starts: earlier sheets'
output, captured workspace files, prelude and cadenza files. Every file is confined (the
workspace, or the spec file's folder for prelude and cadenzas) and capped in size, and the
whole is capped, so a job cannot make a prompt (or the conductor's memory) unbounded."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from podium.core.engine.state import JobState
from podium.core.errors import PodiumError
from podium.core.runner.assembly import assemble, context_section
from podium.core.spec.loader import LoadedSpec
from podium.core.spec.models import Validation
from podium.core.spec.prompting import ContextSpec, InjectionItem
from podium.core.spec.templating import TemplateContext, names_read, render

FILE_LIMIT_BYTES = 64 * 1024
TOTAL_LIMIT_BYTES = 1024 * 1024
_TRUNCATED = "\n[... truncated]"


class PromptInputError(PodiumError):
    """A file a prompt needs is missing, outside its folder, or unreadable."""


def previous_outputs(job_state: JobState, context: ContextSpec, sheet_num: int) -> dict[int, str]:
    """The end of the stdout of the sheets before `sheet_num` (by number) that have run,
    nearest first until the total cap."""
    first = 1 if context.previous_sheets == 0 else max(1, sheet_num - context.previous_sheets)
    out: dict[int, str] = {}
    total = 0
    for num in range(sheet_num - 1, first - 1, -1):
        row = job_state.sheets.get(num)
        if row is None or row.output_tail is None:
            continue
        # Bytes, as the field says: a slice of the text kept up to 4x that of non-ASCII output.
        text = row.output_tail.encode()[-context.output_bytes :].decode(errors="ignore")
        total += len(text.encode())
        if total > TOTAL_LIMIT_BYTES:
            break
        out[num] = text
    return dict(sorted(out.items()))


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _read(path: Path) -> str:
    with path.open("rb") as f:
        data = f.read(FILE_LIMIT_BYTES + 1)
    text = data[:FILE_LIMIT_BYTES].decode("utf-8", errors="replace")
    return text + _TRUNCATED if len(data) > FILE_LIMIT_BYTES else text


def _locate(rendered: str, base: Path, roots: Sequence[str]) -> Path | None:
    """The real path of `rendered` (relative to `base`) when it stays inside `roots`."""
    real = os.path.realpath(base / rendered)
    return Path(real) if _inside(real, roots) else None


def captured_files(context: ContextSpec, ctx: TemplateContext, workspace: Path) -> dict[str, str]:
    """Workspace files named by `context.files`, by their rendered path; a file that does not
    exist (yet) is left out, one outside the workspace is refused."""
    roots = [os.path.realpath(workspace)]
    out: dict[str, str] = {}
    total = 0
    for template in context.files:
        rendered = render(template, ctx)
        path = _locate(rendered, workspace, roots)
        if path is None:
            raise PromptInputError(f"context.files: {rendered!r} is outside the workspace")
        if not path.is_file():
            continue
        text = _read(path)
        total += len(text)
        if total > TOTAL_LIMIT_BYTES:
            break
        out[rendered] = text
    return out


def injected(
    items: Sequence[InjectionItem],
    where: str,
    ctx: TemplateContext,
    *,
    workspace: Path,
    spec_folder: Path | None,
) -> tuple[list[str], list[str]]:
    """(texts before the task, texts after it) of prelude or cadenza items."""
    base = spec_folder or workspace
    roots = [os.path.realpath(workspace)]
    if spec_folder is not None:
        roots.append(os.path.realpath(spec_folder))
    before: list[str] = []
    after: list[str] = []
    for index, item in enumerate(items):
        rendered = render(item.file, ctx)
        path = _locate(rendered, base, roots)
        label = f"{where}.{index}"
        if path is None:
            raise PromptInputError(
                f"{label}: {rendered!r} is outside the workspace and the spec's folder"
            )
        try:
            text = _read(path)
        except FileNotFoundError:
            raise PromptInputError(f"{label}: file not found: {path}") from None
        except OSError as exc:
            raise PromptInputError(f"{label}: cannot read {path}: {exc.strerror or exc}") from None
        (after if item.as_ == "context" else before).append(text)
    return before, after


def spec_folder(spec_path: str | None) -> Path | None:
    return Path(spec_path).parent if spec_path else None


def sheet_labels(loaded: LoadedSpec, nums: Mapping[int, str]) -> dict[int, str]:
    """`2 (build)` for a named sheet, `2` otherwise."""
    out = {}
    for num in nums:
        name = loaded.sheet(num).name
        out[num] = f"{num} ({name})" if name else str(num)
    return out


def assembled_prompt(
    task: str,
    loaded: LoadedSpec,
    sheet_num: int,
    ctx: TemplateContext,
    *,
    workspace: Path,
    spec_path: str | None,
    checks: Sequence[Validation],
    previous: Mapping[int, str],
    files: Mapping[str, str],
) -> str:
    """The task with the prelude and cadenzas around it, then the context from earlier
    sheets (unless the template already placed it) and the checks the result must pass."""
    resolved = loaded.sheet(sheet_num)
    folder = spec_folder(spec_path)
    first, last = injected(
        loaded.spec.prelude, "prelude", ctx, workspace=workspace, spec_folder=folder
    )
    own_first, own_last = injected(
        resolved.cadenzas, "cadenzas", ctx, workspace=workspace, spec_folder=folder
    )
    placed = names_read(resolved.prompt) & {"previous_outputs", "previous_files"}
    context = None if placed else context_section(previous, sheet_labels(loaded, previous), files)
    return assemble(
        task, before=first + own_first, after=last + own_last, context=context, checks=checks
    )

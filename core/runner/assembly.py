"""The prompt an AI CLI gets when prompt assembly is on (issue 17): the injected files, the
task, the context from earlier sheets, and the checks the result must pass, in that order.
Pure text: what goes in is read and rendered by the engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from podium.core.spec.models import Validation

CHECKS_HEADER = "When you are done, these checks of your result must pass:"
_OUTPUTS_HEADER = "Output of earlier sheets (the end of each):"
_FILES_HEADER = "Files from earlier sheets:"


def describe_check(check: Validation) -> str:
    """One line a person (or a model) can act on, for a rendered validation."""
    if check.type == "file_exists":
        return f"the file {check.path} exists"
    if check.type == "file_modified":
        return f"the file {check.path} is written or changed by this run"
    if check.type == "content_contains":
        return f"the file {check.path} contains the text {check.pattern!r}"
    if check.type == "content_regex":
        return f"the file {check.path} has a match for the regular expression {check.pattern!r}"
    return f"the command {check.command!r} exits 0 when run in the working directory"


def context_section(
    outputs: Mapping[int, str], labels: Mapping[int, str], files: Mapping[str, str]
) -> str | None:
    parts: list[str] = []
    if outputs:
        parts.append(_OUTPUTS_HEADER)
        for num in sorted(outputs):
            parts.append(f"--- sheet {labels.get(num, str(num))} ---\n{outputs[num].rstrip()}")
    if files:
        parts.append(_FILES_HEADER)
        for path, text in files.items():
            parts.append(f"--- {path} ---\n{text.rstrip()}")
    return "\n".join(parts) if parts else None


def assemble(
    task: str,
    *,
    before: Sequence[str] = (),
    after: Sequence[str] = (),
    context: str | None = None,
    checks: Sequence[Validation] = (),
) -> str:
    if not (before or after or context or checks):
        return task
    blocks = [text.strip() for text in before if text.strip()]
    blocks.append(task.strip())
    blocks.extend(text.strip() for text in after if text.strip())
    if context:
        blocks.append(context)
    if checks:
        blocks.append("\n".join([CHECKS_HEADER, *(f"- {describe_check(c)}" for c in checks)]))
    return "\n\n".join(blocks)

"""A score's prompt as a Podium template: the template (inline or from its file), its stakes
and thinking method, and `{% set %}` lines for the names Marianne templates use that Podium
spells differently or computes per sheet of the batch form only."""

from __future__ import annotations

from pathlib import Path

from podium.core.importer.stages import Plan
from podium.core.importer.tracker import Tracker
from podium.core.spec.models import BUILTIN_TEMPLATE_VARIABLES
from podium.core.spec.templating import TemplateRenderError, names_read, undefined_names

# Marianne's other names for fan-out's stage/instance/count.
_ALIASES = {"movement": "stage", "voice": "instance", "voice_count": "fan_count"}
# Lists Marianne fills with injected text; with prompt assembly Podium puts that text into
# the prompt itself.
_EMPTY_LISTS = ("skipped_upstream", "injected_context", "injected_skills", "injected_tools")


def prompt_template(
    t: Tracker, plan: Plan, variables: set[str], score_dir: Path | None
) -> tuple[str, list[str], dict[str, str]]:
    """(template, names it reads that nothing defines: they become empty variables, the
    variables it needs defined: `stakes` and `thinking_method` where it reads them)."""
    text = t.get("prompt.template")
    if text is None and t.peek("prompt.template_file") is not None:
        name = str(t.get("prompt.template_file"))
        path = (score_dir or Path.cwd()) / name
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"prompt.template_file: cannot read {path}: {exc}") from None
    if not isinstance(text, str) or not text.strip():
        text = "Sheet {{ sheet_num }} of {{ total_sheets }}."
        t.note("prompt", "no template: every sheet gets a one-line prompt naming it")
    try:
        read = names_read(text)
    except Exception as exc:
        raise ValueError(f"prompt.template: not a template Jinja can read: {exc}") from None
    defined: dict[str, str] = {}
    for key in ("stakes", "thinking_method"):
        extra = t.get(f"prompt.{key}")
        if not isinstance(extra, str) or not extra.strip():
            continue
        if key in read and key not in variables:
            # Marianne gives them to the template by name: it places them itself.
            defined[key] = extra.strip()
        else:
            text = f"{text.rstrip()}\n\n{extra.strip()}"
    try:
        read = names_read(text)  # the appended texts may read names too
    except Exception as exc:
        raise ValueError(
            f"prompt.stakes, prompt.thinking_method: not a template Jinja can read: {exc}"
        ) from None
    lines: list[str] = []
    total = len(plan.stages)
    for name in ("total_stages", "total_movements"):
        if name in read:
            lines.append(f"{{% set {name} = {total} %}}")
    for name, podium in _ALIASES.items():
        if name in read:
            lines.append(f"{{% set {name} = {podium} %}}")
    for name in _EMPTY_LISTS:
        if name in read:
            lines.append(f"{{% set {name} = [] %}}")
            t.note("prompt.template", f"{name} is always empty in Podium")
    if not plan.uniform and read & {"start_item", "end_item"}:
        # The explicit form has no items: each sheet computes its own from its stage.
        lines.append(
            f"{{% set start_item = {plan.start_item} + (stage - 1) * {plan.size} %}}"
            f"{{% set end_item = [start_item + {plan.size - 1}, {plan.total_items}] | min %}}"
        )
    template = "".join(lines) + text
    known = BUILTIN_TEMPLATE_VARIABLES | variables | set(defined)
    try:
        missing = [n for n, _ in undefined_names(template, known)]
    except TemplateRenderError as exc:
        raise ValueError(f"prompt.template: {exc}") from None
    for name in missing:
        t.note("prompt.template", f"{name!r} is not a Podium template variable: set to ''")
    return template, missing, defined

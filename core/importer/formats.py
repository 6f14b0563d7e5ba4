"""Small translations between Marianne's text conventions and Podium's."""

from __future__ import annotations

import re
import unicodedata

from podium.core.spec.models import JOB_NAME_PATTERN, SHEET_NAME_PATTERN

# Placeholders Marianne expands with str.format in validation paths and commands.
FORMAT_NAMES = ("workspace", "sheet_num", "start_item", "end_item", "total_sheets")
_FORMAT = re.compile(r"\{(" + "|".join(FORMAT_NAMES) + r")\}")
_JINJA_OPENERS = ("{{", "{%", "{#")
# Marianne's own backend names and the Podium instruments closest to them.
NATIVE_BACKENDS = {"claude_cli": "claude-code"}


def _ascii(text: str) -> str:
    """Letters with accents as their base letters ("Übersetzung" -> "Ubersetzung")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def job_name(text: str) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", _ascii(text).lower()).strip("-_")[:64] or "imported"
    if not re.match(JOB_NAME_PATTERN, slug):
        slug = ("s-" + slug)[:64]
    return slug


def sheet_name(text: str, taken: set[str]) -> str | None:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", _ascii(text)).strip("-._")[:56]
    if not slug or slug.isdigit() or not re.match(SHEET_NAME_PATTERN, slug):
        return None
    name, n = slug, 2
    while name.lower() in taken:
        name, n = f"{slug}-{n}", n + 1
    taken.add(name.lower())
    return name


def _literal(text: str) -> str:
    """Text that Jinja must print as it is."""
    if any(opener in text for opener in _JINJA_OPENERS):
        return "{% raw %}" + text + "{% endraw %}"
    return text


def format_to_jinja(text: str) -> str:
    """A str.format-style string (`{workspace}/out-{sheet_num}.md`) as a Podium template;
    everything else in it (bash's `${x}`, `{a,b}`) stays literal."""
    out: list[str] = []
    last = 0
    for match in _FORMAT.finditer(text):
        out.append(_literal(text[last : match.start()]))
        out.append("{{ " + match.group(1) + " }}")
        last = match.end()
    out.append(_literal(text[last:]))
    return "".join(out)


def workspace_relative(path: str) -> str:
    """`{workspace}/x` (or `{{ workspace }}/x`) as `x`: Podium paths are relative to it."""
    for prefix in ("{workspace}/", "{{ workspace }}/", "{{workspace}}/"):
        if path.startswith(prefix):
            return path[len(prefix) :]
    return path


_CONDITION = re.compile(r"^\s*sheet_num\s*(==|>=|<=|>|<|!=)\s*(\d+)\s*$")


def condition_test(condition: str) -> tuple[str, int] | None:
    """A Marianne validation condition of the simple form `sheet_num OP N`."""
    match = _CONDITION.match(condition)
    return (match.group(1), int(match.group(2))) if match else None


def condition_holds(test: tuple[str, int], sheet_num: int) -> bool:
    op, n = test
    return {
        "==": sheet_num == n,
        ">=": sheet_num >= n,
        "<=": sheet_num <= n,
        ">": sheet_num > n,
        "<": sheet_num < n,
        "!=": sheet_num != n,
    }[op]


def python_to_jinja(expression: str) -> str:
    """The few spellings of a Python condition Jinja reads differently."""
    text = re.sub(r"\bis\s+not\s+None\b", "is not none", expression)
    return re.sub(r"\bis\s+None\b", "is none", text)


# What a notification command sees of its job, in place of Marianne's placeholders.
_ENV = {"workspace": "PODIUM_WORKSPACE", "job_id": "PODIUM_JOB_ID"}
_ENV_FORMAT = re.compile(r"\{(" + "|".join(_ENV) + r")\}")


def format_to_env(command: str) -> str:
    """A hook command's `{workspace}`/`{job_id}` as the environment variables Podium sets."""
    return _ENV_FORMAT.sub(lambda m: '"${' + _ENV[m.group(1)] + '}"', command)

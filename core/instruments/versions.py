"""Does the installed CLI match the version a profile was written for?

`written_for` is prose for people ("Claude Code 2.1.x", "goose 1.x, >=1.10 (notes)"). The
version specs in it are read from the text before any parenthesis: a version with `x`
wildcards (`2.1.x`; `0.14x` means 0.140-0.149) or a comparison (`>=1.10`). The installed
version is the first dotted number the CLI's `--version` prints.
"""

from __future__ import annotations

import re

_SPEC = re.compile(r"(?<![\w.])(>=|<=|>|<|==)?\s*v?(\d+(?:\.\d+)*(?:\.x|x)?)(?![\w.])")
_INSTALLED = re.compile(r"(?<![\w.])v?(\d+(?:\.\d+)+)")
_BARE = re.compile(r"(?<![\w.])v?(\d+)(?![\w.])")


def installed_version(version_line: str | None) -> tuple[int, ...] | None:
    if not version_line:
        return None
    match = _INSTALLED.search(version_line) or _BARE.search(version_line)
    if match is None:
        return None
    return tuple(int(part) for part in match.group(1).split("."))


def _parts(text: str) -> list[int]:
    return [int(p) for p in text.split(".") if p]


def _wildcard_match(pattern: str, version: tuple[int, ...]) -> bool:
    if pattern.endswith(".x"):
        fixed = _parts(pattern[:-2])
        return list(version[: len(fixed)]) == fixed
    if pattern.endswith("x"):
        # "0.14x": every component but the last is exact, the last is a decimal prefix.
        fixed = _parts(pattern[:-1])
        if len(version) < len(fixed):
            return False
        head, last = fixed[:-1], fixed[-1]
        return list(version[: len(head)]) == head and str(version[len(head)]).startswith(str(last))
    wanted = _parts(pattern)
    return list(version[: len(wanted)]) == wanted


def _compare(op: str, wanted: list[int], version: tuple[int, ...]) -> bool:
    size = max(len(wanted), len(version))
    left = list(version) + [0] * (size - len(version))
    right = wanted + [0] * (size - len(wanted))
    return {
        ">=": left >= right,
        "<=": left <= right,
        ">": left > right,
        "<": left < right,
        "==": left == right,
    }[op]


def version_specs(written_for: str | None) -> list[tuple[str, str]]:
    if not written_for:
        return []
    head = re.split(r"[(;]", written_for, maxsplit=1)[0]
    return [(op or "", value) for op, value in _SPEC.findall(head)]


def version_matches(written_for: str | None, version_line: str | None) -> bool | None:
    """True or False; None when either side gives no version to compare."""
    specs = version_specs(written_for)
    version = installed_version(version_line)
    if not specs or version is None:
        return None
    for op, value in specs:
        if op:
            if "x" in value or not _compare(op, _parts(value), version):
                return False
        elif not _wildcard_match(value, version):
            return False
    return True

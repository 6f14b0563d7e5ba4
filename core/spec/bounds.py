"""Size, depth and alias budgets for spec input, checked before anything else reads it.

A spec comes from an agent. 1 KB of YAML with seven levels of aliases expands to millions of
nodes (the server grew by 300 MB and stored 73 MB for one job); text nested 5,000 deep ends
in a RecursionError. Every source is therefore measured first: the text's length, the YAML
document's nesting and aliases while it is composed, and the value's expanded size (what it
would take once written out, with every alias repeated) before a model sees it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from podium.core.errors import FieldError, SpecError

MAX_SPEC_BYTES = 4 * 1024 * 1024  # of spec text (spec_yaml, a spec file), as the MCP body cap
MAX_SPEC_DEPTH = 64  # nesting of mappings and lists; real specs need under 10
MAX_SPEC_ALIASES = 1_000  # YAML alias uses in one document
# Expanded size: one per value plus the characters of every string, with aliases repeated,
# about the size of the spec written out as JSON.
MAX_SPEC_SIZE = 8 * 1024 * 1024
_TOLD_SIZE = 10**12


def refuse(message: str) -> SpecError:
    return SpecError([FieldError("", message)])


def check_text(text: str, what: str) -> None:
    if len(text) > MAX_SPEC_BYTES:
        raise refuse(
            f"{what} is {len(text)} characters; a spec may be at most {MAX_SPEC_BYTES} "
            f"(MAX_SPEC_BYTES)"
        )


def _children(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [*value.keys(), *value.values()]
    if isinstance(value, list | tuple):
        return list(value)
    return []


def check_value(value: Any) -> None:
    """Refuse a value nested deeper than MAX_SPEC_DEPTH, holding itself (a recursive YAML
    alias), or expanding past MAX_SPEC_SIZE. Iterative and memoized by identity, so an alias
    bomb is measured in the time its compact form takes, not its expansion."""
    sizes: dict[int, int] = {}
    # Past the limit the walk goes on (memoized, it costs what the compact form does) so
    # the refusal can say how large the spec is, not only that it is too large.
    too_large = False
    on_path: set[int] = set()
    # (value, depth, children pending?) frames of a post-order walk
    stack: list[tuple[Any, int, bool]] = [(value, 1, True)]
    keep: list[Any] = []  # holds every measured value, so no id is reused during the walk
    while stack:
        node, depth, entering = stack.pop()
        key = id(node)
        if entering:
            if key in sizes:
                continue
            if depth > MAX_SPEC_DEPTH:
                raise refuse(f"the spec is nested deeper than {MAX_SPEC_DEPTH} levels")
            if key in on_path:
                raise refuse("the spec contains itself (a recursive YAML alias)")
            children = _children(node)
            if not children:
                sizes[key] = 1 + (len(node) if isinstance(node, str) else 0)
                keep.append(node)
                continue
            on_path.add(key)
            stack.append((node, depth, False))
            stack.extend((child, depth + 1, True) for child in children)
            continue
        on_path.discard(key)
        total = 1 + sum(sizes[id(child)] for child in _children(node))
        too_large = too_large or total > MAX_SPEC_SIZE
        sizes[key] = total
        keep.append(node)
    if too_large:
        size = sizes[id(value)]
        # An alias bomb's size has hundreds of digits.
        told = str(size) if size < _TOLD_SIZE else f"more than {_TOLD_SIZE}"
        raise refuse(
            f"the spec expands to {told} characters, more than the {MAX_SPEC_SIZE} "
            "(MAX_SPEC_SIZE) a spec may hold; YAML aliases count once per use"
        )

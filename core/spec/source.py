"""Spec text from where a caller gives it: a file read as UTF-8 within MAX_SPEC_BYTES, and
YAML (or JSON) parsed safely, refusing duplicate keys and documents nested too deep or
using too many aliases before they cost anything."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from podium.core.errors import FieldError, SpecError
from podium.core.spec.bounds import MAX_SPEC_ALIASES, MAX_SPEC_BYTES, MAX_SPEC_DEPTH, refuse


class _UniqueKeyLoader(yaml.SafeLoader):
    """Rejects duplicate keys, which plain YAML loading resolves silently to the last one, and
    documents nested too deep or using too many aliases (before they cost anything)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_SPEC_ALIASES:
                raise refuse(f"the YAML uses more than {MAX_SPEC_ALIASES} aliases")
        self._depth += 1
        try:
            if self._depth > MAX_SPEC_DEPTH:
                raise refuse(f"the spec is nested deeper than {MAX_SPEC_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # SafeLoader's scalar constructors raise plain ValueErrors for `2001-13-45` (a date
        # with month 13) or an integer past Python's 4300 digits; those reached the caller as
        # a bare message with no line and no field.
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            value = node.value if isinstance(node.value, str) else ""
            shown = value if len(value) <= 40 else value[:40] + "..."
            kind = node.tag.rsplit(":", 1)[-1]
            why = str(exc).split("; use sys.set_int_max_str_digits()")[0]
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{shown!r} is not a valid {kind}: {why} (quote it to keep it as text)",
                node.start_mark,
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<:` merges are meant to be overridden
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable keys get SafeLoader's own error
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: Path | None) -> Any:
    try:
        # A SafeLoader subclass, so YAML tags cannot build arbitrary Python objects.
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except RecursionError:
        raise refuse(f"the spec is nested deeper than {MAX_SPEC_DEPTH} levels") from None
    except yaml.YAMLError as exc:
        where = f" in {source}" if source else ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where += f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise SpecError([FieldError("", f"invalid YAML{where}: {detail}")]) from None


def read_spec_file(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
        if len(data) > MAX_SPEC_BYTES:
            message = f"spec file {path} is larger than {MAX_SPEC_BYTES} bytes (MAX_SPEC_BYTES)"
        else:
            return data.decode("utf-8")
    except FileNotFoundError:
        message = f"spec file not found: {path}"
    except IsADirectoryError:
        message = f"spec path is a directory, not a file: {path}"
    except UnicodeDecodeError as exc:
        message = f"spec file {path} is not UTF-8 text: {exc.reason}"
    except OSError as exc:
        message = f"cannot read spec file {path}: {exc.strerror or exc}"
    raise SpecError([FieldError("", message)])

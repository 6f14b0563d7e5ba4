"""Which parts of a score were carried over: every value the importer reads is marked, and
what is left unread at the end is reported as dropped, so the report can never miss a field
the mapping forgot."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

_MISSING = object()


def join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


class Tracker:
    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw
        self._used: set[str] = set()
        self.dropped: dict[str, str] = {}
        self.notes: list[tuple[str, str]] = []

    def get(self, path: str, default: Any = None) -> Any:
        """The value at a dotted path (None when absent); it counts as carried over."""
        node: Any = self.raw
        for part in path.split("."):
            if isinstance(node, Mapping):
                node = _lookup(node, part)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = _MISSING
            if node is _MISSING:
                return default
        self._used.add(path)
        return node

    def has(self, path: str) -> bool:
        return self.peek(path) is not None

    def peek(self, path: str) -> Any:
        """The value without marking it carried over."""
        node: Any = self.raw
        for part in path.split("."):
            if isinstance(node, Mapping):
                node = _lookup(node, part)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
            if node is _MISSING:
                return None
        return node

    def use(self, path: str) -> None:
        self._used.add(path)

    def drop(self, path: str, reason: str) -> None:
        """Report `path` as not carried over (it must be present in the score)."""
        if self.peek(path) is not None and path not in self.dropped:
            self.dropped[path] = reason
            self._used.discard(path)

    def note(self, path: str, text: str) -> None:
        self.notes.append((path, text))

    def leftovers(self, reason: Callable[[str], str]) -> None:
        """Everything present but never read becomes a dropped field, reported at the
        highest path of which nothing was read."""
        self._walk(self.raw, "", reason)

    def _walk(self, node: Any, path: str, reason: Callable[[str], str]) -> None:
        if path and (path in self._used or path in self.dropped or _under(path, self.dropped)):
            return
        if path and _under(path, self._used):
            return
        touched = not path or any(u.startswith(path + ".") for u in self._used | set(self.dropped))
        if not touched:
            self.dropped[path] = reason(path)
            return
        if isinstance(node, Mapping):
            for key, value in node.items():
                self._walk(value, join(path, key), reason)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                self._walk(value, join(path, index), reason)
        elif path:
            self.dropped[path] = reason(path)


def _lookup(node: Mapping[Any, Any], part: str) -> Any:
    if part in node:
        return node[part]
    if part.lstrip("-").isdigit() and int(part) in node:
        return node[int(part)]
    return _MISSING


def _under(path: str, prefixes: Mapping[str, Any] | set[str]) -> bool:
    return any(path.startswith(p + ".") for p in prefixes)

"""JSON that keeps what YAML can express and plain JSON cannot: non-string mapping keys
(`{1: Ada, 2: Grace}`), dates, sets and bytes.

A stored spec must load back exactly as it was submitted; plain `json.dumps` turns the key
`1` into `"1"`, and a template reading `characters[sheet_num]` then finds nothing after a
restart. Values JSON cannot hold are wrapped in a one-key object whose key starts with `$`;
a user mapping with a `$`-key is always wrapped too, so decoding is never ambiguous.
"""

from __future__ import annotations

import base64
import json
from datetime import date, datetime
from typing import Any

_MAP = "$map"
_DATE = "$date"
_DATETIME = "$datetime"
_SET = "$set"
_BYTES = "$bytes"
_TAGS = frozenset({_MAP, _DATE, _DATETIME, _SET, _BYTES})


class UnstorableValueError(ValueError):
    """A value no spec can hold (e.g. a Python object); names where it was found."""

    def __init__(self, path: str, kind: str) -> None:
        self.path = path
        super().__init__(f"{path or '<root>'}: a value of type {kind} cannot be stored")


def _key_order(key: Any) -> tuple[str, str]:
    return (type(key).__name__, repr(key))


def to_json_data(value: Any, path: str = "") -> Any:
    """Plain JSON data (dicts with string keys, lists, scalars) that `from_json_data` turns
    back into `value`. Raises UnstorableValueError for anything else."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        plain = all(isinstance(k, str) and not k.startswith("$") for k in value)
        if plain:
            return {k: to_json_data(v, f"{path}.{k}" if path else k) for k, v in value.items()}
        items = []
        for k, v in value.items():
            where = f"{path}.{k}" if path else str(k)
            items.append([to_json_data(k, where), to_json_data(v, where)])
        return {_MAP: items}
    if isinstance(value, list | tuple):
        return [to_json_data(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(value)]
    if isinstance(value, datetime):
        return {_DATETIME: value.isoformat()}
    if isinstance(value, date):
        return {_DATE: value.isoformat()}
    if isinstance(value, set | frozenset):
        members = sorted(value, key=_key_order)
        return {_SET: [to_json_data(v, path) for v in members]}
    if isinstance(value, bytes):
        return {_BYTES: base64.b64encode(value).decode("ascii")}
    raise UnstorableValueError(path, type(value).__name__)


def from_json_data(value: Any) -> Any:
    if isinstance(value, list):
        return [from_json_data(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == _MAP and isinstance(inner, list):
            return {_hashable(from_json_data(k)): from_json_data(v) for k, v in inner}
        if tag == _DATETIME and isinstance(inner, str):
            return datetime.fromisoformat(inner)
        if tag == _DATE and isinstance(inner, str):
            return date.fromisoformat(inner)
        if tag == _SET and isinstance(inner, list):
            return {_hashable(from_json_data(v)) for v in inner}
        if tag == _BYTES and isinstance(inner, str):
            return base64.b64decode(inner)
    return {k: from_json_data(v) for k, v in value.items()}


def _hashable(value: Any) -> Any:
    # YAML allows sequence keys (`? [a, b]`), which load as tuples; lists come back from JSON.
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def dumps(value: Any) -> str:
    return json.dumps(to_json_data(value), ensure_ascii=False)


def loads(text: str) -> Any:
    return from_json_data(json.loads(text))


def canonical(value: Any) -> str:
    """One text per value whatever the key order, for fingerprints."""
    return json.dumps(_sorted(to_json_data(value)), sort_keys=True, separators=(",", ":"))


def _sorted(data: Any) -> Any:
    if isinstance(data, list):
        return [_sorted(v) for v in data]
    if isinstance(data, dict):
        if set(data) == {_MAP}:
            pairs = [[_sorted(k), _sorted(v)] for k, v in data[_MAP]]
            pairs.sort(key=lambda kv: json.dumps(kv[0], sort_keys=True))
            return {_MAP: pairs}
        return {k: _sorted(v) for k, v in data.items()}
    if isinstance(data, float) and data.is_integer():
        # 2 and 2.0 are the same setting (a float field's int default vs. its parsed value).
        return int(data)
    return data

"""Hypothesis strategies for the JSON Schema subset the tools' input schemas use (pydantic's
output: `$ref`/`$defs`, `anyOf`, `enum`, the JSON types with `minimum`/`maximum`/`maxLength`,
`items`, `properties`/`required`). hypothesis-jsonschema does this in general but fails on
current hypothesis releases (6.170), so the fuzz suite carries this small subset itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

Schema = Mapping[str, Any]


def from_schema(
    schema: Schema, *, caps: Mapping[str, float] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Objects valid against a tool's input schema. `caps` lowers a numeric property's
    maximum (a valid `wait_seconds: 50` would make every fuzzed call wait 50 s)."""
    defs = schema.get("$defs", {})
    return _object(schema, defs, caps or {})


def _value(schema: Schema, defs: Mapping[str, Any], cap: float | None) -> st.SearchStrategy[Any]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _value(defs[name], defs, cap)
    if "anyOf" in schema:
        return st.one_of([_value(option, defs, cap) for option in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        return st.text(max_size=min(int(schema.get("maxLength", 40)), 40))
    if kind in ("integer", "number"):
        low = schema.get("minimum")
        high = schema.get("maximum")
        if cap is not None:
            high = cap if high is None else min(high, cap)
        if kind == "integer":
            return st.integers(
                min_value=None if low is None else int(low),
                max_value=None if high is None else int(high),
            )
        return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(_value(schema.get("items", {}), defs, None), max_size=4)
    if kind == "object" and "properties" in schema:
        return _object(schema, defs, {})
    # An object without declared properties (a job spec), or no type: any JSON.
    return st.dictionaries(st.text(max_size=10), st.text(max_size=20) | st.integers(), max_size=4)


def _object(
    schema: Schema, defs: Mapping[str, Any], caps: Mapping[str, float]
) -> st.SearchStrategy[dict[str, Any]]:
    props: Mapping[str, Schema] = schema.get("properties", {})
    required = set(schema.get("required", []))
    fields = {
        name: _value(sub, defs, caps.get(name)) for name, sub in props.items() if name in required
    }
    optional = {
        name: _value(sub, defs, caps.get(name))
        for name, sub in props.items()
        if name not in required
    }
    return st.fixed_dictionaries(fields, optional=optional)

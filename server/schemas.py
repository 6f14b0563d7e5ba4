"""Compact JSON schemas for `tools/list`: every agent pays for them on every session.

Pydantic's schemas carry a title per property, `anyOf [X, null]` for every optional value and
the models' developer docstrings; none of that tells an agent anything the names, types and
field descriptions do not. These functions keep what matters (names, types, enums, bounds,
required fields, descriptions and input defaults) and drop the rest, so the schema still
validates exactly the same documents.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic import BaseModel

# Keywords whose value is a map of name -> subschema.
_SCHEMA_MAPS = ("properties", "$defs", "patternProperties")
# Keywords whose value is one subschema or a list of them.
_SCHEMA_VALUES = ("items", "additionalProperties", "not")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
# What a simple schema may hold and still be merged with `null` into a `type` list.
_MERGEABLE = {
    "type",
    "format",
    "enum",
    "items",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "additionalProperties",
}


def _merge_null(members: list[Any]) -> dict[str, Any] | None:
    """`anyOf [X, {type: null}]` as X with `null` added to its type, when X is simple."""
    if len(members) != 2 or {"type": "null"} not in members:
        return None
    other = members[0] if members[1] == {"type": "null"} else members[1]
    if not isinstance(other, dict) or not isinstance(other.get("type"), str):
        return None
    if not set(other) <= _MERGEABLE:
        return None
    merged = dict(other)
    merged["type"] = [other["type"], "null"]
    if "enum" in merged:
        merged["enum"] = [*merged["enum"], None]
    return merged


def _compact(node: Any, *, output: bool, in_map: bool = False) -> Any:
    if isinstance(node, list):
        return [_compact(item, output=output) for item in node]
    if not isinstance(node, dict):
        return node
    if in_map:  # names -> subschemas: the keys are data, not keywords
        return {key: _compact(value, output=output) for key, value in node.items()}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key == "description" and "properties" in node:
            continue  # a model's docstring, written for developers
        if output and (key == "default" or (key == "additionalProperties" and value is False)):
            continue
        if key in _SCHEMA_MAPS:
            out[key] = _compact(value, output=output, in_map=True)
        elif key in _SCHEMA_VALUES or key in _SCHEMA_LISTS:
            out[key] = _compact(value, output=output)
        else:
            out[key] = value
    members = out.get("anyOf")
    if isinstance(members, list):
        merged = _merge_null(members)
        if merged is not None:
            del out["anyOf"]
            out = {**merged, **out}
    return out


def _is_enum(schema: Any) -> bool:
    return isinstance(schema, dict) and "enum" in schema and set(schema) <= {"enum", "type"}


def _refs(node: Any, counts: dict[str, int]) -> dict[str, int]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            counts[ref] = counts.get(ref, 0) + 1
        for value in node.values():
            _refs(value, counts)
    elif isinstance(node, list):
        for item in node:
            _refs(item, counts)
    return counts


def _inline(node: Any, inline: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, inline) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref in inline and len(node) == 1:
        return dict(inline[ref])
    return {key: _inline(value, inline) for key, value in node.items()}


def _inline_enums(schema: dict[str, Any]) -> dict[str, Any]:
    """An enum used once costs less inline than its name twice plus a `$defs` entry."""
    defs = schema.get("$defs")
    if not isinstance(defs, dict):
        return schema
    counts = _refs(schema, {})
    inline = {
        f"#/$defs/{name}": d
        for name, d in defs.items()
        if _is_enum(d) and counts.get(f"#/$defs/{name}", 0) <= 1
    }
    result: dict[str, Any] = _inline(schema, inline)
    kept = {name: d for name, d in defs.items() if f"#/$defs/{name}" not in inline}
    if kept:
        result["$defs"] = {name: result["$defs"][name] for name in kept}
    else:
        del result["$defs"]
    return result


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    kind = prop.get("type")
    if isinstance(kind, list) and "null" in kind:
        rest = [k for k in kind if k != "null"]
        prop["type"] = rest[0] if len(rest) == 1 else rest
    members = prop.get("anyOf")
    if isinstance(members, list) and {"type": "null"} in members:
        members = [m for m in members if m != {"type": "null"}]
        if len(members) == 1 and isinstance(members[0], dict):
            del prop["anyOf"]
            prop.update(members[0])
        else:
            prop["anyOf"] = members
    if prop.get("default", ...) is None:
        del prop["default"]
    return prop


def _optional_not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional argument is given by leaving it out: the schema need not offer `null`
    (the server still accepts one) nor say that it defaults to null."""
    props = schema.get("properties")
    if isinstance(props, dict):
        for prop in props.values():
            if isinstance(prop, dict):
                _not_null(prop)
    return schema


def _enum_untyped(node: Any) -> Any:
    """An enum lists its values; its `type` adds nothing."""
    if isinstance(node, dict):
        if "enum" in node:
            node.pop("type", None)
        for value in node.values():
            _enum_untyped(value)
    elif isinstance(node, list):
        for item in node:
            _enum_untyped(item)
    return node


_SCALARS = {"string", "integer", "number", "boolean", "null"}


def _untyped_scalars(node: Any) -> Any:
    """In outputs, a scalar field's type is plain from its value; its name (and description)
    is what an agent needs. Enums, arrays and objects keep their shape."""
    if isinstance(node, dict):
        props = node.get("properties")
        if isinstance(props, dict):
            for name, prop in props.items():
                kind = prop.get("type") if isinstance(prop, dict) else None
                kinds = set(kind) if isinstance(kind, list) else {kind}
                if kinds <= _SCALARS and "enum" not in prop:
                    props[name] = {k: v for k, v in prop.items() if k == "description"}
        for value in node.values():
            _untyped_scalars(value)
    elif isinstance(node, list):
        for item in node:
            _untyped_scalars(item)
    return node


def _drop_required(node: Any) -> Any:
    if isinstance(node, dict):
        node.pop("required", None)
        for value in node.values():
            _drop_required(value)
    elif isinstance(node, list):
        for item in node:
            _drop_required(item)
    return node


def compact_input_schema(schema: dict[str, Any]) -> dict[str, Any]:
    inlined = _inline_enums(_compact(schema, output=False))
    result: dict[str, Any] = _compact(inlined, output=False)
    return _enum_untyped(_optional_not_null(result))  # type: ignore[no-any-return]


def compact_output_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Every field of an output is always present (null when it does not apply; the server's
    instructions say so once), so neither `required` lists nor defaults add anything; extra
    fields may be added later, so `additionalProperties: false` is no promise either."""
    inlined = _inline_enums(_compact(schema, output=True))
    result: dict[str, Any] = _compact(inlined, output=True)
    return _enum_untyped(_untyped_scalars(_drop_required(result)))  # type: ignore[no-any-return]


def _field_summary(schema: Any, defs: dict[str, Any], depth: int = 0) -> str:
    """`a, b (x|y), c [d, e]`: the fields of an object schema, enum values and the fields of
    nested rows, as text."""
    if not isinstance(schema, dict):
        return ""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        schema = defs.get(ref.rsplit("/", 1)[-1], {})
    parts = []
    for name, prop in (schema.get("properties") or {}).items():
        part = name
        if isinstance(prop, dict):
            values = prop.get("enum")
            target = prop.get("items") if prop.get("type") == "array" else prop
            if isinstance(values, list):
                part += " (" + "|".join("null" if v is None else str(v) for v in values) + ")"
            elif depth < 2 and isinstance(target, dict) and ("$ref" in target or "anyOf" in target):
                member = target
                if "anyOf" in target:
                    member = next((m for m in target["anyOf"] if "$ref" in m), target)
                inner = _field_summary(member, defs, depth + 1)
                if inner:
                    brackets = "[{}]" if prop.get("type") == "array" else "{{{}}}"
                    part += " " + brackets.format(inner)
        parts.append(part)
    return ", ".join(parts)


def _described_rows(node: Any, defs: dict[str, Any]) -> Any:
    """A list of records (50 job summaries, 100 sheets) as `{type: array, description:
    "each: <its fields>"}`, with no `items` schema: the SDK client validates every result
    against the output schema, and descending into each row (even only to check that it is
    an object) costs it more than the rest of the call; the field names and values an agent
    needs stay in the description."""
    if isinstance(node, list):
        return [_described_rows(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    items = node.get("items")
    if node.get("type") == "array" and isinstance(items, dict) and "$ref" in items:
        each = "each: " + _field_summary(items, defs)
        described = node.get("description")
        return {
            **{k: v for k, v in node.items() if k not in ("items", "description")},
            "description": f"{described}; {each}" if described else each,
        }
    return {key: _described_rows(value, defs) for key, value in node.items()}


def _drop_unused_defs(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.get("$defs")
    if not isinstance(defs, dict):
        return schema
    used: set[str] = set()
    todo = [{k: v for k, v in schema.items() if k != "$defs"}]
    while todo:
        counts = _refs(todo.pop(), {})
        for ref in counts:
            name = ref.rsplit("/", 1)[-1]
            if name not in used and name in defs:
                used.add(name)
                todo.append(defs[name])
    kept = {name: d for name, d in defs.items() if name in used}
    result = {k: v for k, v in schema.items() if k != "$defs"}
    if kept:
        result["$defs"] = kept
    return result


def model_output_schema(*models: type[BaseModel]) -> dict[str, Any]:
    """The output schema of a tool that returns one of `models`, with shared `$defs`: a
    copy of the one built the first time (every server built in a process, a test suite's
    hundreds, would spend milliseconds a tool generating the same schema again)."""
    return copy.deepcopy(_output_schema(models))


@functools.cache
def _output_schema(models: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    variants = []
    for model in models:
        schema = model.model_json_schema(ref_template="#/$defs/{model}", mode="serialization")
        defs.update(schema.pop("$defs", {}))
        variants.append(schema)
    combined: dict[str, Any] = (
        variants[0] if len(variants) == 1 else {"type": "object", "anyOf": variants}
    )
    if defs:
        combined["$defs"] = defs
    compact = compact_output_schema(combined)
    described = _described_rows(compact, compact.get("$defs") or {})
    return _drop_unused_defs(described)

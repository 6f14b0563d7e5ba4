"""A boolean is never a number in a spec or an instrument profile, and only a boolean is a
boolean.

Pydantic's lax mode reads `true` as 1 and `false` as 0 for a whole number or a number, and
YAML reads `yes`, `no`, `on` and `off` as booleans too, so `fan_out: yes` would quietly run one
instance and `priority: on` would be priority 1. Every model built on `NumbersNotBooleans`
refuses a boolean wherever its schema has a number: its own fields, list items, mapping
values, union members (a union that also takes booleans still takes them, through its boolean
member), now and in every field added later, with no per-field declaration to forget.

Everything else lax mode accepts stays accepted (`"5"`, `5.0` for a whole number, `"1e3"`,
which YAML leaves a string), so only a boolean is refused that loaded before. A stored spec
never holds one where a number belongs: specs are stored as their models dump them, numbers
as numbers.

The other way round, lax mode reads `1`, `0`, `"yes"`, `"off"` or `"true"` as a boolean, so
`retry_feedback: 0` or a quoted `prompt_assembly: "no"` would pass as a setting nobody wrote
in those words: a boolean field takes `true` or `false` only (YAML's unquoted yes/no/on/off
are booleans already, and stay accepted).

It is done on the model's finished core schema, where every number is an `int` or `float`
schema with its bounds already applied, and each is wrapped in a check that runs first. A
validator on the number's type instead would run before its bounds, which pydantic then
applies by a function of their own and writes into the JSON schema (`podium://spec/schema`)
under their Python names (`gt`, `le`) instead of `exclusiveMinimum` and `maximum`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

# Error types of a boolean given for a number and of anything else given for a boolean
# (field_errors.py shows their messages as they are).
BOOLEAN_NUMBER_ERROR = "boolean_number"
STRICT_BOOLEAN_ERROR = "strict_boolean"


def _refusing(wanted: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise PydanticCustomError(
                BOOLEAN_NUMBER_ERROR,
                "{wanted} is required (got {got})",
                {"wanted": wanted, "got": "true" if value else "false"},
            )
        return value

    return check


def _only_booleans(value: Any) -> Any:
    if not isinstance(value, bool):
        # As the spec wrote it: JSON spells a string with double quotes, null as null.
        got = (
            json.dumps(value)
            if isinstance(value, str | int | float) or value is None
            else (type(value).__name__)
        )
        raise PydanticCustomError(
            STRICT_BOOLEAN_ERROR, "must be true or false (got {got})", {"got": got}
        )
    return value


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "int": _refusing("a whole number"),
    "float": _refusing("a number"),
    "bool": _only_booleans,
}
_CHECK_FUNCTIONS = frozenset(_CHECKS.values())
# Keys of a core schema that hold no schema to validate input with: values (a default, a
# literal's choices), serialization, metadata, and the schema a validator function only shows
# in the JSON schema.
_NOT_VALIDATING = frozenset(
    {"default", "expected", "metadata", "serialization", "json_schema_input_schema", "function"}
)


def _checked(node: Any, seen: dict[int, Any]) -> Any:
    """`node` (a core schema, or a part of one) with every int and float schema in it
    checked first for booleans, and every bool schema for anything else. Returns new dicts:
    a schema pydantic cached is not changed."""
    if isinstance(node, list | tuple):
        return type(node)(_checked(item, seen) for item in node)
    if not isinstance(node, dict):
        return node
    key = id(node)
    if key in seen:
        return seen[key]
    kind = node.get("type")
    if kind == "function-before" and node.get("function", {}).get("function") in _CHECK_FUNCTIONS:
        done: Any = node  # already checked: the schema of a model nested in another
    elif isinstance(kind, str) and kind in _CHECKS:
        done = core_schema.no_info_before_validator_function(_CHECKS[kind], node)
    else:
        done = {
            name: value if name in _NOT_VALIDATING else _checked(value, seen)
            for name, value in node.items()
        }
    seen[key] = done
    return done


class NumbersNotBooleans(BaseModel):
    """Base of the models a user writes (spec, instrument profile): see the module docstring."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[BaseModel], handler: GetCoreSchemaHandler, /
    ) -> CoreSchema:
        return cast(CoreSchema, _checked(handler(source), {}))

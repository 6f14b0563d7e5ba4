"""Pydantic validation errors of a job spec as `FieldError`s: dotted data paths from the
spec root (0-based list indices, no pydantic union tags), and messages that say what is
allowed and, for the common misplacements, where a field belongs."""

from __future__ import annotations

import difflib
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from podium.core.errors import FieldError
from podium.core.spec.models import (
    FORM_ERROR_TYPE,
    VALIDATION_TYPES,
    BatchSheetSpec,
    CommandSucceedsValidation,
    ConcurrencySpec,
    ContentContainsValidation,
    ContentRegexValidation,
    FileExistsValidation,
    FileModifiedValidation,
    InstrumentConfig,
    JobSpec,
    PromptTemplate,
    RetryPolicy,
    SheetSpec,
)
from podium.core.spec.numbers import BOOLEAN_NUMBER_ERROR, STRICT_BOOLEAN_ERROR


def describe_kind(value: object) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    for cls, name in names.items():
        if isinstance(value, cls):
            return name
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def _members(annotation: Any) -> list[Any]:
    """The concrete types an annotation allows (Annotated and unions unwrapped)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is UnionType:
        return [m for arg in get_args(annotation) for m in _members(arg) if m is not NoneType]
    return [annotation]


def _step(annotation: Any, segment: int | str) -> tuple[Any, bool]:
    """The annotation one location segment further down, and whether the segment was a
    discriminated-union tag that pydantic adds to locations (not part of the data path)."""
    members = _members(annotation)
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    # Only a union of models (validations, notifications) has tags; one tag can also be a
    # field name of its own model (a `command` notification has a `command`).
    if len(models) > 1:
        for model in models:
            tag_field = model.model_fields.get("type")
            if tag_field is not None and tag_field.default == segment:
                return model, True
    for member in members:
        if isinstance(member, type) and issubclass(member, BaseModel):
            if isinstance(segment, str) and segment in member.model_fields:
                return member.model_fields[segment].annotation, False
        elif get_origin(member) is list and isinstance(segment, int):
            return get_args(member)[0], False
        elif get_origin(member) is dict:
            return get_args(member)[1], False
    return None, False


def _walk(loc: tuple[int | str, ...]) -> tuple[str, type[BaseModel] | None]:
    """Dotted data path for a pydantic location, and the model found at its end."""
    parts: list[str] = []
    annotation: Any = JobSpec
    for segment in loc:
        if segment == "[key]":
            continue
        if annotation is not None:
            annotation, is_tag = _step(annotation, segment)
            if is_tag:
                continue
        parts.append(str(segment))
    models = [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
    return ".".join(parts), models[0] if len(models) == 1 else None


_JOB_NAME_HINT = (
    "ASCII lowercase letters, digits, '-' and '_'; starts with a letter or digit; 1-64 long"
)
# Pydantic's wording, rephrased to read after a field path ("priority: must be ...").
_MESSAGE_STARTS = (
    ("Input should ", "must "),
    ("String should ", "must "),
    ("List should ", "must "),
    ("Value should ", "must "),
    ("Keys should ", "field names must "),
)
_SHEET_NAME_HINT = (
    "ASCII letters, digits, '.', '-' and '_'; starts with a letter or digit; 1-64 long"
)


_VALIDATION_MODELS: tuple[type[BaseModel], ...] = (
    FileExistsValidation,
    FileModifiedValidation,
    ContentContainsValidation,
    ContentRegexValidation,
    CommandSucceedsValidation,
)


def misplaced_hint(field: str, here: type[BaseModel] | None) -> str | None:
    """Where a field that is unknown in `here` does belong, for the common misplacements
    (a top-level `timeout_seconds`, a sheet-level `retry`, a top-level `depends_on`...)."""
    if here is None:
        return None
    on_sheet = here is SheetSpec
    homes: list[tuple[type[BaseModel], str]] = [
        (
            InstrumentConfig,
            "it belongs under this sheet's instrument_config"
            if on_sheet
            else "it belongs under instrument_config (defaults for every sheet) or a sheet's "
            "instrument_config",
        ),
        (JobSpec, "it is a job-level field: set it at the top level of the spec"),
        (SheetSpec, "it belongs on a sheet (an entry of sheets)"),
        (RetryPolicy, "it belongs under retry"),
        (ConcurrencySpec, "it belongs under concurrency"),
        (BatchSheetSpec, "it belongs under sheet (the batch form: sheet: {size, total_items})"),
        (PromptTemplate, "it belongs under prompt (the batch form: prompt: {template: ...})"),
        *((m, "it belongs in a validation (an entry of validations)") for m in _VALIDATION_MODELS),
    ]
    for model, hint in homes:
        if model is not here and field in model.model_fields:
            if here in _VALIDATION_MODELS and model in _VALIDATION_MODELS:
                kinds = [
                    str(m.model_fields["type"].default)
                    for m in _VALIDATION_MODELS
                    if field in m.model_fields
                ]
                return f"only these validation types take it: {', '.join(kinds)}"
            return hint
    return None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _message(error: ErrorDetails, path: str) -> str:
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    value = error.get("input")
    field = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        _, model = _walk(loc[:-1])
        allowed = list(model.model_fields) if model else []
        belongs = misplaced_hint(field, model)
        close = difflib.get_close_matches(field, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        if belongs:
            hint = f"; {belongs}"
        return f"unknown field {field!r}{hint}; allowed fields: {', '.join(allowed)}"
    if kind == "missing":
        return f"missing required field {field!r}"
    if kind == "literal_error":
        return f"invalid value {_short(value)}; allowed values: {ctx.get('expected')}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        types = ", ".join(VALIDATION_TYPES)
        if kind == "union_tag_not_found":
            return f"missing field 'type'; allowed validation types: {types}"
        return f"unknown validation type {ctx.get('tag')!r}; allowed validation types: {types}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        # `concurrency: 4` for `concurrency: {max_parallel_sheets: 4}`: say what goes in it.
        _, model = _walk(loc)
        fields = f" (fields: {', '.join(model.model_fields)})" if model is not None else ""
        return f"expected a mapping{fields}, got {describe_kind(value)}"
    if kind == "list_type":
        return f"expected a list, got {describe_kind(value)}"
    if kind in ("sheet_ref", BOOLEAN_NUMBER_ERROR, STRICT_BOOLEAN_ERROR):
        return error["msg"]
    if kind in ("too_short", "too_long"):
        bound = ctx.get("min_length" if kind == "too_short" else "max_length")
        limit = "at least" if kind == "too_short" else "at most"
        return f"must have {limit} {bound} item(s), got {ctx.get('actual_length')}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "string_pattern_mismatch":
        hint = {"name": _JOB_NAME_HINT}.get(path, _SHEET_NAME_HINT if field == "name" else "")
        described = f" ({hint})" if hint else ""
        return f"{_short(value)} does not match the pattern {ctx.get('pattern')}{described}"
    message = error["msg"]
    for prefix, start in _MESSAGE_STARTS:
        if message.startswith(prefix):
            message = start + message[len(prefix) :]
            break
    if "[key]" in loc or kind == "dict_key_type":  # the key is wrong, not its value
        message = "key " + message
    secret = ".env." in f".{path}."  # never echo an environment value
    if not secret and not isinstance(value, dict | list) and kind != "missing":
        message += f" (got {_short(value)})"
    return message


def field_errors(exc: ValidationError) -> list[FieldError]:
    found: list[FieldError] = []
    for error in exc.errors(include_url=False):
        if error["type"] == FORM_ERROR_TYPE:
            continue  # reported from the raw data with precise paths (see form_errors)
        path, _ = _walk(error["loc"])
        found.append(FieldError(path, _message(error, path)))
    return found

"""A spec checked against the instruments it names: unknown ones, ones that cannot run a
sheet which has no installed fallback, and settings an instrument has no notion of."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from podium.core.errors import FieldError
from podium.core.spec.models import JobSpec, SheetSpec

if TYPE_CHECKING:
    from podium.core.spec.loader import ResolvedSheet


@dataclass(frozen=True)
class InstrumentTraits:
    """What the loader needs to know of an instrument to check a spec against it."""

    problem: str | None = None  # why the instrument cannot be used; None when it can
    known: bool = True  # False: no such instrument (a typo), not merely one not installed
    permission_modes: frozenset[str] = frozenset()
    accepts_model: bool = False
    runs_nothing: bool = False  # an approval gate: no process, so nothing to validate


InstrumentLookup = Callable[[str], InstrumentTraits]


def _config_origin(
    spec: JobSpec, sheet: SheetSpec | None, index: int, field: str
) -> tuple[str, bool] | None:
    """Where a sheet's effective `field` was set: (path, set on the sheet itself)."""
    own = sheet.instrument_config if sheet is not None else None
    if own is not None and field in own.model_fields_set:
        if getattr(own, field) is None:
            return None  # cleared on the sheet
        return f"sheets.{index}.instrument_config.{field}", True
    if getattr(spec.instrument_config, field) is not None:
        return f"instrument_config.{field}", False
    return None


def _check_instrument_settings(
    spec: JobSpec,
    resolved: ResolvedSheet,
    sheet: SheetSpec | None,
    index: int,
    traits: InstrumentTraits,
) -> list[FieldError]:
    """A job-level default that an instrument has no notion of (a permission mode or model
    for `shell`) does not apply to that instrument's sheets; set on the sheet itself it is an
    error, and so is a value the instrument does not know. Never a run-time failure."""
    errors: list[FieldError] = []
    config = resolved.instrument_config
    name = resolved.instrument
    mode = config.permission_mode
    origin = _config_origin(spec, sheet, index, "permission_mode")
    if mode is not None and origin is not None:
        path, on_sheet = origin
        if not traits.permission_modes:
            if on_sheet:
                errors.append(
                    FieldError(path, f"instrument {name!r} has no permission modes; remove it")
                )
        elif mode not in traits.permission_modes:
            allowed = ", ".join(sorted(traits.permission_modes))
            errors.append(
                FieldError(
                    path,
                    f"instrument {name!r} has no permission mode {mode!r} (allowed: {allowed})",
                )
            )
    origin = _config_origin(spec, sheet, index, "model")
    if config.model is not None and origin is not None and not traits.accepts_model:
        path, on_sheet = origin
        if on_sheet:
            errors.append(FieldError(path, f"instrument {name!r} takes no model; remove it"))
    if traits.runs_nothing and sheet is not None and sheet.validations:
        errors.append(
            FieldError(
                f"sheets.{index}.validations",
                f"instrument {name!r} runs nothing, so there is nothing to validate: an "
                "approval would pass these unchecked; remove them (a later sheet can check)",
            )
        )
    return errors


def check_instruments(
    spec: JobSpec, sheets: list[ResolvedSheet], lookup: InstrumentLookup
) -> list[FieldError]:
    """Unknown instruments, and instruments that cannot run a sheet which has no installed
    fallback; a sheet whose own instrument is missing starts on its first installed one."""
    traits: dict[str, InstrumentTraits] = {}

    def get(name: str) -> InstrumentTraits:
        found = traits.get(name)
        if found is None:
            found = traits[name] = lookup(name)
        return found

    errors: list[FieldError] = []
    for resolved in sheets:
        index = resolved.stage - 1
        sheet = spec.sheets[index] if spec.sheets else None
        named_here = sheet is not None and sheet.instrument is not None
        path = f"sheets.{index}.instrument" if named_here else "instrument"
        primary = get(resolved.instrument)
        if primary.problem is None:
            errors.extend(_check_instrument_settings(spec, resolved, sheet, index, primary))
        elif not (primary.known and any(get(f).problem is None for f in resolved.fallbacks)):
            errors.append(FieldError(path, primary.problem))
        own = sheet is not None and sheet.fallbacks is not None
        listed = (sheet.fallbacks or []) if own and sheet is not None else spec.fallbacks
        prefix = f"sheets.{index}.fallbacks" if own else "fallbacks"
        for j, name in enumerate(listed):
            found = get(name)
            if not found.known and found.problem is not None:
                errors.append(FieldError(f"{prefix}.{j}", found.problem))
            elif found.runs_nothing and not primary.runs_nothing:
                # The sheet's prompt is work to do, not a question: a gate in its place would
                # ask it of a person and complete the sheet without doing it.
                errors.append(
                    FieldError(
                        f"{prefix}.{j}",
                        f"instrument {name!r} runs nothing, so it cannot stand in for "
                        f"{resolved.instrument!r}; list instruments that run the prompt (an "
                        "approval is a sheet of its own)",
                    )
                )
    # A job-level value wrong for several sheets' instrument is one error, not one per sheet.
    return list(dict.fromkeys(errors))

"""A spec as data: the storable form that loads back to the same spec (and fingerprints
equal specs equally), and the redacted copy views show."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from podium.core.spec.models import InstrumentConfig, JobSpec

REDACTED = "***"


def _config_to_storable(config: InstrumentConfig) -> dict[str, Any]:
    # Only the fields given: an explicit null must survive a round trip, because merging
    # treats "given as null" (clear the job's value) differently from "not given".
    return config.model_dump(exclude_unset=True)


def spec_to_storable(spec: JobSpec) -> dict[str, Any]:
    """Data that loads back to the same spec; defaults are filled in, so equivalent specs
    give equal data (and fingerprints). Python mode, not JSON mode: `variables` keep their
    key types (`{1: Ada}` stays an int key); the store writes it with `jsondata`, which
    keeps them too."""
    data = spec.model_dump(exclude_none=True, exclude={"instrument_config", "sheets"})
    data["instrument_config"] = _config_to_storable(spec.instrument_config)
    if spec.sheets is not None:
        sheets: list[dict[str, Any]] = []
        for sheet in spec.sheets:
            item = sheet.model_dump(exclude_none=True, exclude={"instrument_config"})
            if sheet.instrument_config is not None:
                config = _config_to_storable(sheet.instrument_config)
                if config:
                    item["instrument_config"] = config
            sheets.append(item)
        data["sheets"] = sheets
    return {key: data[key] for key in JobSpec.model_fields if key in data}


def redact_spec(data: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy with the values of every instrument_config.env replaced by "***"."""
    out = copy.deepcopy(dict(data))

    def redact(block: Any) -> None:
        if isinstance(block, dict) and isinstance(block.get("env"), dict):
            block["env"] = dict.fromkeys(block["env"], REDACTED)

    redact(out.get("instrument_config"))
    sheets = out.get("sheets")
    if isinstance(sheets, list):
        for sheet in sheets:
            if isinstance(sheet, dict):
                redact(sheet.get("instrument_config"))
    return out

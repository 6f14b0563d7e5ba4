"""A Marianne score's instruments as Podium instruments: its named aliases, its legacy
`backend` block, and the flat `instrument_config` dictionaries."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from podium.core.importer.formats import NATIVE_BACKENDS
from podium.core.importer.tracker import Tracker, join
from podium.core.instruments.catalog import builtin_profiles

DEFAULT_INSTRUMENT = "claude-code"
# Marianne instrument_config keys that mean the same as Podium's.
_CONFIG_KEYS = {"model": "model", "cli_model": "model", "timeout_seconds": "timeout_seconds"}


@functools.cache
def known_instruments() -> frozenset[str]:
    """The built-in profile names (parsing the profiles costs more than an import)."""
    return frozenset(builtin_profiles())


def config_block(t: Tracker, path: str) -> dict[str, Any]:
    """A flat Marianne instrument config as Podium `instrument_config` keys; other keys
    are reported as dropped."""
    block = t.peek(path)
    out: dict[str, Any] = {}
    if not isinstance(block, Mapping):
        return out
    for key, value in block.items():
        where = join(path, key)
        podium_key = _CONFIG_KEYS.get(str(key))
        if podium_key is None or value is None:
            t.drop(where, f"{key!r} is not an instrument setting Podium has")
            continue
        out[podium_key] = t.get(where)
    return out


class Instruments:
    """Resolves the names a score uses (aliases, profiles, native backends)."""

    def __init__(self, t: Tracker) -> None:
        self.t = t
        self.known = known_instruments()
        self.aliases: dict[str, tuple[str, dict[str, Any]]] = {}
        defs = t.peek("instruments")
        if isinstance(defs, Mapping):
            for alias in defs:
                where = join("instruments", alias)
                profile = t.get(join(where, "profile"))
                if not isinstance(profile, str):
                    t.drop(where, "an instrument alias needs a profile")
                    continue
                config = config_block(t, join(where, "config"))
                self.aliases[str(alias)] = (self.profile(profile, where), config)
        self.default, self.default_config = self._score_default()

    def profile(self, name: str, where: str) -> str:
        """A profile name as Podium knows it (noting the ones it does not ship)."""
        name = NATIVE_BACKENDS.get(name, name)
        if name not in self.known:
            self.t.note(where, f"instrument {name!r} is not built into Podium: add a profile "
                        f"for it in <home>/instruments/ before submitting")  # fmt: skip
        return name

    def resolve(self, name: str, where: str) -> tuple[str, dict[str, Any]]:
        """(Podium instrument, the alias's settings) for a name a score uses."""
        if name in self.aliases:
            return self.aliases[name]
        return self.profile(name, where), {}

    def _score_default(self) -> tuple[str, dict[str, Any]]:
        t = self.t
        config = config_block(t, "instrument_config")
        named = t.get("instrument")
        backend = t.peek("backend.type")
        if isinstance(named, str):
            instrument, alias_config = self.resolve(named, "instrument")
            return instrument, {**alias_config, **config}
        if backend is None or backend in NATIVE_BACKENDS:
            t.use("backend.type")
            return DEFAULT_INSTRUMENT, config
        if isinstance(backend, str) and backend in self.known:
            t.use("backend.type")
            return backend, config
        t.drop(
            "backend.type",
            f"backend {backend!r} has no Podium instrument (Podium runs CLIs); "
            f"the sheets use {DEFAULT_INSTRUMENT}",
        )
        return DEFAULT_INSTRUMENT, config


def backend_settings(t: Tracker, instrument: str) -> tuple[dict[str, Any], list[str]]:
    """Job-wide instrument settings from the legacy `backend` block, and the permission
    mode to give the sheets that run Claude Code."""
    config: dict[str, Any] = {}
    extra: list[str] = []
    if t.has("backend.cli_model"):
        config["model"] = t.get("backend.cli_model")
    if t.has("backend.timeout_seconds"):
        config["timeout_seconds"] = t.get("backend.timeout_seconds")
    if t.has("backend.cli_extra_args"):
        extra.extend(str(a) for a in t.get("backend.cli_extra_args") or [])
    tools = t.peek("backend.allowed_tools")
    if tools and instrument == DEFAULT_INSTRUMENT:
        extra.extend(["--allowedTools", ",".join(str(x) for x in t.get("backend.allowed_tools"))])
    if extra:
        config["extra_args"] = extra
    # Marianne skips Claude's permission prompts unless told not to (unattended runs).
    skip = t.get("backend.skip_permissions")
    modes = ["bypass"] if skip is not False else []
    return config, modes

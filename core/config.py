"""Configuration: one pydantic model; CLI flag > env `PODIUM_<KEY>` > config.yaml > default."""

from __future__ import annotations

import difflib
import hashlib
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from podium.core.errors import PodiumError

ENV_PREFIX = "PODIUM_"


class ConfigError(PodiumError):
    pass


# Durations are bounded: each becomes a moment (now +/- it), and an unbounded one (1e300)
# overflowed there, so the conductor could not start, or stopped at its next cleanup.
_YEAR_SECONDS = 365 * 24 * 3600
_TEN_YEARS_HOURS = 10 * 365 * 24


class PodiumConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path
    max_concurrent_jobs: int = Field(8, ge=1, le=10_000)
    max_concurrent_sheets: int = Field(4, ge=1, le=10_000)
    max_memory_mb: int = Field(4096, ge=16)
    max_processes: int = Field(256, ge=1)
    snapshot_ttl_hours: float = Field(168, ge=0, le=_TEN_YEARS_HOURS)
    # How long a durable task (a run_job call answered with a task handle) is kept, from its
    # creation; then tasks/get answers that it expired and the row is purged.
    task_ttl_hours: float = Field(168, gt=0, le=_TEN_YEARS_HOURS)
    allowed_roots: list[Path] = Field(default_factory=list)
    log_max_bytes: int = Field(10_485_760, ge=1024)
    monitor_interval_seconds: float = Field(5, gt=0, le=3600)
    auto_resume: bool = False
    kill_grace_seconds: float = Field(10, ge=0, le=3600)
    max_rate_limit_wait_seconds: float = Field(21600, gt=0, le=_YEAR_SECONDS)
    max_rate_limit_retries: int = Field(20, ge=0)
    # None: a started conductor runs until stopped.
    idle_exit_minutes: float | None = Field(None, gt=0, le=_YEAR_SECONDS / 60)
    # Filled from `home` when not given (see _derived_defaults).
    store_url: str = Field("", min_length=0)
    conductor_id: str = Field("", max_length=200)
    lease_seconds: float = Field(30, gt=0, le=86400)
    # Labels a job's `hosts` can name to run on this conductor (besides its conductor_id and
    # its host name).
    host_labels: list[str] = Field(default_factory=list)

    @property
    def run_labels(self) -> frozenset[str]:
        """Every label under which this conductor runs a job restricted by `hosts`."""
        return frozenset({*self.host_labels, self.conductor_id, socket.gethostname()})

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any) -> Any:
        """`store_url` and `conductor_id` default to values derived from the home."""
        if isinstance(data, dict) and data.get("home") is not None:
            home = Path(data["home"])
            if not data.get("store_url"):
                data = {**data, "store_url": f"sqlite://{home / 'podium.db'}"}
            if not data.get("conductor_id"):
                digest = hashlib.sha256(str(home).encode()).hexdigest()[:8]
                data = {**data, "conductor_id": f"{socket.gethostname()}-{digest}"}
        return data

    @property
    def db_path(self) -> Path:
        return self.home / "podium.db"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def snapshots_dir(self) -> Path:
        return self.home / "snapshots"

    @property
    def workspaces_dir(self) -> Path:
        return self.home / "workspaces"

    @property
    def instruments_dir(self) -> Path:
        return self.home / "instruments"

    @property
    def lock_path(self) -> Path:
        return self.home / "conductor.lock"

    @property
    def conductor_file(self) -> Path:
        return self.home / "conductor.json"

    @property
    def config_path(self) -> Path:
        return self.home / "config.yaml"

    def roots(self) -> list[Path]:
        """Where workspaces may live: the home's workspaces dir plus configured roots."""
        return [
            self.workspaces_dir.resolve(),
            *(Path(os.path.realpath(r)) for r in self.allowed_roots),
        ]


def default_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    value = env.get(ENV_PREFIX + "HOME")
    return Path(value).expanduser() if value else Path.home() / ".podium"


def _env_values(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, field in PodiumConfig.model_fields.items():
        if key == "home":
            continue
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is None:
            continue
        if field.annotation is not None and "list" in str(field.annotation):
            values[key] = [p for p in raw.split(os.pathsep) if p]
        else:
            values[key] = raw
    return values


def _gathered(
    home: Path, overrides: Mapping[str, Any] | None, env: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings from config.yaml, the environment and `overrides`, merged by precedence,
    and where each key's value came from."""
    merged: dict[str, Any] = {}
    # Where each key's value came from, so an error names the one place to fix.
    origin: dict[str, str] = {}
    config_file = home / "config.yaml"
    if config_file.exists():
        try:
            loaded = yaml.safe_load(config_file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{config_file}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_file}: must be a mapping of config keys")
        merged.update(loaded)
        origin.update(dict.fromkeys(map(str, loaded), str(config_file)))
    from_env = _env_values(env)
    merged.update(from_env)
    origin.update({key: f"environment variable {ENV_PREFIX}{key.upper()}" for key in from_env})
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "allowed_roots":
            merged[key] = [*merged.get(key, []), *value]
        else:
            merged[key] = value
            origin[key] = "the command line"
    return merged, origin


def _resolved_home(home: Path | None, env: Mapping[str, str]) -> Path:
    home = (home or default_home(env)).expanduser().resolve()
    if home.exists() and not home.is_dir():
        raise ConfigError(f"Podium home {home} is not a directory (--home / PODIUM_HOME)")
    return home


def setting_source(
    config: PodiumConfig,
    key: str,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Where `key`'s value in `config` came from, in words: `set in <config.yaml path>`, `set
    in environment variable PODIUM_<KEY>`, `set on the command line`, or `the default`. Found
    by reading the same places `load_config` reads (the model keeps values only); a value
    none of them gives was passed by the program that built the configuration."""
    env = os.environ if env is None else env
    value = getattr(config, key)
    try:
        merged, origins = _gathered(config.home, overrides, env)
    except ConfigError:
        merged, origins = {}, {}  # config.yaml broke since: nothing is known to come from it
    given = merged.get(key)
    if key in origins and given not in (None, "") and str(given) == str(value):
        return f"set in {origins[key]}"
    if value == getattr(PodiumConfig(home=config.home), key):
        return "the default"
    return "set by the program that loaded the configuration"


def load_config(
    home: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> PodiumConfig:
    env = os.environ if env is None else env
    home = _resolved_home(home, env)
    merged, origin = _gathered(home, overrides, env)
    merged["home"] = home
    try:
        return PodiumConfig(**merged)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                # A misspelt key silently ignored would do the wrong thing; name the key meant.
                known = sorted(set(PodiumConfig.model_fields) - {"home"})
                close = difflib.get_close_matches(key, known, n=1)
                message = f"unknown key{f' (did you mean {close[0]!r}?)' if close else ''}"
            source = origin.get(str(err["loc"][0]) if err["loc"] else "")
            where = f"set in {source}" if source else "config.yaml, environment or flag"
            lines.append(f"{key}: {message} ({where})")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from exc


# Keys a reload keeps as they are (each with why): they only take effect when a conductor
# starts.
RESTART_ONLY_KEYS = {
    "home": "the home cannot change while a conductor owns it",
    "auto_resume": "applies when the conductor starts",
    "store_url": "the store is opened when the conductor starts",
    "conductor_id": "attempts in flight are owned under the name the conductor started with",
    "lease_seconds": "applies when the conductor starts",
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [str(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def reloaded(
    current: PodiumConfig, fresh: PodiumConfig
) -> tuple[PodiumConfig, dict[str, list[Any]], dict[str, str]]:
    """The configuration a reload runs on: `fresh`, but with the restart-only keys as they
    are in `current`; with the keys that changed, applied ones as [old, new] and the others
    with why they wait for a restart."""
    applied: dict[str, list[Any]] = {}
    not_applied: dict[str, str] = {}
    for key in PodiumConfig.model_fields:
        old, new = getattr(current, key), getattr(fresh, key)
        if old == new:
            continue
        if key in RESTART_ONLY_KEYS:
            not_applied[key] = RESTART_ONLY_KEYS[key]
        else:
            applied[key] = [_jsonable(old), _jsonable(new)]
    config = fresh.model_copy(update={k: getattr(current, k) for k in not_applied})
    return config, applied, not_applied

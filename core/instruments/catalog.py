"""Known instruments: built-in profiles overridden by user profiles in <home>/instruments/."""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import shutil
import signal
import subprocess
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from podium.core.errors import PodiumError, quoted
from podium.core.instruments.profile import InstrumentProfile, hold_key
from podium.core.instruments.versions import version_matches
from podium.core.models import utcnow
from podium.core.runner.groups import UnsafeKillError, signal_group
from podium.core.spec.instrument_check import InstrumentTraits


class ProfileError(PodiumError):
    pass


@dataclass(frozen=True)
class InstrumentInfo:
    name: str
    available: bool
    version: str | None
    executable_path: str | None
    source: str  # "builtin" or the user profile's path
    profile: InstrumentProfile

    @property
    def written_for(self) -> str | None:
        return self.profile.written_for

    @property
    def version_matches(self) -> bool | None:
        """Whether the installed version is the one the profile was written for; None when
        it is not installed or either side names no version."""
        return version_matches(self.profile.written_for, self.version) if self.available else None


@dataclass(frozen=True)
class ProfileProblem:
    """A user profile file that is not used, and why (`message`: one `key: why` per
    problem, `; `-separated)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"instrument profile {self.path}: {self.message}"


def _why(exc: yaml.YAMLError | ValidationError) -> str:
    """What is wrong with a profile file, by key (pydantic's own text names the model and
    links its docs: not what a person fixing the file needs)."""
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}"
    lines = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, sorted(InstrumentProfile.model_fields), n=1)
            message = "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
        elif error["type"] == "model_type" and not key:
            message = "expected a mapping of profile keys (name, executable, args, ...)"
        lines.append(f"{key}: {message}" if key else message)
    return "; ".join(lines)


def _load_profile(text: str) -> InstrumentProfile:
    return InstrumentProfile.model_validate(yaml.safe_load(text))


def _parse_profile(text: str, origin: str) -> InstrumentProfile:
    try:
        return _load_profile(text)
    except (yaml.YAMLError, ValidationError) as exc:
        raise ProfileError(str(ProfileProblem(origin, _why(exc)))) from exc


@functools.cache
def _builtin_documents() -> tuple[tuple[str, Any], ...]:
    """The shipped profile files, parsed once a process: they cannot change under it, and
    pure-Python YAML took 50 ms of every conductor start and reload for them (libyaml's
    parser, where PyYAML has it, a tenth of that)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    folder = resources.files("podium.core.instruments").joinpath("builtin")
    return tuple(
        (f"builtin/{entry.name}", yaml.load(entry.read_text(), Loader=loader))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith((".yaml", ".yml"))
    )


def builtin_profiles() -> dict[str, InstrumentProfile]:
    """Fresh models every call (validation copies the documents' lists and mappings, so
    nobody's changes to one reach another's)."""
    profiles = {}
    for origin, document in _builtin_documents():
        try:
            profile = InstrumentProfile.model_validate(document)
        except ValidationError as exc:
            raise ProfileError(str(ProfileProblem(origin, _why(exc)))) from exc
        profiles[profile.name] = profile
    return profiles


def _probe(profile: InstrumentProfile) -> tuple[bool, str | None, str | None]:
    if profile.kind != "process":
        return True, None, None  # nothing to run, nothing to install
    path = shutil.which(profile.executable)
    if path is None:
        return False, None, None
    version = None
    if profile.check is not None:
        version = _version_line([path, *profile.check.version_args])
    return True, version, path


VERSION_SECONDS = 10.0


def _version_line(argv: list[str]) -> str | None:
    """The first line a CLI's version command prints, or None when it fails, prints
    nothing or takes longer than VERSION_SECONDS. It runs in a group of its own, ended
    after: a wrapper script that leaves a helper behind holding the pipes kept the probe
    waiting for its whole timeout and left the helper running."""
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError:
        return None
    try:
        out, err = child.communicate(timeout=VERSION_SECONDS)
    except subprocess.TimeoutExpired as exc:
        # What it printed before a helper it left kept the pipes open still counts, if it
        # ended well itself.
        out, err = exc.output or b"", exc.stderr or b""
    finally:
        with contextlib.suppress(UnsafeKillError):
            signal_group(child.pid, signal.SIGKILL)
        # Not communicate(): a helper that left the group may still hold the pipes.
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=VERSION_SECONDS)
    if child.returncode != 0:
        return None  # "unknown option", or killed at the timeout: no version
    text = (out or err).decode("utf-8", errors="replace").strip().splitlines()
    return text[0][:200] if text else None


def profile_files(user_dir: Path | None) -> list[Path]:
    """The user profile files a load reads, in the order it reads them."""
    if user_dir is None or not user_dir.is_dir():
        return []
    return sorted(user_dir.glob("*.y*ml"))


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def profile_file_digests(user_dir: Path | None) -> dict[str, str | None]:
    """Each user profile file as it is now: path -> sha256 of its bytes (None: unreadable)."""
    digests: dict[str, str | None] = {}
    for path in profile_files(user_dir):
        try:
            digests[str(path)] = file_digest(path.read_bytes())
        except OSError:
            digests[str(path)] = None
    return digests


def _sources(
    user_dir: Path | None,
) -> tuple[dict[str, tuple[InstrumentProfile, str]], list[ProfileProblem], dict[str, str | None]]:
    """Every profile by name with where it came from (a user file wins over the built-in),
    each user file not used, with why, and the digest of each user file as it was read."""
    builtins = builtin_profiles()
    sources: dict[str, tuple[InstrumentProfile, str]] = {
        name: (p, "builtin") for name, p in builtins.items()
    }
    problems: list[ProfileProblem] = []
    digests: dict[str, str | None] = {}
    if user_dir is not None and user_dir.is_dir():
        for path in profile_files(user_dir):
            digests[str(path)] = None
            try:
                data = path.read_bytes()
                # The digest of the bytes parsed: a change made since, even during this
                # load, shows as a difference (`podium instruments` says a reload is due).
                digests[str(path)] = file_digest(data)
                profile = _load_profile(data.decode())
            except OSError as exc:
                problems.append(ProfileProblem(str(path), f"not readable: {exc.strerror or exc}"))
                continue
            except UnicodeDecodeError as exc:
                problems.append(ProfileProblem(str(path), f"not UTF-8 text (byte {exc.start})"))
                continue
            except (yaml.YAMLError, ValidationError) as exc:
                problems.append(ProfileProblem(str(path), _why(exc)))
                continue
            earlier = sources.get(profile.name, (None, "builtin"))[1]
            if earlier != "builtin":
                # The earlier file is the one left unused.
                problems.append(
                    ProfileProblem(
                        earlier,
                        f"names {profile.name!r}, as {path} does; {path.name} is used "
                        "(one file per profile name)",
                    )
                )
            sources[profile.name] = (profile, str(path))
    for name, (profile, origin) in list(sources.items()):
        pool = profile.quota_pool
        other = sources.get(pool) if pool is not None and pool != name else None
        if other is None or other[0].quota_pool == pool:
            continue
        # A hold is kept under the pool's name, else the instrument's: a pool named after an
        # instrument outside it would tie that instrument's limits to this account's.
        problems.append(
            ProfileProblem(
                origin,
                f"quota_pool: {pool!r} is the name of an instrument that is not in that "
                f"pool (a limit on either would hold the other); name the pool otherwise, "
                f"or give {pool!r} the same quota_pool",
            )
        )
        if name in builtins:
            sources[name] = (builtins[name], "builtin")
        else:
            del sources[name]
    return sources, problems, digests


def profile_errors(user_dir: Path | None) -> list[str]:
    """Why user profiles were refused, without probing any CLI."""
    return [str(p) for p in _sources(user_dir)[1]]


def missing_executable(info: InstrumentInfo) -> str:
    """Why a process instrument is not available, naming what was looked for where."""
    executable = info.profile.executable
    if "/" in executable:
        return f"executable {executable!r} does not exist or is not executable"
    return f"executable {executable!r} was not found on PATH"


class InstrumentCatalog:
    """Profiles and their availability, probed once at load (not per call)."""

    def __init__(
        self,
        infos: dict[str, InstrumentInfo],
        problems: list[ProfileProblem],
        files: dict[str, str | None] | None = None,
        loaded_at: datetime | None = None,
    ) -> None:
        self._infos = infos
        # The user profile files this load did not use, and why (the conductor status
        # shows them; a reload loads a new catalog, so they are always the current ones).
        self.problems = problems
        # Each user profile file read, with the digest of what was read: `podium
        # instruments` compares them with the files as they are now.
        self.files = dict(files or {})
        self.loaded_at = loaded_at or utcnow()

    @property
    def load_errors(self) -> list[str]:
        return [str(p) for p in self.problems]

    @classmethod
    def load(cls, user_dir: Path | None) -> InstrumentCatalog:
        loaded_at = utcnow()
        sources, problems, files = _sources(user_dir)
        infos = {}
        for name, (profile, source) in sources.items():
            available, version, exe = _probe(profile)
            infos[name] = InstrumentInfo(name, available, version, exe, source, profile)
        return cls(infos, problems, files, loaded_at)

    def get(self, name: str) -> InstrumentInfo | None:
        return self._infos.get(name)

    def all(self) -> list[InstrumentInfo]:
        return [self._infos[n] for n in sorted(self._infos)]

    def hold_keys(self) -> dict[str, str]:
        """Instrument -> the rate-limit hold its sheets share (its quota pool, else itself)."""
        return {name: hold_key(info.profile) for name, info in self._infos.items()}

    def traits(self, name: str) -> InstrumentTraits:
        """What spec validation needs to know of an instrument (see `load_spec`)."""
        info = self._infos.get(name)
        problem = self.check(name)
        if info is None:
            return InstrumentTraits(problem=problem, known=False)
        return InstrumentTraits(
            problem=problem,
            permission_modes=frozenset(info.profile.permission_flags),
            accepts_model=info.profile.model_flag is not None,
            runs_nothing=info.profile.kind == "approval",
        )

    def check(self, name: str) -> str | None:
        """None when usable; otherwise why not (for spec validation errors)."""
        info = self._infos.get(name)
        if info is None:
            known = ", ".join(sorted(self._infos))
            return f"unknown instrument {quoted(name)}; known instruments: {known}"
        if not info.available:
            return f"instrument {quoted(name)} is not installed: {missing_executable(info)}"
        return None

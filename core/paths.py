"""Path confinement: every path that comes from input resolves (symlinks included) inside an
allowed root, or is refused with a message that says which roots are allowed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from podium.core.errors import PathNotAllowedError


def real(path: Path | str) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def is_within(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def confine(path: Path | str, roots: Sequence[Path], *, field: str) -> Path:
    if "\0" in str(path):
        raise PathNotAllowedError(f"{field}: the path contains a NUL byte")
    resolved = real(path)
    real_roots = [real(r) for r in roots]
    if any(is_within(resolved, r) for r in real_roots):
        return resolved
    allowed = ", ".join(str(r) for r in real_roots)
    raise PathNotAllowedError(
        f"{field}: {str(path)!r} resolves to {str(resolved)!r}, outside the allowed roots "
        f"({allowed}); add a root with allowed_roots in config.yaml, PODIUM_ALLOWED_ROOTS "
        "or --allow-root"
    )


def resolve_workspace(
    workspace: str | None,
    *,
    job_id: str,
    base_dir: Path,
    default_dir: Path,
    roots: Sequence[Path],
    home: Path | None = None,
) -> Path:
    """A spec's workspace: relative paths resolve against `base_dir` (the spec file's folder,
    or <home>/workspaces for an inline spec); none given means <home>/workspaces/<job_id>.

    Never the Podium home's own files: not `default_dir` (<home>/workspaces) itself, not the
    home or a folder holding it, nothing in the home outside `default_dir` (its logs,
    snapshots, instruments, database), whatever the allowed roots say."""
    if workspace is None:
        candidate = default_dir / job_id
    else:
        candidate = Path(os.path.expanduser(workspace))
        if not candidate.is_absolute():
            candidate = base_dir / candidate
    resolved = confine(candidate, roots, field="workspace")
    if home is not None:
        _refuse_home_dirs(resolved, workspace, real(home), real(default_dir))
    return resolved


def _refuse_home_dirs(resolved: Path, given: str | None, home: Path, workspaces: Path) -> None:
    shown = f"{given!r} (resolves to {str(resolved)!r})"
    if resolved == workspaces:
        raise PathNotAllowedError(
            f"workspace: {shown} is the folder of all workspaces; use a folder inside it"
        )
    if is_within(home, resolved):
        raise PathNotAllowedError(
            f"workspace: {shown} is or holds the Podium home {str(home)!r}; a sheet there "
            "could change the conductor's own files"
        )
    if is_within(resolved, home) and not is_within(resolved, workspaces):
        raise PathNotAllowedError(
            f"workspace: {shown} is inside the Podium home's own files; only "
            f"{str(workspaces)!r} holds workspaces"
        )

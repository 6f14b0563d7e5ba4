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
) -> Path:
    """A spec's workspace: relative paths resolve against `base_dir` (the spec file's folder,
    or <home>/workspaces for an inline spec); none given means <home>/workspaces/<job_id>."""
    if workspace is None:
        candidate = default_dir / job_id
    else:
        candidate = Path(os.path.expanduser(workspace))
        if not candidate.is_absolute():
            candidate = base_dir / candidate
    return confine(candidate, roots, field="workspace")

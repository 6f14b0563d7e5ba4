"""Snapshots: a copy of a finished job's key artifacts (checkpoint, spec, logs, validation
results), kept under <home>/snapshots/<job_id>/<UTC timestamp>/ with a manifest and a TTL."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import yaml
from pydantic import BaseModel, ConfigDict

from podium.core.checkpoint import read_checkpoint
from podium.core.errors import SpecError
from podium.core.models import UtcTime, utcnow
from podium.core.spec.bounds import MAX_SPEC_BYTES, check_value
from podium.core.spec.source import parse_yaml
from podium.core.spec.storable import redact_spec
from podium.core.store.base import Store

MANIFEST = "manifest.json"
PARTIAL_PREFIX = ".partial-"
_ID_FORMAT = "%Y%m%dT%H%M%S%fZ"
HISTORY_LIMIT = 10_000


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _redacted_source(path: Path) -> str | None:
    """The spec file as submitted, with every `env` value redacted (the file itself holds
    them in clear; a snapshot is a copy that outlives the job). Written back as YAML, so its
    comments are lost; None when it no longer reads as a spec."""
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_SPEC_BYTES + 1).decode("utf-8")
        if len(text) > MAX_SPEC_BYTES:
            return None
        # The file may have changed since submit: read as a spec is, bounded, so one nested
        # 5,000 deep or an alias bomb is no spec (a plain safe_load raised RecursionError,
        # which lost the snapshot, or expanded the bomb in full).
        data = parse_yaml(text, path)
        check_value(data)
    except (OSError, UnicodeDecodeError, SpecError):
        return None
    if not isinstance(data, dict):
        return None
    return yaml.safe_dump(redact_spec(data), sort_keys=False, allow_unicode=True)


class SnapshotInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snapshot_id: str
    job_id: str
    created_at: UtcTime
    path: str
    files: list[str]
    size_bytes: int
    workspace: str | None = None


class SnapshotElsewhere(BaseModel):
    """A snapshot in the home of another conductor on the shared store: read it through
    that conductor (or its files at `path`, on its host)."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    path: str
    created_at: UtcTime | None


class SnapshotStore:
    def __init__(self, root: Path, store: Store, logs_root: Path) -> None:
        self.root = root
        self._store = store
        self._logs_root = logs_root

    def _job_dir(self, job_id: str) -> Path:
        return self.root / job_id

    async def capture(
        self, job_id: str, workspace: str | Path | None, config_path: str | Path | None
    ) -> SnapshotInfo | None:
        checkpoint = await read_checkpoint(self._store, job_id)
        if checkpoint is None:
            return None
        attempts, _ = await self._store.get_history(job_id, None, HISTORY_LIMIT, 0)
        history = [a.entry() for a in attempts]
        created = utcnow()
        snapshot_id = snapshot_id_at(created)
        target = self._job_dir(job_id) / snapshot_id
        detail = checkpoint.model_dump(mode="json")
        validations = [
            {
                "sheet_num": h.sheet_num,
                "attempt": h.attempt,
                "validations": h.model_dump(mode="json")["validations"],
            }
            for h in history
        ]

        # Written under a hidden name and renamed into place with its manifest: a crash
        # in the middle leaves a partial dir that `reconcile` removes, never a snapshot that
        # looks complete and is not.
        final, target = target, target.with_name(PARTIAL_PREFIX + snapshot_id)

        def write() -> SnapshotInfo:
            target.mkdir(parents=True, exist_ok=False)
            # Compact: with an indent, json.dumps takes its pure-Python encoder (ten times
            # slower, and a snapshot is taken for every job that ends).
            (target / "checkpoint.json").write_text(json.dumps(detail))
            (target / "history.json").write_text(
                json.dumps([h.model_dump(mode="json") for h in history])
            )
            (target / "validations.json").write_text(json.dumps(validations))
            (target / "spec.json").write_text(json.dumps(detail.get("spec")))
            if config_path is not None:
                source = _redacted_source(Path(config_path))
                if source is not None:
                    (target / f"spec-source{Path(config_path).suffix}").write_text(source)
            logs = self._logs_root / job_id
            if logs.is_dir():
                # Logs of finished attempts never change again: a hard link is a copy that
                # costs no data (and survives the deletion of the original).
                shutil.copytree(logs, target / "logs", copy_function=_link_or_copy)
            files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
            size = sum((target / f).stat().st_size for f in files)
            info = SnapshotInfo(
                snapshot_id=snapshot_id,
                job_id=job_id,
                created_at=created,
                path=str(final),
                files=files,
                size_bytes=size,
                workspace=str(workspace) if workspace is not None else None,
            )
            (target / MANIFEST).write_text(info.model_dump_json(indent=2))
            target.rename(final)
            return info

        return await anyio.to_thread.run_sync(write)

    def list_snapshots(self, job_id: str | None = None) -> list[SnapshotInfo]:
        """Newest first; a manifest that cannot be read is skipped, not fatal."""
        job_dirs = [self._job_dir(job_id)] if job_id else sorted(self.root.glob("*"))
        found = []
        for job_dir in job_dirs:
            for manifest in job_dir.glob(f"*/{MANIFEST}"):
                if manifest.parent.name.startswith(PARTIAL_PREFIX):
                    continue
                try:
                    found.append(SnapshotInfo.model_validate_json(manifest.read_text()))
                except (OSError, ValueError):
                    continue
        found.sort(key=lambda s: (s.created_at, s.snapshot_id), reverse=True)
        return found

    async def elsewhere(self, job_id: str | None = None) -> list[SnapshotElsewhere]:
        """Snapshots the store records in another conductor's home (a shared store: the
        conductor that recorded a job's last sheet takes it, in its own home), which
        `list_snapshots` cannot see here. Newest first."""
        if not self._store.shared:
            return []
        if job_id is not None:
            job = await self._store.get_job(job_id)
            recorded = [(job.job_id, job.snapshot_path)] if job is not None else []
        else:
            recorded = [(j.job_id, j.snapshot_path) for j in await self._store.job_files()]
        root = os.path.realpath(self.root)
        found = [
            SnapshotElsewhere(job_id=jid, path=path, created_at=snapshot_time(path))
            for jid, path in recorded
            if path and not os.path.realpath(path).startswith(root + os.sep)
        ]
        found.sort(key=lambda s: s.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return found

    def get(self, job_id: str, snapshot_id: str) -> SnapshotInfo | None:
        for info in self.list_snapshots(job_id):
            if info.snapshot_id == snapshot_id:
                return info
        return None

    def next_expiry(self, max_age_hours: float) -> datetime | None:
        """When the oldest snapshot kept now runs out its TTL (None when there is none)."""
        snapshots = self.list_snapshots()
        if not snapshots:
            return None
        return min(s.created_at for s in snapshots) + timedelta(hours=max_age_hours)

    def cleanup(self, max_age_hours: float, now: datetime | None = None) -> int:
        cutoff = (now or datetime.now(UTC)) - timedelta(hours=max_age_hours)
        removed = 0
        for info in self.list_snapshots():
            if info.created_at < cutoff:
                shutil.rmtree(info.path, ignore_errors=True)
                removed += 1
        for job_dir in self.root.glob("*"):
            if job_dir.is_dir() and not any(job_dir.iterdir()):
                job_dir.rmdir()
        return removed

    def delete_for_job(self, job_id: str) -> None:
        shutil.rmtree(self._job_dir(job_id), ignore_errors=True)

    def reconcile(self, known_jobs: set[str]) -> int:
        """After a crash: remove the snapshots of jobs the store no longer has (a `clear`
        that deleted the rows and died before the files), partial captures and dirs without
        a manifest. Returns how many dirs went."""
        removed = 0
        for job_dir in sorted(self.root.glob("*")):
            if not job_dir.is_dir():
                continue
            if job_dir.name not in known_jobs:
                shutil.rmtree(job_dir, ignore_errors=True)
                removed += 1
                continue
            for snap in job_dir.iterdir():
                partial = snap.name.startswith(PARTIAL_PREFIX)
                if snap.is_dir() and (partial or not (snap / MANIFEST).is_file()):
                    shutil.rmtree(snap, ignore_errors=True)
                    removed += 1
            if not any(job_dir.iterdir()):
                job_dir.rmdir()
        return removed


def snapshot_id_at(when: datetime) -> str:
    """The id of a snapshot taken at `when` (its UTC timestamp, which `snapshot_time` reads
    back)."""
    return when.strftime(_ID_FORMAT)


def snapshot_time(path: str | None) -> datetime | None:
    """When the snapshot at `path` was taken (its id is its UTC timestamp)."""
    if not path:
        return None
    name = os.path.basename(path)
    # The id's fixed-width fields read directly: strptime costs ten times as much, and the
    # start of a home reads the snapshot time of every finished job.
    digits = name[:8] + name[9:21]
    if len(name) != 22 or name[8] != "T" or name[21] != "Z" or not digits.isascii():
        return None
    if not digits.isdigit():
        return None
    try:
        return datetime(
            int(name[0:4]),
            int(name[4:6]),
            int(name[6:8]),
            int(name[9:11]),
            int(name[11:13]),
            int(name[13:15]),
            int(name[15:21]),
            tzinfo=UTC,
        )
    except ValueError:
        return None

"""Issue 10, items 10-14: secrets in snapshots, logs capped in bytes, /healthz behind the
Host and token rules, the home's own dirs refused as workspaces, the database shrinking after
a large clear."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from helpers import wait_for_job, wait_until
from hostile import served, text_of

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.server.app import PodiumServer
from podium.server.serve import HttpOptions, build_http_app

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


async def test_the_snapshot_copy_of_a_spec_file_has_env_redacted(conductor: Conductor) -> None:
    spec_file = conductor.config.workspaces_dir / "secret.yaml"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(
        "name: secret\ninstrument_config: {env: {TOKEN: hunter2-job}}\n"
        "sheets:\n  - prompt: echo hi\n    instrument_config: {env: {KEY: hunter2-sheet}}\n"
    )
    job = await conductor.submit_job(path=spec_file)
    await wait_for_job(conductor, job.job_id)

    async def snapshotted() -> bool:
        return bool(await conductor.list_snapshots(job.job_id))

    await wait_until(snapshotted)
    snapshot = Path((await conductor.list_snapshots(job.job_id))[0].path)
    copied = snapshot / "spec-source.yaml"
    assert copied.is_file()
    for path in snapshot.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yaml"):
            assert "hunter2" not in path.read_text(), path
    assert "TOKEN" in copied.read_text() and "KEY" in copied.read_text()


async def test_logs_of_one_long_line_are_capped_in_bytes(conductor: Conductor) -> None:
    job = await conductor.submit_job(
        spec={"name": "long-line", "sheets": [{"prompt": "head -c 4194304 /dev/zero | tr '\\0' x"}]}
    )
    await wait_for_job(conductor, job.job_id)
    async with served(conductor, clients=1) as s:
        for args in ({"sheet": 1, "tail_lines": 5}, {"tail_lines": 5}):
            chunk = await s.ok("logs", {"job_id": job.job_id, **args})
            assert 0 < len(chunk["text"]) <= 256 * 1024, len(chunk["text"])
            assert chunk["truncated"] is True


async def test_healthz_tells_details_only_under_the_host_and_token_rules(
    conductor: Conductor,
) -> None:
    server = PodiumServer(conductor, token="s3cret")
    app = build_http_app(server, "streamable-http", HttpOptions(token="s3cret"))
    async with (
        server.running(),
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8765"
        ) as http,
    ):
        auth = {"Authorization": "Bearer s3cret"}
        full = await http.get("/healthz", headers=auth)
        assert full.status_code == 200 and full.json()["pid"] and full.json()["version"]
        for headers in ({}, {"Authorization": "Bearer wrong"}, {**auth, "Host": "evil.test"}):
            bare = await http.get("/healthz", headers=headers)
            assert bare.status_code == 200
            assert bare.json() == {"alive": True}, headers


@pytest.mark.parametrize("where", ["workspaces", "home", "logs", "snapshots", "instruments"])
async def test_the_home_and_its_own_dirs_are_never_workspaces(
    make_config: object, tmp_path: Path, where: str
) -> None:
    config: PodiumConfig = make_config(allowed_roots=[str(tmp_path)])  # type: ignore[operator]
    conductor = Conductor(config)
    await conductor.start()
    try:
        home = config.home
        target = {
            "workspaces": config.workspaces_dir,
            "home": home,
            "logs": config.logs_dir,
            "snapshots": config.snapshots_dir,
            "instruments": config.instruments_dir,
        }[where]
        async with served(conductor, clients=1) as s:
            spec = {"name": "edge", "workspace": str(target), "sheets": [{"prompt": "true"}]}
            refused = await s.call("submit_job", {"spec": spec})
            assert refused.is_error, where
            assert "workspace" in text_of(refused) and "Error executing" not in text_of(refused)
            # The parent of the home (an allowed root here) holds the home: refused too.
            spec["workspace"] = str(tmp_path)
            assert (await s.call("submit_job", {"spec": spec})).is_error
            spec["workspace"] = str(tmp_path / "elsewhere")
            assert not (await s.call("submit_job", {"spec": spec})).is_error
    finally:
        await conductor.stop()


async def test_the_database_shrinks_after_a_large_clear(conductor: Conductor) -> None:
    big = "x" * 200_000
    ids = []
    for n in range(30):
        spec = {"name": f"big{n}", "variables": {"blob": big}, "sheets": [{"prompt": "true"}]}
        ids.append((await conductor.submit_job(spec=spec)).job_id)
    for job_id in ids:
        await wait_for_job(conductor, job_id)
    db = conductor.config.home / "podium.db"
    wal = Path(f"{db}-wal")
    before = db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    assert before > 5_000_000
    result = await conductor.clear_jobs(all_jobs=True)
    assert result.deleted == 30
    after = db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    assert after < before / 4, (before, after)


@pytest.mark.parametrize(
    "rewritten",
    [
        "name: deep\nvariables: {x: " + "[" * 5000 + "]" * 5000 + "}\nsheets: [{prompt: echo}]\n",
        "name: bomb\nvariables:\n  a0: &a0 ["
        + ", ".join(['"lol"'] * 9)
        + "]\n"
        + "".join(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 8))
        + "sheets: [{prompt: echo}]\n",
    ],
    ids=["deep", "alias bomb"],
)
async def test_a_spec_file_rewritten_hostile_before_the_job_ends_still_gets_a_snapshot(
    conductor: Conductor, tmp_path: Path, rewritten: str
) -> None:
    # The snapshot reads the spec file again when the job ends; read unbounded, one nested
    # 5,000 deep raised RecursionError there and the snapshot was lost.
    gate = tmp_path / "go"
    spec_file = conductor.config.workspaces_dir / "later.yaml"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(
        f"name: later\nsheets:\n  - prompt: while [ ! -f {gate} ]; do sleep 0.05; done\n"
    )
    job = await conductor.submit_job(path=spec_file)
    spec_file.write_text(rewritten)
    gate.touch()
    assert (await wait_for_job(conductor, job.job_id)).status.value == "completed"

    async def snapshotted() -> bool:
        return bool(await conductor.list_snapshots(job.job_id))

    await wait_until(snapshotted)
    snapshot = Path((await conductor.list_snapshots(job.job_id))[0].path)
    assert (snapshot / "checkpoint.json").is_file()
    assert not (snapshot / "spec-source.yaml").exists()  # no longer reads as a spec

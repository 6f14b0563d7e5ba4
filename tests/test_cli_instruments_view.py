"""`podium instruments` with a conductor running shows the conductor's view (what it read at
its start or last reload), with a note for each profile file changed since; without one, the
files as they are. Real conductor processes, each with a home in tmp_path."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from test_cli_store_truth import CONDITION_TIMEOUT, cli, conductor_pid, wait_gone
from test_transports import make_home

from podium.core.instruments.catalog import InstrumentCatalog

PROFILE = "name: mine\ndescription: {description}\nexecutable: podium-test-no-cli\n"


def instruments_json(home: Path) -> dict[str, Any]:
    done = cli(home, "instruments", "--json")
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_instruments_shows_the_conductors_view_and_notes_files_changed_since(
    tmp_path: Path,
) -> None:
    home = make_home(tmp_path)
    folder = home / "instruments"
    folder.mkdir()
    mine, broken, added = folder / "mine.yaml", folder / "broken.yaml", folder / "added.yaml"
    mine.write_text(PROFILE.format(description="as started"))
    broken.write_text("name: broken\nexectuable: x\n")
    assert cli(home, "start", "--detach").returncode == 0
    pid = conductor_pid(home)
    try:
        started = instruments_json(home)
        assert started["conductor_running"] is True
        assert started["instruments_loaded_at"] is not None
        assert started["changed_since_loaded"] == []
        [refused] = started["instrument_errors"]
        assert refused["path"] == str(broken) and refused["message"].startswith("exectuable:")

        mine.write_text(PROFILE.format(description="edited since"))
        broken.unlink()
        added.write_text("name: added\nexecutable: podium-test-no-cli\n")
        seen = instruments_json(home)
        rows = {r["name"]: r for r in seen["instruments"]}
        assert rows["mine"]["description"] == "as started"  # the conductor's, not the disk's
        assert "added" not in rows
        assert seen["instrument_errors"] == started["instrument_errors"]
        assert seen["instruments_loaded_at"] == started["instruments_loaded_at"]
        assert seen["changed_since_loaded"] == [
            {"path": str(added), "change": "added"},
            {"path": str(broken), "change": "removed"},
            {"path": str(mine), "change": "modified"},
        ]
        text = cli(home, "instruments")
        assert text.returncode == 0, text.stderr
        notes = [line for line in text.stderr.splitlines() if line.startswith("note: ")]
        assert len(notes) == 3, text.stderr
        assert all("`podium reload`" in line for line in notes), notes
        assert f"note: {mine}: changed since the conductor read it" in text.stderr
        assert f"error: instrument profile {broken}: exectuable:" in text.stderr
        assert "mine" in text.stdout and "added" not in text.stdout

        assert cli(home, "reload").returncode == 0
        deadline = time.monotonic() + CONDITION_TIMEOUT
        while (after := instruments_json(home))["instruments_loaded_at"] == (
            started["instruments_loaded_at"]
        ):
            assert time.monotonic() < deadline, "the reload did not reload the profiles"
            time.sleep(0.1)
        rows = {r["name"]: r for r in after["instruments"]}
        assert rows["mine"]["description"] == "edited since" and "added" in rows
        assert after["changed_since_loaded"] == [] and after["instrument_errors"] == []
    finally:
        assert cli(home, "stop").returncode == 0
    wait_gone(pid)

    # Without a conductor: the files as they are now, as before.
    alone = instruments_json(home)
    assert alone["conductor_running"] is False
    assert alone["instruments_loaded_at"] is None and alone["changed_since_loaded"] == []
    assert {"mine", "added"} <= {r["name"] for r in alone["instruments"]}
    assert not (home / "conductor.json").exists()


def test_a_profile_file_that_is_not_utf8_is_refused_not_fatal(tmp_path: Path) -> None:
    """It used to end the catalog load (so the conductor's start) with UnicodeDecodeError."""
    (tmp_path / "latin.yaml").write_bytes(b"name: caf\xe9\nexecutable: x\n")
    catalog = InstrumentCatalog.load(tmp_path)
    [problem] = catalog.problems
    assert problem.path == str(tmp_path / "latin.yaml")
    assert problem.message == "not UTF-8 text (byte 9)"
    assert catalog.files[str(tmp_path / "latin.yaml")] is not None


@pytest.mark.parametrize("change", ["modified", "added", "removed"])
def test_changed_since_loaded_compares_digests(change: str) -> None:
    from podium.server.cli_control import changed_since_loaded

    loaded = [{"path": "/i/a.yaml", "sha256": "1"}]
    now: dict[str, str | None] = {
        "modified": {"/i/a.yaml": "2"},
        "added": {"/i/a.yaml": "1", "/i/b.yaml": "3"},
        "removed": {},
    }[change]
    path = "/i/b.yaml" if change == "added" else "/i/a.yaml"
    assert changed_since_loaded(loaded, now) == [{"path": path, "change": change}]
    assert changed_since_loaded(loaded, {"/i/a.yaml": "1"}) == []

"""`podium validate`, `podium estimate` and `podium diagnose` (issues 17 and 18), through the
home's conductor and, for reads, from the store when none runs."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
from test_conductor import conductor_client
from test_diagnose import FAKE_CLI, THREE_WAYS
from test_transports import call, make_home, podium_cli

pytestmark = pytest.mark.anyio


def _fake_ai(home: Path, tmp_path: Path) -> None:
    cli = tmp_path / "fake-cli"
    cli.write_text(FAKE_CLI.format(python=sys.executable))
    cli.chmod(cli.stat().st_mode | stat.S_IXUSR)
    (home / "instruments").mkdir(exist_ok=True)
    (home / "instruments" / "fake-ai.yaml").write_text(
        f'name: fake-ai\nexecutable: {cli}\nargs: ["{{prompt}}"]\n'
        'patterns:\n  auth: ["Invalid API key"]\n'
    )


async def test_diagnose_through_the_cli(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    _fake_ai(home, tmp_path)
    assert podium_cli(home, "start", "--detach").returncode == 0
    async with conductor_client(home) as client:
        await call(client, "submit_job", {"spec": THREE_WAYS, "job_id": "three"})
        detail = await call(client, "status", {"job_id": "three", "wait_seconds": 30})
        while detail["status"] not in ("failed", "completed"):
            detail = await call(client, "status", {"job_id": "three", "wait_seconds": 30})
        over_mcp = await call(client, "diagnose", {"job_id": "three"})
    assert {s["error_category"] for s in over_mcp["failing"]} == {
        "validation_failed",
        "timeout",
        "auth",
    }

    text = podium_cli(home, "diagnose", "three")
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert "sheet 1 (count) [shell]: validation_failed" in out
    assert "found:    '7\\n'" in out
    assert "sheet 2 (slow) [shell]: timeout" in out and "starting the long step" in out
    assert "sheet 3 (ask) [fake-ai]: auth" in out and "Invalid API key" in out
    assert "skipped: 1 sheet(s) (4)" in out
    assert "next steps:" in out and "podium resume three" in out

    as_json = json.loads(podium_cli(home, "diagnose", "three", "--json").stdout)
    assert as_json["failing_total"] == 3

    # With the conductor stopped, diagnose reads the store.
    assert podium_cli(home, "stop").returncode == 0
    cold = podium_cli(home, "diagnose", "three", "--json")
    assert cold.returncode == 0, cold.stderr
    assert json.loads(cold.stdout)["failing_total"] == 3

    unknown = podium_cli(home, "diagnose", "nope")
    assert unknown.returncode == 2 and "not found" in unknown.stderr


def test_validate_and_estimate_from_the_cli(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    good = tmp_path / "good.yaml"
    good.write_text(
        "name: good\nsheets:\n  - {name: a, prompt: 'sleep 0.1'}\n"
        "  - {name: b, prompt: 'true', depends_on: [a]}\n"
    )
    done = podium_cli(home, "validate", str(good))
    assert done.returncode == 0, done.stderr
    assert "valid, 2 sheet(s)" in done.stdout and "sheet 2 (b): shell, after 1" in done.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\npriority: 99\nsheets:\n  - {prompt: '{{ nope }}', depends_on: [ghost]}\n"
    )
    refused = podium_cli(home, "validate", str(bad))
    assert refused.returncode == 1
    assert "priority:" in refused.stderr
    assert "sheets.0.depends_on.0:" in refused.stderr
    assert "sheets.0.prompt:" in refused.stderr
    assert json.loads(podium_cli(home, "validate", str(bad), "--json").stdout)["valid"] is False

    guess = podium_cli(home, "estimate", str(good))
    assert guess.returncode == 0, guess.stderr
    assert "confidence: none" in guess.stdout and "no history" in guess.stdout
    assert podium_cli(home, "run", str(good)).returncode == 0
    again = json.loads(podium_cli(home, "estimate", str(good), "--json").stdout)
    assert again["earlier_runs"] == 1 and again["expected_seconds"] is not None
    assert again["observed_seconds"] is not None
    text = podium_cli(home, "estimate", str(good)).stdout
    assert "earlier runs took: " in text and "(median, waits included)" in text, text
    assert podium_cli(home, "stop").returncode == 0

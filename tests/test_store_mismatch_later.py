"""A store mismatch found later than the first attach is refused the same way: a `podium
serve` bridge reconnecting to a conductor restarted on another store, and a read from
another shell while `podium serve --embedded` owns the home on another store. Real
processes, each with a home in tmp_path."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from test_cli_store_truth import cli, conductor_pid, wait_gone
from test_stdio_unreadable import raw_serve, status_call
from test_transports import PODIUM, make_home, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.mark.parametrize("moved_by", ["env", "config.yaml"])
async def test_a_bridge_reconnecting_to_a_conductor_on_another_store_refuses(
    tmp_path: Path, moved_by: str
) -> None:
    """The bridge keeps the configuration it was launched with: a conductor restarted on
    another store (by PODIUM_STORE_URL, or by config.yaml changed since the bridge started)
    is refused at the reconnect as it would have been at the first attach, request after
    request, and the bridge starts no conductor of its own."""
    home = make_home(tmp_path)
    db = home / "podium.db"
    other = tmp_path / "other.db"
    assert cli(home, "start", "--detach").returncode == 0
    first = conductor_pid(home)
    async with raw_serve(home) as raw:
        await raw.send(status_call("before", {}))
        answer = await raw.receive(30)
        assert answer["result"]["structuredContent"]["pid"] == first, answer
        # The conductor is restarted on another store behind the bridge's back.
        assert cli(home, "stop").returncode == 0
        wait_gone(first)
        if moved_by == "env":
            restarted = cli(home, "start", "--detach", PODIUM_STORE_URL=f"sqlite://{other}")
        else:
            (home / "config.yaml").write_text(f"store_url: sqlite://{other}\n")
            restarted = cli(home, "start", "--detach")
        assert restarted.returncode == 0, restarted.stderr
        second = conductor_pid(home)
        try:
            for request_id in ("after", "again"):
                await raw.send(status_call(request_id, {}))
                answer = await raw.receive(30)
                assert answer["id"] == request_id and "error" in answer, answer
                message = answer["error"]["message"]
                assert message.startswith("store mismatch:"), message
                assert f"(pid {second}) runs on sqlite://{other}" in message, message
                assert f"this command's store_url is sqlite://{db} (the default)" in message
                assert "nothing was done" in message, message
                assert conductor_pid(home) == second
        finally:
            assert cli(home, "stop", PODIUM_STORE_URL=f"sqlite://{other}").returncode == 0
    wait_gone(second)


def test_a_read_beside_an_embedded_engine_on_another_store_refuses(tmp_path: Path) -> None:
    """`podium serve --embedded` owns the home (nothing can attach to it): a read from
    another shell reads the store directly, and only if it is the engine's store; on another
    one it refuses with the same store-mismatch message and reads nothing."""
    home = make_home(tmp_path)
    db = home / "podium.db"
    other = tmp_path / "other.db"
    embedded = subprocess.Popen(
        [PODIUM, "serve", "--embedded"],
        env=server_env(home, PODIUM_STORE_URL=f"sqlite://{other}"),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (home / "conductor.json").exists():
            assert time.monotonic() < deadline and embedded.poll() is None, "no conductor.json"
            time.sleep(0.05)
        recorded = json.loads((home / "conductor.json").read_text())
        assert (recorded["pid"], recorded["url"]) == (embedded.pid, None)
        assert recorded["store"] == f"sqlite://{other}"
        for command in (["list"], ["list", "--json"], ["status"], ["status", "--json"]):
            refused = cli(home, *command)
            assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
            message = refused.stderr
            assert "store mismatch" in message, (command, message)
            assert f"(pid {embedded.pid}) runs on sqlite://{other}" in message, message
            assert f"this command's store_url is sqlite://{db} (the default)" in message
            assert "nothing was done" in message and "Traceback" not in message
            assert refused.stdout == "", (command, refused.stdout)
        assert not db.exists()
        # On the engine's own store the read goes on, from the store.
        same = cli(home, "list", "--json", PODIUM_STORE_URL=f"sqlite://{other}")
        assert same.returncode == 0, same.stderr
        assert json.loads(same.stdout)["jobs"] == []
        listed = cli(home, "list", PODIUM_STORE_URL=f"sqlite://{other}")
        assert listed.returncode == 0, listed.stderr
        # It says whose store it read, not that no conductor runs.
        assert f"engine embedded in pid {embedded.pid}" in listed.stderr, listed.stderr
        assert "no conductor is running" not in listed.stderr, listed.stderr
    finally:
        assert embedded.stdin is not None
        embedded.stdin.close()
        embedded.wait(30)

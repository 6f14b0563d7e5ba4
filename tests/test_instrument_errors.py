"""User instrument profiles the conductor refused (<home>/instruments/, SPEC §5) are in the
conductor status (`status` without job_id, and `podium://conductor/status`), each file named
with why, through a real MCP client in both protocol eras; after a reload, as they are then."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from mcp import Client
from test_transports import call, read_text

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.server.app import PodiumServer

pytestmark = pytest.mark.anyio


async def test_refused_profiles_are_in_the_conductor_status_and_a_reload_updates_them(
    home: Path, make_config: Callable[..., PodiumConfig]
) -> None:
    folder = home / "instruments"
    folder.mkdir()
    (folder / "broken.yaml").write_text("name: broken\nkind: process\n")
    # Overrides the built-in shell, misspelt: refused, so the built-in stays in use.
    (folder / "shell.yaml").write_text("name: shell\nexectuable: bash\n")
    (folder / "fine.yaml").write_text("name: fine\nexecutable: podium-test-no-such-cli\n")
    conductor = Conductor(make_config())
    await conductor.start()
    try:
        server = PodiumServer(conductor)
        async with server.running():
            for mode in ("auto", "legacy"):
                async with Client(server.mcp, mode=mode) as client:
                    status = await call(client, "status", {})
                    assert status["instrument_errors"] == [
                        {
                            "path": str(folder / "broken.yaml"),
                            "message": "executable: a process instrument needs an executable",
                        },
                        {
                            "path": str(folder / "shell.yaml"),
                            "message": "exectuable: unknown key (did you mean 'executable'?)",
                        },
                    ], mode
                    used = {i["name"]: i["source"] for i in status["instruments"]}
                    assert used["shell"] == "builtin" and "broken" not in used
                    assert used["fine"] == str(folder / "fine.yaml")
                    resource = json.loads(await read_text(client, "podium://conductor/status"))
                    assert resource["instrument_errors"] == status["instrument_errors"]

            # Fixed, removed and newly broken files: the reload's view replaces the start's.
            (folder / "broken.yaml").write_text("name: broken\nexecutable: podium-test-no-cli\n")
            (folder / "shell.yaml").unlink()
            (folder / "garbled.yml").write_text("name: [unclosed\n")
            await conductor.reload()
            async with Client(server.mcp) as client:
                status = await call(client, "status", {})
                [garbled] = status["instrument_errors"]
                assert garbled["path"] == str(folder / "garbled.yml")
                assert garbled["message"].startswith("not valid YAML (line 2, column 1): ")
                assert "broken" in {i["name"] for i in status["instruments"]}
                resource = json.loads(await read_text(client, "podium://conductor/status"))
                assert resource["instrument_errors"] == [garbled]

            # None refused: the field is there, empty.
            (folder / "garbled.yml").unlink()
            await conductor.reload()
            async with Client(server.mcp) as client:
                assert (await call(client, "status", {}))["instrument_errors"] == []
    finally:
        await conductor.stop()

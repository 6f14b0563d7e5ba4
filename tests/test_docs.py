"""The user reference (README and docs/) shows specs and profiles that are really valid, and
names the tools, resources and settings that really exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig, load_config
from podium.core.instruments.profile import InstrumentProfile
from podium.core.spec.loader import load_spec
from podium.core.spec.models import JobSpec
from podium.server.app import PodiumServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))


def blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), re.S)


def spec_blocks() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *DOCS]:
        for text in blocks(path, "yaml"):
            data = yaml.safe_load(text)
            if isinstance(data, dict) and {"name"} <= set(data) and set(data) & {"sheets", "sheet"}:
                found.append((path.name, text))
    return found


def test_the_reference_covers_the_topics() -> None:
    names = {p.name for p in DOCS}
    assert {
        "spec-format.md",
        "tools.md",
        "lifecycle.md",
        "configuration.md",
        "operations.md",
        "instruments.md",
    } <= names


@pytest.mark.parametrize(("where", "text"), spec_blocks(), ids=lambda v: str(v)[:30])
def test_specs_in_the_docs_validate(where: str, text: str) -> None:
    assert load_spec(text=text).sheets, where


def test_profile_examples_are_valid_profiles() -> None:
    doc = ROOT / "docs" / "instruments.md"
    (text,) = [t for t in blocks(doc, "yaml") if "executable" in t]
    profile = InstrumentProfile.model_validate(yaml.safe_load(text))
    assert profile.prompt_via == "file"
    # The fragments (output paths, sessions, usage, patterns) are valid parts of a profile.
    for fragment in blocks(doc, "yaml"):
        if "executable" not in fragment:
            # json_where patterns read JSON events, so a fragment gets a JSON output format.
            base = {"name": "fragment", "executable": "x", "output": {"format": "jsonl"}}
            data = {**base, **yaml.safe_load(fragment)}
            InstrumentProfile.model_validate(data)


def test_every_builtin_instrument_is_documented() -> None:
    doc = (ROOT / "docs" / "instruments.md").read_text()
    for path in (ROOT / "core" / "instruments" / "builtin").glob("*.yaml"):
        assert f"`{path.stem}`" in doc, path.stem


def test_every_spec_field_and_setting_is_documented() -> None:
    spec_doc = (ROOT / "docs" / "spec-format.md").read_text()
    for field in JobSpec.model_fields:
        assert f"`{field}`" in spec_doc, field
    config_doc = (ROOT / "docs" / "configuration.md").read_text()
    for key in PodiumConfig.model_fields:
        if key != "home":
            assert f"`{key}`" in config_doc, key


@pytest.mark.anyio
async def test_every_tool_and_resource_is_documented(tmp_path: Path) -> None:
    tools_doc = (ROOT / "docs" / "tools.md").read_text()
    server = PodiumServer(Conductor(load_config(home=tmp_path, overrides={}, env={})))
    names = [tool.name for tool in await server.mcp.list_tools()]
    assert "submit_job" in names and len(names) >= 17
    for name in names:
        assert f"`{name}`" in tools_doc, name
    resources_source = (ROOT / "server" / "resources.py").read_text()
    for uri in re.findall(r'"(podium://[^"]+)"', resources_source):
        assert uri in tools_doc, uri


def test_mcp_json_is_a_working_entry() -> None:
    entry = json.loads((ROOT / "mcp.json").read_text())["mcpServers"]["podium"]
    assert entry["args"] == ["serve"]
    (snippet,) = blocks(ROOT / "docs" / "operations.md", "json")
    assert json.loads(snippet)["mcpServers"]["podium"]["args"] == ["serve"]

"""Instrument profiles are YAML a user writes, and none can hurt the conductor: their
regexes never run on Python's `re` inside it (catastrophic backtracking), a broken regex or a
boolean given as a word or a number is refused when the profile loads, naming the key, and a
JSON answer past the structured-output limit is reported as such, never lost silently."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.errors import FieldError, SpecError
from podium.core.instruments.catalog import profile_errors
from podium.core.spec import load_spec

pytestmark = pytest.mark.anyio

# `(a+)+$` over 50 `a`s then a `b`: Python's re tries 2**50 ways before it gives up.
EVIL_OUTPUT = "a" * 50 + "b"
PRINT_EVIL = f"printf '%s\\n' '{EVIL_OUTPUT}'; exit 1"
# A lookbehind RE2 cannot run: this one goes to the bounded child.
LOOKBEHIND_EVIL = "(a+)+(?<!x)$"


def profile_yaml(name: str, **fields: Any) -> str:
    data: dict[str, Any] = {"name": name, "executable": "bash", "args": ["-c", "{prompt}"]}
    data.update(fields)
    return json.dumps(data)


def write_profiles(home: Path, **profiles: str) -> Path:
    folder = home / "instruments"
    folder.mkdir(exist_ok=True)
    for name, text in profiles.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


@pytest.fixture
async def evil_conductor(
    home: Path, make_config: Callable[..., PodiumConfig]
) -> AsyncIterator[Conductor]:
    write_profiles(
        home,
        evil=profile_yaml("evil", patterns={"transient": ["(a+)+$"]}),
        lookbehind=profile_yaml("lookbehind", patterns={"auth": [LOOKBEHIND_EVIL]}),
        slow=profile_yaml(
            "slow", patterns={"rate_limit": [{"regex": LOOKBEHIND_EVIL}], "auth": ["a+b"]}
        ),
    )
    c = Conductor(make_config())
    await c.start()
    try:
        assert c.catalog is not None and c.catalog.load_errors == []
        yield c
    finally:
        await c.stop()


def one_sheet(name: str, instrument: str, prompt: str) -> dict[str, Any]:
    return {
        "name": name,
        "instrument": instrument,
        "retry": {"max_retries": 0},
        "sheets": [{"prompt": prompt}],
    }


# --- 2. booleans are true or false --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "got"),
    [("yes", '"yes"'), ("true", '"true"'), ("off", '"off"'), (1, "1"), (0, "0"), (1.0, "1.0")],
)
def test_a_profile_boolean_given_a_word_or_a_number_is_refused(
    tmp_path: Path, value: Any, got: str
) -> None:
    write_profiles(tmp_path, loose=profile_yaml("loose", retry_feedback=value))
    (error,) = profile_errors(tmp_path / "instruments")
    assert error.endswith(f"retry_feedback: must be true or false (got {got})"), error


def test_yaml_booleans_still_load_in_a_profile(tmp_path: Path) -> None:
    write_profiles(
        tmp_path,
        plain="name: plain\nexecutable: bash\nargs: ['-c', '{prompt}']\nretry_feedback: no\n",
    )
    assert profile_errors(tmp_path / "instruments") == []


def spec_errors(text: str) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        load_spec(text=text)
    errors: list[FieldError] = caught.value.errors
    return {e.path: e.message for e in errors}


def test_a_spec_boolean_given_a_word_or_a_number_is_refused() -> None:
    errors = spec_errors(
        "name: loose\nretry: {jitter: 1}\nprompt_assembly: 'no'\nsheets: [{prompt: x}]\n"
    )
    assert errors == {
        "retry.jitter": "must be true or false (got 1)",
        "prompt_assembly": 'must be true or false (got "no")',
    }
    loaded = load_spec(text="name: ok\nretry: {jitter: off}\nsheets: [{prompt: x}]\n")
    assert loaded.spec.retry.jitter is False

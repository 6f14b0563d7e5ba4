"""Prompt assembly (issue 17): an AI CLI's prompt carries the prelude, the sheet's cadenzas,
context from earlier sheets and the checks its result must pass; a retry after failed checks
names them and shows the end of the last output. With assembly off the prompt is exactly the
rendered template, on every attempt. Cross-sheet context is also there for templates."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import wait_for_job

from podium.core.conductor import Conductor
from podium.core.config import PodiumConfig
from podium.core.errors import SpecError
from podium.core.models import JobStatus, Outcome
from podium.core.spec.loader import load_spec

pytestmark = pytest.mark.anyio

# Records the prompt of each attempt; the first attempt prints something unhelpful and
# writes no answer, later ones write it.
RECORDING_CLI = """#!/bin/bash
mkdir -p prompts
printf '%s' "$1" > "prompts/$PODIUM_SHEET_NUM-$PODIUM_ATTEMPT.txt"
if [ "$PODIUM_ATTEMPT" = 1 ]; then echo "attempt 1: I could not find the answer"; exit 0; fi
echo 42 > answer.txt
echo "attempt $PODIUM_ATTEMPT: wrote the answer"
"""

PROFILE = """\
name: recording
executable: {exe}
args: ["{{prompt}}"]
"""

TASK = "Find the answer and write it to answer.txt"


@pytest.fixture
async def recorder(
    make_config: Callable[..., PodiumConfig], home: Path, tmp_path: Path
) -> AsyncIterator[Conductor]:
    exe = tmp_path / "recording-cli"
    exe.write_text(RECORDING_CLI)
    exe.chmod(0o755)
    (home / "instruments").mkdir(exist_ok=True)
    (home / "instruments" / "recording.yaml").write_text(PROFILE.format(exe=exe))
    conductor = Conductor(make_config(allowed_roots=[str(tmp_path)]))
    await conductor.start()
    try:
        yield conductor
    finally:
        await conductor.stop()


def write_spec(folder: Path, spec: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def ai_spec(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "workspace": f"ws-{name}",
        "retry": {"max_retries": 2, "base_delay_seconds": 0, "jitter": False},
        "context": {"previous_sheets": 1},
        **extra,
        "sheets": [
            {
                "name": "earlier",
                "instrument": "shell",
                "prompt": "echo 'the earlier sheet found: 6 x 7'",
                "validations": [{"type": "command_succeeds", "command": "true"}],
            },
            {
                "name": "ask",
                "instrument": "recording",
                "depends_on": ["earlier"],
                "prompt": TASK,
                "validations": [{"type": "content_regex", "path": "answer.txt", "pattern": "^42$"}],
                **(
                    {"cadenzas": [{"file": "style.md", "as": "skill"}]}
                    if "prelude" in extra
                    else {}
                ),
            },
        ],
    }


async def run_file(conductor: Conductor, path: Path) -> tuple[Any, Any, Path]:
    submitted = await conductor.submit_job(path=str(path))
    detail = await wait_for_job(conductor, submitted.job_id)
    history, _ = await conductor.get_execution_history(submitted.job_id)
    return detail, history, Path(submitted.workspace)


async def test_assembled_prompt_and_a_retry_that_says_what_failed(
    recorder: Conductor, tmp_path: Path
) -> None:
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "guide.md").write_text("GUIDE: answers are integers.")
    (folder / "style.md").write_text("SKILL: be brief.")
    path = write_spec(folder, ai_spec("assembled", prelude=["guide.md"]))
    detail, history, workspace = await run_file(recorder, path)
    assert detail.status is JobStatus.COMPLETED, detail.sheets[1].last_error
    assert [(h.sheet_num, h.attempt, h.outcome) for h in history] == [
        (1, 1, Outcome.COMPLETED),  # the shell sheet's script ran as written
        (2, 1, Outcome.FAILED),
        (2, 2, Outcome.COMPLETED),
    ]
    first = (workspace / "prompts" / "2-1.txt").read_text()
    assert first.index("SKILL: be brief.") < first.index(TASK) < first.index("GUIDE:")
    assert "--- sheet 1 (earlier) ---\nthe earlier sheet found: 6 x 7" in first
    assert first.endswith(
        "When you are done, these checks of your result must pass:\n"
        "- the file answer.txt has a match for the regular expression '^42$'"
    )
    retry = (workspace / "prompts" / "2-2.txt").read_text()
    assert retry.startswith(first)
    feedback = retry[len(first) :]
    assert "these checks of its result failed" in feedback
    assert "- content_regex: " in feedback and "answer.txt" in feedback
    assert "The end of what your previous run printed:\nattempt 1: I could not find the answer" in (
        feedback
    )


async def test_with_assembly_off_every_attempt_gets_the_template_unchanged(
    recorder: Conductor, tmp_path: Path
) -> None:
    path = write_spec(tmp_path / "plain", ai_spec("plain", prompt_assembly=False))
    detail, history, workspace = await run_file(recorder, path)
    assert detail.status is JobStatus.COMPLETED
    assert [h.outcome for h in history if h.sheet_num == 2] == [Outcome.FAILED, Outcome.COMPLETED]
    for attempt in (1, 2):
        assert (workspace / "prompts" / f"2-{attempt}.txt").read_text() == TASK


async def test_context_for_templates_beyond_ancestors_and_4_kib(conductor: Conductor) -> None:
    spec = {
        "name": "context",
        "concurrency": {"max_parallel_sheets": 1},  # sheets run in number order
        "context": {
            "previous_sheets": 0,
            "output_bytes": 8000,
            "files": ["notes-{{ sheet_num - 1 }}.md"],
        },
        "sheets": [
            {"prompt": "printf 'x%.0s' $(seq 10000)"},
            {"prompt": "echo independent; echo note two > notes-2.md"},
            {
                "depends_on": [2],
                "prompt": "echo {{ previous_outputs[1] | length }} "
                "{{ previous_outputs[2] | trim }} {{ previous_outputs | length }} "
                "{{ previous_files['notes-2.md'] | trim }}",
            },
            {
                "depends_on": [1, 3],
                "prompt": "echo {{ previous_files['notes-3.md'] | default('no file') }} "
                "{{ previous_outputs[1] | length }} {{ outputs[1] | length }}",
            },
        ],
    }
    submitted = await conductor.submit_job(spec=spec)
    detail = await wait_for_job(conductor, submitted.job_id)
    assert detail.status is JobStatus.COMPLETED, [s.last_error for s in detail.sheets]
    # Sheet 1 is no ancestor of sheet 3, and its output is longer than 4 KiB: the window
    # shows 8000 of it; `outputs` stays the last 4 KiB of an ancestor's.
    assert (detail.sheets[2].output_tail or "").split() == [
        "8000",
        "independent",
        "2",
        "note",
        "two",
    ]
    assert (detail.sheets[3].output_tail or "").split() == ["no", "file", "8000", "4096"]


async def test_the_context_keeps_output_bytes_not_characters_and_tojson_reads_it(
    conductor: Conductor,
) -> None:
    """`output_bytes` of non-ASCII output: a slice of the text kept 1,001 characters (2,001 bytes)
    for `output_bytes: 1001`. And `tojson` of `outputs` or `previous_outputs` failed the sheet
    ("Object of type _Outputs is not JSON serializable")."""
    spec = {
        "name": "context-bytes",
        "context": {"previous_sheets": 0, "output_bytes": 1001},
        "sheets": [
            {"name": "accents", "prompt": "python3 -c \"print('é' * 3000)\""},
            {
                "name": "count",
                "depends_on": ["accents"],
                "prompt": "echo {{ previous_outputs[1] | length }}",
            },
            {
                "name": "dump",
                "depends_on": ["accents"],
                "prompt": "cat > earlier.json <<'EOF'\n{{ previous_outputs | tojson }}\nEOF\n"
                "cat > ancestors.json <<'EOF'\n{{ outputs | tojson }}\nEOF",
            },
        ],
    }
    submitted = await conductor.submit_job(spec=spec)
    detail = await wait_for_job(conductor, submitted.job_id)
    assert detail.status is JobStatus.COMPLETED, [s.last_error for s in detail.sheets]
    # 1001 bytes: the newline and 500 'é'.
    assert (detail.sheets[1].output_tail or "").strip() == "501"
    workspace = Path(detail.workspace)
    assert json.loads((workspace / "earlier.json").read_text()) == {"1": "é" * 500 + "\n"}
    # `outputs`: the last 4 KiB of an ancestor's.
    assert json.loads((workspace / "ancestors.json").read_text()) == {"1": "é" * 2047 + "\n"}


async def test_prompt_files_are_confined(recorder: Conductor, tmp_path: Path) -> None:
    (tmp_path / "outside.md").write_text("secret")
    folder = tmp_path / "confined"
    spec = ai_spec("confined", prelude=["{{ workspace }}/../../outside.md"])
    folder.mkdir()
    (folder / "style.md").write_text("SKILL")
    detail, _, _ = await run_file(recorder, write_spec(folder, spec))
    assert detail.status is JobStatus.FAILED
    error = detail.sheets[1].last_error or ""
    assert error.startswith("prompt: prelude.0: ") and "outside" in error


@pytest.mark.parametrize(
    ("spec", "path", "words"),
    [
        ({"prelude": ["/etc/passwd"]}, "prelude.0.file", "absolute"),
        ({"prelude": ["../x.md"]}, "prelude.0.file", "'..'"),
        ({"prelude": ["a.md"], "prompt_assembly": False}, "prelude", "prompt_assembly"),
        ({"context": {"files": ["{{ nope }}.md"]}}, "context.files.0", "'nope'"),
        ({"context": {"output_bytes": 70000}}, "context.output_bytes", "65536"),
    ],
)
def test_prompt_input_errors_name_the_field(spec: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(data={"name": "bad", "sheets": [{"prompt": "echo"}], **spec})
    messages = {e.path: e.message for e in caught.value.errors}
    assert path in messages, messages
    assert words in messages[path]


def test_cadenzas_on_a_shell_sheet_are_an_error() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(data={"name": "bad", "sheets": [{"prompt": "echo", "cadenzas": ["a.md"]}]})
    assert "script" in {e.path: e.message for e in caught.value.errors}["sheets.0.cadenzas"]

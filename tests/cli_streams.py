"""Fake AI CLIs for tests: one script that replays a scripted attempt per call, and the
events the real CLIs print, byte for byte in their own stream and format (claude's stream-json,
codex's JSONL, gemini's stream-json).

The script reads two paths from its environment: FAKE_SCENARIO (a JSON list of attempts:
`stdout` lines, `stderr` text, `files` to write in the cwd, `sleep` seconds, `exit` code; the
n-th call replays the n-th attempt, the last one again after that) and FAKE_RECORD (one JSON
line per call is appended: argv, stdin, GOOSE_* variables).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SESSION = "8f0c2a3e-6d1b-4c55-9e0a-3b1f2d7c9a41"

FAKE_CLI = """#!{python}
import json, os, sys, time
if sys.argv[1:] == ["--version"]:
    print("fake-cli 1.0")
    sys.exit(0)
record = os.environ["FAKE_RECORD"]
with open(record, "a", encoding="utf-8") as fh:
    seen = sum(1 for _ in open(record, encoding="utf-8")) if os.path.getsize(record) else 0
    fh.write(json.dumps({{"argv": sys.argv[1:], "stdin": sys.stdin.read(),
                          "env": {{k: v for k, v in os.environ.items() if k.startswith("GOOSE")}}}})
             + "\\n")
attempts = json.load(open(os.environ["FAKE_SCENARIO"], encoding="utf-8"))
step = attempts[min(seen, len(attempts) - 1)]
for name, text in step.get("files", {{}}).items():
    open(name, "w", encoding="utf-8").write(text)
for line in step.get("stdout", []):
    sys.stdout.buffer.write(line.encode("utf-8") + b"\\n")
sys.stdout.flush()
sys.stderr.buffer.write(step.get("stderr", "").encode("utf-8"))
sys.stderr.flush()
time.sleep(step.get("sleep", 0))
sys.exit(step.get("exit", 0))
"""


def write_fake_cli(path: Path) -> Path:
    path.write_text(FAKE_CLI.format(python=sys.executable))
    path.chmod(0o755)
    return path


def jl(**event: Any) -> str:
    """One JSON line, encoded the way the Node CLIs do (non-ASCII as is)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def claude_init(session: str = SESSION) -> str:
    return jl(type="system", subtype="init", cwd="/w", session_id=session,
              model="claude-sonnet-4-5")  # fmt: skip


def claude_result(
    text: str,
    *,
    is_error: bool = False,
    cost: float = 0,
    tokens: tuple[int, int] = (0, 0),
    session: str = SESSION,
) -> str:
    return jl(
        type="result",
        subtype="success",
        is_error=is_error,
        duration_ms=412,
        num_turns=1,
        result=text,
        session_id=session,
        total_cost_usd=cost,
        usage={"input_tokens": tokens[0], "output_tokens": tokens[1]},
    )


def claude_run(text: str, *, is_error: bool = True, extra: list[str] | None = None) -> list[str]:
    """`claude -p --output-format stream-json --verbose` when the request is refused."""
    return [
        claude_init(),
        *(extra or []),
        jl(
            type="assistant",
            message={"role": "assistant", "content": [{"type": "text", "text": text}]},
            session_id=SESSION,
        ),
        claude_result(text, is_error=is_error),
    ]


def claude_rejected(resets_at: int) -> str:
    """The stream-json event claude prints when the account's limit refuses the request."""
    return jl(
        type="rate_limit_event",
        rate_limit_info={
            "status": "rejected",
            "resetsAt": resets_at,
            "rateLimitType": "five_hour",
            "overageStatus": "rejected",
            "isUsingOverage": False,
        },
        session_id=SESSION,
    )


def codex_failure(message: str) -> list[str]:
    """`codex exec --json` when the turn is refused: an error event, then turn.failed."""
    return [
        jl(type="thread.started", thread_id="0199a213-81c0-7800-8aa1-bbab2a035a53"),
        jl(type="turn.started"),
        jl(type="error", message=message),
        jl(type="turn.failed", error={"message": message}),
    ]


def codex_success(text: str) -> list[str]:
    return [
        jl(type="thread.started", thread_id=SESSION),
        jl(type="turn.started"),
        jl(type="item.completed", item={"id": "item_1", "type": "agent_message", "text": text}),
        jl(type="turn.completed",
           usage={"input_tokens": 100, "cached_input_tokens": 0, "output_tokens": 10}),
    ]  # fmt: skip


PLUS_LIMIT = (
    "You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing), visit "
    "https://chatgpt.com/codex/settings/usage to purchase more credits or try again at {}."
)


def gemini_failure(error_type: str, message: str, task: str = "the task") -> list[str]:
    """`gemini --output-format stream-json` when the request fails."""
    return [
        jl(type="init", timestamp="2026-03-10T10:29:58.120Z", session_id=SESSION,
           model="gemini-2.5-pro"),
        jl(type="message", timestamp="2026-03-10T10:29:58.121Z", role="user", content=task),
        jl(type="error", timestamp="2026-03-10T10:29:59.002Z", severity="error", message=message),
        jl(type="result", timestamp="2026-03-10T10:29:59.003Z", status="error",
           error={"type": error_type, "message": message},
           stats={"total_tokens": 0, "input_tokens": 0, "output_tokens": 0, "cached": 0,
                  "input": 0, "duration_ms": 880, "tool_calls": 0}),
    ]  # fmt: skip


def gemini_json(
    response: str, *, session: str = SESSION, tokens: tuple[int, int, int] = (0, 0, 0)
) -> list[str]:
    """`gemini -p --output-format json` on success: one object, pretty-printed (JsonFormatter
    in packages/core/src/output/json-formatter.ts: `JSON.stringify(output, null, 2)`), with
    `stats` the session metrics per model."""
    prompt, candidates, cached = tokens
    per_model = {"api": {"totalRequests": 1, "totalErrors": 0, "totalLatencyMs": 880},
                 "tokens": {"input": prompt - cached, "prompt": prompt,
                            "candidates": candidates, "total": prompt + candidates,
                            "cached": cached, "thoughts": 0, "tool": 0},
                 "roles": {}}  # fmt: skip
    output = {
        "session_id": session,
        "response": response,
        "stats": {"models": {"gemini-2.5-pro": per_model},
                  "tools": {"totalCalls": 0, "totalSuccess": 0, "totalFail": 0,
                            "totalDurationMs": 0, "byName": {}},
                  "files": {"totalLinesAdded": 0, "totalLinesRemoved": 0}},
    }  # fmt: skip
    return json.dumps(output, indent=2, ensure_ascii=False).splitlines()


def gemini_json_error(error_type: str, message: str, code: int | str = 1) -> str:
    """`gemini -p --output-format json` when the run fails: handleError (packages/cli/src/
    utils/errors.ts) prints JsonFormatter.formatError to stderr (console.error), pretty."""
    error = {"type": error_type, "message": message, "code": code}
    return json.dumps({"error": error}, indent=2, ensure_ascii=False) + "\n"

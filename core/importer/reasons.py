"""Why a part of a Marianne score has no place in a Podium spec, by where it sits."""

from __future__ import annotations

_BY_PREFIX: list[tuple[str, str]] = [
    ("rate_limit", "rate-limit detection and waits come from the instrument's profile and the "
     "conductor's config (max_rate_limit_wait_seconds, max_rate_limit_retries)"),
    ("circuit_breaker", "Podium shares rate-limit waits across jobs itself; it has no circuit "
     "breaker to configure"),
    ("learning", "Podium keeps no learning store"),
    ("grounding", "Podium has no grounding hooks; use a command_succeeds validation"),
    ("ai_review", "Podium has no AI review step; add a sheet that reviews"),
    ("logging", "logging is the conductor's (see podium logs and conductor.log)"),
    ("workspace_lifecycle", "Podium never archives or deletes a workspace"),
    ("isolation", "Podium runs sheets in the workspace itself (no git worktrees)"),
    ("conductor", "Podium jobs carry no conductor identity"),
    ("checkpoints", "for a person's go-ahead before risky work, add a sheet with "
     "`instrument: approval`"),
    ("bridge", "Podium has no Ollama bridge"),
    ("feedback", "Podium does not extract feedback blocks from output"),
    ("techniques", "Podium has no technique components"),
    ("agent_card", "Podium has no A2A registry"),
    ("spec", "Podium has no spec corpus; use prelude or cadenza files"),
    ("state_backend", "state lives in the conductor's store"),
    ("state_path", "state lives in the conductor's store"),
    ("pause_between_sheets_seconds", "Podium starts a sheet as soon as it may"),
    ("retry.exponential_base", "Podium's backoff doubles"),
    ("retry.max_completion_attempts", "Podium retries every failed validation with a prompt "
     "naming it, within max_retries"),
    ("retry.completion_delay_seconds", "completion retries use the retry backoff"),
    ("retry.completion_threshold_percent", "every failed validation gets a feedback retry"),
    ("parallel.stagger_delay_ms", "Podium does not stagger starts"),
    ("parallel.budget_partition", "Podium has one cost limit per job"),
    ("cost_limits", "Podium has one limit, the job's cost_limit_usd, from the cost the CLI "
     "reports"),
    ("stale_detection", "only the idle timeout carries over"),
    ("cross_sheet", "not a Podium context setting"),
    ("concert", "Podium chains with on_success: {submit, max_chain}"),
    ("on_success", "not part of Podium's on_success"),
    ("notifications", "not part of Podium's notifications"),
    ("backend", "the instrument's profile decides how its CLI runs"),
    ("sheet.spec_tags", "Podium has no spec corpus"),
    ("sheet.fan_out_stage_map", "Podium expands fan-out itself"),
    ("instruments", "not an instrument setting Podium has"),
    ("movements", "not a movement setting Podium has"),
    ("prompt", "not a prompt setting Podium has"),
    ("sheet", "not a sheet setting Podium has"),
    ("validations", "not a validation setting Podium has"),
]  # fmt: skip


def reason_for(path: str) -> str:
    for prefix, reason in _BY_PREFIX:
        if path == prefix or path.startswith(prefix + "."):
            return reason
    return "Podium has no such setting"

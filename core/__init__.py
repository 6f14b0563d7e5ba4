"""Podium engine: job specs, stores, runner, scheduler, conductor. Knows nothing of MCP."""

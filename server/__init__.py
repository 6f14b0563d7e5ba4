"""Podium MCP server and CLI: a thin layer over podium.core.Conductor."""

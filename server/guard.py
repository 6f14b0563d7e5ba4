"""Checks every `tools/call` in one place, before and after the tool runs:
- unknown arguments are refused (the SDK drops them silently, and an agent's misspelt
  `jobid` must be an error it can read, not a silent default);
- argument errors come back as `field: message` lines, like spec errors;
- tool errors lose the SDK's "Error executing tool X:" prefix, so the message is exactly the
  engine's (one `path: message` per line)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.tools.base import Tool
from mcp_types import CallToolResult, TextContent
from pydantic import ValidationError

ToolLookup = Callable[[str], Tool | None]


def unknown_argument_message(
    tool: str, given: dict[str, Any], schema: dict[str, Any]
) -> str | None:
    allowed = sorted(schema.get("properties", {}))
    unknown = sorted(set(given) - set(allowed))
    if not unknown:
        return None
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        lines.append(f"{name}: unknown argument for {tool}{hint}")
    lines.append(f"allowed arguments: {', '.join(allowed) or 'none'}")
    return "\n".join(lines)


def argument_errors(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"]) or "arguments"
        lines.append(f"{path}: {error['msg']}")
    return "\n".join(lines)


def _error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


class ToolCallGuard:
    def __init__(self, tool_of: ToolLookup) -> None:
        self._tool_of = tool_of

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method != "tools/call" or not isinstance(ctx.params, dict):
            return await call_next(ctx)
        name = ctx.params.get("name")
        tool = self._tool_of(name) if isinstance(name, str) else None
        if tool is None:
            return await call_next(ctx)
        arguments = ctx.params.get("arguments") or {}
        if isinstance(arguments, dict):
            message = unknown_argument_message(tool.name, arguments, tool.parameters)
            if message is not None:
                return _error(message)
            try:
                tool.fn_metadata.arg_model.model_validate(arguments)
            except ValidationError as exc:
                return _error(argument_errors(exc))
        result = await call_next(ctx)
        return _strip_prefix(result, tool.name)


def _strip_prefix(result: HandlerResult, tool_name: str) -> HandlerResult:
    """The rest of the chain returns the serialized wire form (a dict); a model is handled
    too in case the SDK changes that."""
    prefix = f"Error executing tool {tool_name}: "
    if isinstance(result, CallToolResult) and result.is_error:
        for block in result.content:
            if isinstance(block, TextContent) and block.text.startswith(prefix):
                block.text = block.text[len(prefix) :]
    elif isinstance(result, dict) and result.get("isError"):
        for item in result.get("content") or []:
            text = item.get("text") if isinstance(item, dict) else None
            if isinstance(text, str) and text.startswith(prefix):
                item["text"] = text[len(prefix) :]
    return result

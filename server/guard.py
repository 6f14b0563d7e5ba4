"""Checks every `tools/call`, `prompts/get` and `subscriptions/listen` in one place, before
and after the handler:
- an unknown tool or prompt is the JSON-RPC error -32602 (invalid params) naming what exists,
  as the MCP spec lists it, not a tool result;
- listening for changes of a resource that does not exist (an unknown job's checkpoint) is
  the same "not found" error that `resources/subscribe` gives older clients;
- unknown arguments are refused (the SDK drops them silently, and an agent's misspelt
  `jobid` must be an error it can read, not a silent default);
- argument errors come back as `field: message` lines, like spec errors;
- tool errors lose the SDK's "Error executing tool X:" prefix, so the message is exactly the
  engine's (one `path: message` per line);
- (a result's text, compact JSON of its structured content or for `logs` the log itself, is
  rendered where the tools are built: `tools._answered`)."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp.shared.uri_template import DEFAULT_MAX_URI_LENGTH
from mcp_types import INVALID_PARAMS, CallToolResult, TextContent
from pydantic import ValidationError

from podium.core.errors import MAX_ECHO_CHARS, quoted

TextRenderer = Callable[[dict[str, Any]], str]
# Why a resource URI cannot be subscribed to, or None when it can.
SubscriptionCheck = Callable[[str], Awaitable[str | None]]


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def log_text(structured: dict[str, Any]) -> str:
    """The log itself; a last line says how to read on when there is more."""
    text = str(structured.get("text") or "")
    if structured.get("truncated"):
        more = structured.get("next_offset")
        hint = f"; read on with offset={more}" if more is not None else ""
        text += f"\n[podium: log truncated{hint}]"
    return text


RESULT_TEXT: dict[str, TextRenderer] = {"logs": log_text}


def _suggest(name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_argument_message(
    tool: str, given: dict[str, Any], schema: dict[str, Any]
) -> str | None:
    allowed = sorted(schema.get("properties", {}))
    unknown = sorted(set(given) - set(allowed))
    if not unknown:
        return None
    lines = [f"{name}: unknown argument for {tool}{_suggest(name, allowed)}" for name in unknown]
    lines.append(f"allowed arguments: {', '.join(allowed) or 'none'}")
    return "\n".join(lines)


def _declared_types(schema: Mapping[str, Any]) -> set[str]:
    declared = schema.get("type")
    types = {declared} if isinstance(declared, str) else set(declared or ())
    for option in schema.get("anyOf") or ():
        if isinstance(option, Mapping):
            types |= _declared_types(option)
    return types


def boolean_argument_message(given: dict[str, Any], schema: dict[str, Any]) -> str | None:
    """JSON `true` where a number is expected: pydantic would take it as 1 (`approve
    sheet: true` decided sheet 1), so it is refused instead."""
    properties = schema.get("properties", {})
    lines = []
    for name, value in given.items():
        types = _declared_types(properties.get(name) or {})
        if isinstance(value, bool) and types & {"integer", "number"} and "boolean" not in types:
            expected = " or ".join(sorted(t for t in types if t != "null"))
            lines.append(f"{name}: expected {expected}, got a boolean ({json.dumps(value)})")
    return "\n".join(lines) or None


def argument_errors(exc: ValidationError, given: Mapping[str, Any]) -> str:
    lines = []
    for error in exc.errors():
        loc = error["loc"]
        # One value where a list is taken (`status: "done"`) is validated as a list of one;
        # its error is about that argument, not an item ".0" the caller never wrote.
        if len(loc) == 2 and loc[1] == 0 and isinstance(given.get(str(loc[0])), str):
            loc = loc[:1]
        path = ".".join(str(part) for part in loc) or "arguments"
        message = error["msg"]
        if path == "spec" and isinstance(error.get("input"), str):
            message = "expected an object, got a string; pass YAML or JSON text as spec_yaml"
        elif error["type"] == "enum" and isinstance(error.get("input"), str):
            allowed = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
            close = difflib.get_close_matches(error["input"], allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message += f" (got {quoted(error['input'])}{hint})"
        lines.append(f"{path}: {message}")
    return "\n".join(lines)


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else type(value).__name__


def _error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _not_found(kind: str, name: object, known: Collection[str]) -> MCPError:
    listed = ", ".join(sorted(known)) or "none"
    shown = name if isinstance(name, str) else repr(name)
    hint = _suggest(shown, known) if len(shown) <= MAX_ECHO_CHARS else ""
    return MCPError(
        code=INVALID_PARAMS, message=f"{kind} {quoted(shown)} not found{hint}; {kind}s: {listed}"
    )


def _uri_problem(params: Mapping[str, Any]) -> MCPError | None:
    """A URI past the SDK's limit: the SDK's own "Unknown resource" error would echo it
    whole, so it is refused here, with the URI cut like every echoed value."""
    uri = params.get("uri")
    if isinstance(uri, str) and len(uri) > DEFAULT_MAX_URI_LENGTH:
        return MCPError(
            code=INVALID_PARAMS,
            message=f"uri: {quoted(uri)} is too long (at most {DEFAULT_MAX_URI_LENGTH} "
            "characters); resource URIs are listed by resources/templates/list",
        )
    return None


async def _any_uri(uri: str) -> str | None:
    return None


class RequestGuard:
    def __init__(
        self,
        tools: Mapping[str, Tool],
        prompts: Collection[str] = (),
        subscription_check: SubscriptionCheck = _any_uri,
    ) -> None:
        self._tools = tools
        self._prompts = prompts
        self._subscription_check = subscription_check

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if not isinstance(ctx.params, dict):
            return await call_next(ctx)
        if ctx.method == "prompts/get":
            name = ctx.params.get("name")
            if name not in self._prompts:
                raise _not_found("prompt", name, self._prompts)
            return await call_next(ctx)
        if ctx.method == "subscriptions/listen":
            await self._check_subscriptions(ctx.params)
            return await call_next(ctx)
        if ctx.method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
            problem = _uri_problem(ctx.params)
            if problem is not None:
                raise problem
            return await call_next(ctx)
        if ctx.method != "tools/call":
            return await call_next(ctx)
        name = ctx.params.get("name")
        tool = self._tools.get(name) if isinstance(name, str) else None
        if tool is None:
            raise _not_found("tool", name, self._tools)
        arguments = ctx.params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            # The SDK's own answer to this is "Invalid request parameters" with no detail.
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"arguments: must be an object of argument names to values, got "
                f"{_json_kind(arguments)}; {tool.name} takes "
                f"{', '.join(sorted(tool.parameters.get('properties') or {})) or 'none'}",
            )
        message = unknown_argument_message(
            tool.name, arguments, tool.parameters
        ) or boolean_argument_message(arguments, tool.parameters)
        if message is not None:
            return _error(message)
        try:
            tool.fn_metadata.arg_model.model_validate(arguments)
        except ValidationError as exc:
            return _error(argument_errors(exc, arguments))
        result = await call_next(ctx)
        return _finish(result, tool.name)

    async def _check_subscriptions(self, params: dict[str, Any]) -> None:
        wanted = params.get("notifications")
        uris = wanted.get("resourceSubscriptions") if isinstance(wanted, dict) else None
        for uri in uris if isinstance(uris, list) else []:
            problem = await self._subscription_check(str(uri))
            if problem is not None:
                raise MCPError(code=INVALID_PARAMS, message=problem, data={"uri": str(uri)})


def _finish(result: HandlerResult, tool_name: str) -> HandlerResult:
    """The rest of the chain returns the serialized wire form (a dict); a model is handled
    too in case the SDK changes that. (A result's text is rendered by the tool itself,
    `tools._answered`, once.)"""
    prefix = f"Error executing tool {tool_name}: "
    if isinstance(result, CallToolResult):
        if result.is_error:
            for block in result.content:
                if isinstance(block, TextContent) and block.text.startswith(prefix):
                    block.text = block.text[len(prefix) :]
    elif isinstance(result, dict) and result.get("isError"):
        for item in result.get("content") or []:
            text = item.get("text") if isinstance(item, dict) else None
            if isinstance(text, str) and text.startswith(prefix):
                item["text"] = text[len(prefix) :]
    return result

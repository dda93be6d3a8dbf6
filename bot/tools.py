"""What Claude may use while it answers: its server tools (web search, web fetch) and the
operator's remote MCP servers, as the request parameters that turn them on.

Claude runs all of them server-side; the bot only asks for them and shows what they do
(`bot.lookups`). Tool versions come from the installed SDK's own types, so a new SDK release
brings its new versions without a change here; models older than the versions with dynamic
filtering get the first versions, which every model with the tools supports.
"""

from __future__ import annotations

import functools
import typing
from dataclasses import dataclass, field
from typing import Any

import anthropic.types
from anthropic.types import AnthropicBetaParam

from bot.config import Settings

WEB_TOOLS = ("web_search", "web_fetch")
# The first version of each tool: what models before the 4.6 generation support.
_FIRST_VERSIONS = {"web_search": "web_search_20250305", "web_fetch": "web_fetch_20250910"}
_OLDER_MODELS = ("claude-3", "claude-opus-4-", "claude-sonnet-4-", "claude-haiku-4-")
_NEWER_THAN_OLDER = ("claude-opus-4-6", "claude-opus-4-7", "claude-opus-4-8", "claude-sonnet-4-6")
MCP_BETA_PREFIX = "mcp-client-"


def _literal(hints: dict[str, Any], key: str) -> str | None:
    args = typing.get_args(hints.get(key))
    return args[0] if args and isinstance(args[0], str) else None


@functools.cache
def known_versions() -> dict[str, tuple[str, ...]]:
    """Each web tool's versions in the SDK's `ToolUnionParam`, oldest first."""
    versions: dict[str, list[str]] = {name: [] for name in WEB_TOOLS}
    for param in typing.get_args(anthropic.types.ToolUnionParam):
        try:
            hints = typing.get_type_hints(param)
        except (NameError, TypeError):  # a type this code cannot introspect: not a web tool
            continue
        name, kind = _literal(hints, "name"), _literal(hints, "type")
        if name in versions and kind is not None:
            versions[name].append(kind)
    return {name: tuple(sorted(found)) for name, found in versions.items()}


def tool_version(name: str, model: str) -> str:
    """The version of web tool `name` to ask for with `model`: the newest the SDK knows, or the
    first one for a model that predates the newer versions."""
    versions = known_versions()[name] or (_FIRST_VERSIONS[name],)
    older = model.startswith(_OLDER_MODELS) and not model.startswith(_NEWER_THAN_OLDER)
    return _FIRST_VERSIONS[name] if older else versions[-1]


@functools.cache
def mcp_beta() -> str:
    """The newest MCP connector beta the SDK knows (sent as `anthropic-beta`)."""
    betas = typing.get_args(typing.get_args(AnthropicBetaParam)[-1])
    found = sorted(b for b in betas if isinstance(b, str) and b.startswith(MCP_BETA_PREFIX))
    return found[-1] if found else "mcp-client-2025-11-20"


@dataclass(frozen=True)
class ToolRequest:
    """The parameters one Messages API request gets for tools; empty when none are on.
    `betas` non-empty means the request goes to the beta endpoint (MCP needs it)."""

    tools: list[dict[str, Any]] = field(default_factory=list)
    mcp_servers: list[dict[str, Any]] = field(default_factory=list)
    betas: list[str] = field(default_factory=list)

    def kwargs(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.tools:
            params["tools"] = self.tools
        if self.mcp_servers:
            params["mcp_servers"] = self.mcp_servers
            params["betas"] = self.betas
        return params


def tool_request(settings: Settings, model: str) -> ToolRequest:
    """The tools `settings` turn on for an answer by `model` (a channel's settings included)."""
    tools: list[dict[str, Any]] = []
    domains: dict[str, Any] = {}
    if settings.web_allowed_domains:
        domains["allowed_domains"] = list(settings.web_allowed_domains)
    elif settings.web_blocked_domains:
        domains["blocked_domains"] = list(settings.web_blocked_domains)
    for name, on in (("web_search", settings.web_search), ("web_fetch", settings.web_fetch)):
        if on:
            tool = {"type": tool_version(name, model), "name": name}
            tools.append({**tool, "max_uses": settings.web_max_uses, **domains})
            if name == "web_fetch":  # citations of fetched pages are off unless asked for
                tools[-1]["citations"] = {"enabled": True}
    servers: list[dict[str, Any]] = []
    for server in settings.mcp_servers:
        definition: dict[str, Any] = {"type": "url", "url": server.url, "name": server.name}
        if (token := server.token()) is not None:
            definition["authorization_token"] = token
        servers.append(definition)
        tools.append({"type": "mcp_toolset", "mcp_server_name": server.name})
    return ToolRequest(tools, servers, [mcp_beta()] if servers else [])

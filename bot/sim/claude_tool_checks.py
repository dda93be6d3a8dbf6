"""The Messages API's checks of server tools in a request, with its 400 messages: the `tools`
and `mcp_servers` a bot declares, and the server tool blocks it sends back (a turn that paused
with `pause_turn` goes on from its assistant content).

- `tools`: web search and web fetch in the versions the SDK knows, with their own `name`, a
  positive `max_uses`, not both `allowed_domains` and `blocked_domains`; `mcp_toolset` for a
  server in `mcp_servers`; custom tools (`name`, `input_schema`). Any other type is refused.
- `mcp_servers`: `{"type": "url", "url": "https://…", "name", "authorization_token"?}`, only
  with an `anthropic-beta: mcp-client-…` header, each with its `mcp_toolset` in `tools`.
- Sent-back content: each tool use is followed by its result in the same message; the
  `encrypted_content` and `encrypted_index` values are ones this simulator handed out; the last
  block of a trailing assistant message is not text ending in whitespace.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Container
from typing import Any

import anthropic.types

from bot.sim.claude_tools import RESULT_TYPES, TOOL_USE_TYPES


def _sdk_web_tools() -> dict[str, str]:
    """Web search and web fetch versions the SDK knows: tool type -> the name it must have."""
    versions: dict[str, str] = {}
    for attr in dir(anthropic.types):
        if re.fullmatch(r"Web(Search|Fetch)Tool\d{8}Param", attr):
            hints = typing.get_type_hints(getattr(anthropic.types, attr))
            (kind,), (name,) = typing.get_args(hints["type"]), typing.get_args(hints["name"])
            versions[kind] = name
    return versions


WEB_TOOLS = _sdk_web_tools()
_SERVER_FIELDS = frozenset({"type", "url", "name", "authorization_token", "tool_configuration"})


def _mcp_beta(headers: dict[str, str]) -> bool:
    betas = headers.get("anthropic-beta", "")
    return any(beta.strip().startswith("mcp-client-") for beta in betas.split(","))


def tools_problem(
    body: dict[str, Any], headers: dict[str, str], emitted: Container[str]
) -> str | None:
    """The API's 400 message for the request's server tools, else None. `headers` are
    lower-cased; `emitted` holds every encrypted value this simulator handed out."""
    servers = body.get("mcp_servers")
    names: list[str] = []
    if servers is not None:
        if not _mcp_beta(headers):
            return "mcp_servers: Extra inputs are not permitted"
        problem = _servers_problem(servers, names)
        if problem is not None:
            return problem
    tools = body.get("tools")
    toolsets: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for i, tool in enumerate(tools):
            if (problem := _tool_problem(f"tools.{i}", tool, names, headers)) is not None:
                return problem
            if tool.get("type") == "mcp_toolset":
                if tool["mcp_server_name"] in toolsets:
                    return (
                        f"tools.{i}: MCP server '{tool['mcp_server_name']}' is referenced by "
                        "more than one mcp_toolset"
                    )
                toolsets.add(tool["mcp_server_name"])
    for i, name in enumerate(names):
        if name not in toolsets:
            return (
                f"mcp_servers.{i}: MCP server '{name}' is defined in mcp_servers but no "
                "mcp_toolset in tools references it"
            )
    return _content_problem(body.get("messages") or [], emitted)


def _servers_problem(servers: Any, names: list[str]) -> str | None:
    if not isinstance(servers, list):
        return "mcp_servers: Input should be a valid list"
    for i, server in enumerate(servers):
        where = f"mcp_servers.{i}"
        if not isinstance(server, dict):
            return f"{where}: Input should be a valid dictionary"
        if extra := set(server) - _SERVER_FIELDS:
            return f"{where}.{sorted(extra)[0]}: Extra inputs are not permitted"
        if server.get("type") != "url":
            return f"{where}.type: Input should be 'url'"
        url, name = server.get("url"), server.get("name")
        if not isinstance(url, str) or not url.startswith("https://"):
            return f"{where}.url: MCP server URL must start with https://"
        if not isinstance(name, str) or not name:
            return f"{where}.name: Field required"
        if name in names:
            return f"{where}.name: MCP server names must be unique; '{name}' is used twice"
        token = server.get("authorization_token")
        if token is not None and not isinstance(token, str):
            return f"{where}.authorization_token: Input should be a valid string"
        names.append(name)
    return None


def _tool_problem(where: str, tool: Any, servers: list[str], headers: dict[str, str]) -> str | None:
    if not isinstance(tool, dict):
        return f"{where}: Input should be a valid dictionary"
    kind = tool.get("type")
    if kind in WEB_TOOLS:
        if tool.get("name") != WEB_TOOLS[kind]:
            return f"{where}.{kind}.name: Input should be '{WEB_TOOLS[kind]}'"
        max_uses = tool.get("max_uses")
        if max_uses is not None and (not isinstance(max_uses, int) or max_uses < 1):
            return f"{where}.{kind}.max_uses: Input should be greater than or equal to 1"
        if tool.get("allowed_domains") is not None and tool.get("blocked_domains") is not None:
            return f"{where}.{kind}: Cannot specify both allowed_domains and blocked_domains"
        return None
    if kind == "mcp_toolset" and _mcp_beta(headers):
        server = tool.get("mcp_server_name")
        if server not in servers:
            return (
                f"{where}.mcp_toolset.mcp_server_name: MCP server '{server}' is not defined "
                "in mcp_servers"
            )
        return None
    if kind in (None, "custom"):
        if not isinstance(tool.get("name"), str) or not isinstance(tool.get("input_schema"), dict):
            return f"{where}.custom: a custom tool needs a name and an input_schema"
        return None
    expected = ", ".join(f"'{t}'" for t in ["custom", *sorted(WEB_TOOLS)])
    return (
        f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected "
        f"tags: {expected}"
    )


def _content_problem(messages: list[Any], emitted: Container[str]) -> str | None:
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        open_uses: dict[str, str] = {}  # tool use id -> its tool's name, until its result comes
        for j, block in enumerate(content):
            where = f"messages.{i}.content.{j}"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind in TOOL_USE_TYPES | RESULT_TYPES and message.get("role") != "assistant":
                return f"{where}: {kind} blocks are only allowed in assistant messages"
            if kind in TOOL_USE_TYPES:
                open_uses[str(block.get("id"))] = str(block.get("name"))
            elif (
                kind in RESULT_TYPES and open_uses.pop(str(block.get("tool_use_id")), None) is None
            ):
                return (
                    f"{where}: {kind} block's tool_use_id '{block.get('tool_use_id')}' does "
                    "not match any earlier tool use block in this message"
                )
            if (problem := _encrypted_problem(where, block, emitted)) is not None:
                return problem
        if open_uses:
            tool_use_id, name = next(iter(open_uses.items()))
            return (
                f"messages.{i}: {name} tool use with id {tool_use_id} was found without a "
                "corresponding result block after it"
            )
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") == "assistant":
        content = last.get("content")
        final = content[-1] if isinstance(content, list) and content else content
        text = (
            final.get("text") if isinstance(final, dict) and final.get("type") == "text" else final
        )
        if isinstance(text, str) and text != text.rstrip():
            return "final assistant content cannot end with trailing whitespace"
    return None


def _encrypted_problem(where: str, block: Any, emitted: Container[str]) -> str | None:
    if not isinstance(block, dict):
        return None
    if block.get("type") == "web_search_tool_result" and isinstance(block.get("content"), list):
        for k, result in enumerate(block["content"]):
            if not isinstance(result, dict) or result.get("encrypted_content") not in emitted:
                return f"{where}.content.{k}.encrypted_content: invalid encrypted_content"
    if block.get("type") == "text" and isinstance(block.get("citations"), list):
        for k, citation in enumerate(block["citations"]):
            if (
                isinstance(citation, dict)
                and citation.get("type") == "web_search_result_location"
                and citation.get("encrypted_index") not in emitted
            ):
                return f"{where}.citations.{k}.encrypted_index: invalid encrypted_index"
    return None

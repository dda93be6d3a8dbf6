"""`slackstream check`: configuration and connectivity, as a checklist with what to fix.

Each check is independent, so one failure doesn't hide the others: an operator fixing a fresh
install sees every problem in one run.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

import anthropic
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import SECRETS, ConfigError, Settings, secret_problem
from bot.manifest import BOT_SCOPES
from bot.store import RedisStore, StoreError
from bot.tools import tool_request

TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str = ""


async def check_config(settings: Settings) -> list[CheckResult]:
    """Each credential: set or not, and anything that would make it fail (the same judgement
    `serve` and `socket` apply at start-up)."""
    results = []
    for spec in SECRETS:
        name = spec.field.upper()
        value = getattr(settings, spec.field)
        plain = value.get_secret_value() if value is not None else None
        needed_for = " and ".join(sorted(spec.needed_in))
        problem = secret_problem(spec, plain, None)
        if problem is not None:
            results.append(CheckResult(f"{name} set", False, problem, f"export {name}=…"))
        elif plain is None:
            # Needed by both ways of running (HTTP and Socket Mode), or by one of them only.
            required = spec.needed_in >= {"serve", "socket"}
            results.append(
                CheckResult(
                    f"{name} set",
                    not required,
                    f"not set (needed for {needed_for})",
                    f"export {name}=…",
                )
            )
        else:
            results.append(CheckResult(f"{name} set", True, "set"))
    return results


async def check_slack(settings: Settings) -> list[CheckResult]:
    if settings.slack_bot_token is None:
        return [CheckResult("Slack auth.test", False, "skipped: no SLACK_BOT_TOKEN")]
    client = AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        timeout=int(TIMEOUT_SECONDS),
    )
    try:
        response = await client.auth_test()
    except SlackApiError as e:
        error = e.response.get("error", "unknown")
        return [
            CheckResult(
                "Slack auth.test",
                False,
                f"Slack answered {error}",
                "check SLACK_BOT_TOKEN (reinstall the app to get a fresh token)",
            )
        ]
    except Exception as e:  # network, DNS, TLS: report, don't crash the checklist
        return [
            CheckResult(
                "Slack auth.test",
                False,
                f"could not reach Slack: {e!r}",
                f"check SLACK_API_URL ({settings.slack_api_url}) and the network",
            )
        ]
    results = [
        CheckResult(
            "Slack auth.test",
            True,
            f"bot {response.get('user')} ({response.get('user_id')}) in "
            f"{response.get('team')} ({response.get('team_id')})",
        )
    ]
    granted_header = {k.lower(): v for k, v in (response.headers or {}).items()}.get(
        "x-oauth-scopes"
    )
    if granted_header is None:
        results.append(CheckResult("bot scopes", True, "Slack did not report scopes; not checked"))
        return results
    raw = granted_header[0] if isinstance(granted_header, list) else granted_header
    granted = {s.strip() for s in str(raw).split(",") if s.strip()}
    missing = sorted(set(BOT_SCOPES) - granted)
    lacking = f"missing: {', '.join(missing)}"
    if "files:read" in missing:  # Slack then answers a download with its sign-in page
        lacking += " (without files:read, no file in a thread reaches Claude)"
    results.append(
        CheckResult(
            "bot scopes",
            not missing,
            "all declared scopes granted" if not missing else lacking,
            ""
            if not missing
            else "add the scopes (or reinstall from manifest.yml), then reinstall",
        )
    )
    return results


async def check_claude(settings: Settings) -> list[CheckResult]:
    if settings.anthropic_api_key is None:
        return [CheckResult("Claude", False, "skipped: no ANTHROPIC_API_KEY")]
    client = anthropic.AsyncAnthropic(
        api_key=settings.anthropic_api_key.get_secret_value(),
        base_url=settings.anthropic_base_url,
        max_retries=0,
        timeout=TIMEOUT_SECONDS,
        http_client=anthropic.DefaultAioHttpClient(),  # the transport `serve` streams over
    )
    try:
        counted = await client.messages.count_tokens(
            model=settings.claude_model,
            messages=[{"role": "user", "content": "ping"}],
        )
    except anthropic.AuthenticationError:
        return [CheckResult("Claude", False, "the API key was rejected", "check ANTHROPIC_API_KEY")]
    except anthropic.NotFoundError:
        return [
            CheckResult(
                "Claude", False, f"model {settings.claude_model} not found", "check CLAUDE_MODEL"
            )
        ]
    except anthropic.APIError as e:
        return [
            CheckResult(
                "Claude",
                False,
                f"Claude answered: {type(e).__name__}",
                "check ANTHROPIC_BASE_URL and the network",
            )
        ]
    finally:
        await client.close()
    return [
        CheckResult(
            "Claude",
            True,
            f"{settings.claude_model} reachable (count_tokens: {counted.input_tokens})",
        )
    ]


async def check_redis(settings: Settings) -> list[CheckResult]:
    if not settings.redis_url:
        return [
            CheckResult("store", True, "REDIS_URL not set: in-process store, run one replica only")
        ]
    store = RedisStore.from_url(settings.redis_url)
    try:
        await store.ping()
    except StoreError as e:
        return [CheckResult("Redis", False, str(e), "check REDIS_URL and that Redis is running")]
    finally:
        await store.close()
    return [CheckResult("Redis", True, "PING answered")]


async def check_channel_settings(settings: Settings) -> list[CheckResult]:
    """CHANNEL_SETTINGS_FILE (one line per mistake), and whether Claude knows every model it
    and CLAUDE_MODEL name (asked of the models endpoint, when Claude can be reached)."""
    from bot.channels import load_channel_file

    name = "channel settings"
    try:
        channel_file = load_channel_file(settings.channel_settings_file)
    except ConfigError as e:
        head, *mistakes = str(e).splitlines()
        fix = "correct CHANNEL_SETTINGS_FILE (docs/operations.md, Channels)"
        if not mistakes:
            return [CheckResult(name, False, head, fix)]
        return [CheckResult(name, False, line.strip(), fix) for line in mistakes]
    if settings.channel_settings_file:
        detail = f"{settings.channel_settings_file}: {len(channel_file.channels)} channel(s)"
    else:
        detail = "CHANNEL_SETTINGS_FILE not set: every channel gets the environment's settings"
    results = [CheckResult(name, True, detail)]
    users: dict[str, list[str]] = {settings.claude_model: ["CLAUDE_MODEL"]}
    if channel_file.defaults.model:
        users.setdefault(channel_file.defaults.model, []).append("defaults")
    for channel, layer in channel_file.channels.items():
        if layer.model:
            users.setdefault(layer.model, []).append(f"channels.{channel}")
    results += await _check_models(settings, users)
    return results


async def _check_models(settings: Settings, users: dict[str, list[str]]) -> list[CheckResult]:
    if settings.anthropic_api_key is None:
        return [CheckResult("models", True, "not checked: no ANTHROPIC_API_KEY")]
    client = anthropic.AsyncAnthropic(
        api_key=settings.anthropic_api_key.get_secret_value(),
        base_url=settings.anthropic_base_url,
        max_retries=0,
        timeout=TIMEOUT_SECONDS,
        http_client=anthropic.DefaultAioHttpClient(),
    )
    results = []
    try:
        for model, where in users.items():
            label = f"model {model}"
            try:
                await client.models.retrieve(model)
            except anthropic.NotFoundError:
                results.append(
                    CheckResult(
                        label,
                        False,
                        f"Claude has no such model (named by {', '.join(where)})",
                        "use a model ID from Claude's models list",
                    )
                )
            except anthropic.APIError as e:
                results.append(
                    CheckResult(label, True, f"not checked: Claude answered {type(e).__name__}")
                )
            else:
                results.append(CheckResult(label, True, f"known to Claude ({', '.join(where)})"))
    finally:
        await client.close()
    return results


async def check_tools(settings: Settings) -> list[CheckResult]:
    """Claude's web tools (which versions, which domains) and each MCP server in MCP_SERVERS:
    its token variable must be set when it names one (a server without its token refuses
    Claude, and every answer would say the tool failed)."""
    request = tool_request(settings, settings.claude_model)
    web = [tool["type"] for tool in request.tools if tool["type"] != "mcp_toolset"]
    domains = ""
    if settings.web_allowed_domains:
        domains = f"; only {', '.join(settings.web_allowed_domains)}"
    elif settings.web_blocked_domains:
        domains = f"; never {', '.join(settings.web_blocked_domains)}"
    detail = (
        f"{', '.join(web)} (up to {settings.web_max_uses} uses each per request){domains}"
        if web
        else "off (WEB_SEARCH and WEB_FETCH are false)"
    )
    results = [CheckResult("web tools", True, detail)]
    for server in settings.mcp_servers:
        name = f"MCP server {server.name}"
        if server.token_env and server.token() is None:
            results.append(
                CheckResult(
                    name,
                    False,
                    f"{server.token_env} (its token) is not set",
                    f"export {server.token_env}=… or remove token_env from MCP_SERVERS",
                )
            )
            continue
        auth = f"token from {server.token_env}" if server.token_env else "no token"
        via = request.betas[0] if request.betas else ""
        results.append(CheckResult(name, True, f"{server.url} ({auth}; via {via})"))
    return results


CHECKS: tuple[Callable[[Settings], Awaitable[list[CheckResult]]], ...] = (
    check_config,
    check_slack,
    check_claude,
    check_redis,
    check_channel_settings,
    check_tools,
)


async def run_check(settings: Settings, out: TextIO = sys.stdout) -> int:
    """Print the checklist; 0 when everything passed, 1 otherwise."""
    batches = await asyncio.gather(*(check(settings) for check in CHECKS))
    results = [r for batch in batches for r in batch]
    for r in results:
        mark = "ok  " if r.ok else "FAIL"
        out.write(f"[{mark}] {r.name}: {r.detail}\n")
        if not r.ok and r.fix:
            out.write(f"       fix: {r.fix}\n")
    failed = sum(not r.ok for r in results)
    out.write(f"checklist: {len(results) - failed} ok, {failed} to fix\n")
    return 1 if failed else 0

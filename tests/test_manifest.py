"""The Slack app manifests: valid, in sync with bot/manifest.py, and asking for exactly
the scopes the bot's code needs.

The scope check reads the bot's source: every Slack Web API method it references (as a
slack-sdk client method, an ``api_call("...")`` name, a method-name string or a Bolt
listener utility such as ``say``) must be listed in ``SCOPES_BY_METHOD`` with scopes the
manifest declares. The list of client methods comes from slack-sdk's own source, so a new
call such as ``client.reactions_add(...)`` fails here until ``reactions:write`` is added.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import slack_sdk.web.async_client
import yaml

from bot.manifest import (
    BOT_EVENTS,
    BOT_SCOPES,
    HTTP_MANIFEST_PATH,
    PLACEHOLDER_URL,
    SCOPES_BY_EVENT,
    SCOPES_BY_METHOD,
    SOCKET_MANIFEST_PATH,
    build_manifest,
    checked_in_manifests,
    dump_manifest,
    generated_file_text,
    request_url,
)
from tests.shared_files import SLACK_REFERENCE, missing

REPO = Path(__file__).resolve().parents[1]
BOT_DIR = REPO / "bot"
SCHEMA_NAME = "manifest.schema.2.0.0.json"

# slack-sdk client methods that wrap several Web API calls instead of one `api_call`.
SDK_HELPERS: dict[str, tuple[str, ...]] = {
    "chat_stream": ("chat.startStream", "chat.appendStream", "chat.stopStream"),
    "files_upload_v2": ("files.getUploadURLExternal", "files.completeUploadExternal"),
}
# Bolt listener arguments that call the Web API on the listener's behalf.
BOLT_UTILITIES: dict[str, tuple[str, ...]] = {
    "say": ("chat.postMessage",),
    "set_status": ("assistant.threads.setStatus",),
    "set_title": ("assistant.threads.setTitle",),
    "set_suggested_prompts": ("assistant.threads.setSuggestedPrompts",),
    "say_stream": ("chat.startStream", "chat.appendStream", "chat.stopStream"),
}


def reference_file(name: str) -> Path | None:
    path = SLACK_REFERENCE / name
    return path if path.is_file() else None


@cache
def client_methods() -> dict[str, tuple[str, ...]]:
    """slack-sdk's AsyncWebClient methods → the Web API methods each one calls."""
    path = Path(slack_sdk.web.async_client.__file__)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    client = next(
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "AsyncWebClient"
    )
    methods: dict[str, tuple[str, ...]] = {}
    for fn in client.body:
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) or fn.name.startswith("_"):
            continue
        called = tuple(
            sorted(
                {
                    call.args[0].value
                    for call in ast.walk(fn)
                    if isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "api_call"
                    and call.args
                    and isinstance(call.args[0], ast.Constant)
                    and isinstance(call.args[0].value, str)
                }
            )
        )
        # An unknown helper maps to a name no table lists, so using it fails loudly.
        methods[fn.name] = called or SDK_HELPERS.get(fn.name, (f"<slack-sdk helper {fn.name}>",))
    return methods


@cache
def method_names() -> frozenset[str]:
    """Every Web API method name slack-sdk knows, e.g. ``chat.update``."""
    return frozenset(m for ms in client_methods().values() for m in ms)


def slack_calls(source: str) -> dict[str, set[int]]:
    """Web API methods referenced in Python source → the lines referencing them."""
    found: dict[str, set[int]] = {}

    def add(methods: Iterable[str], line: int) -> None:
        for method in methods:
            found.setdefault(method, set()).add(line)

    by_attribute = {**client_methods(), **BOLT_UTILITIES}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in by_attribute:
            add(by_attribute[node.attr], node.lineno)
        elif isinstance(node, ast.Name) and node.id in BOLT_UTILITIES:
            add(BOLT_UTILITIES[node.id], node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # "chat.update" (api_call, metric labels) or "chat_update" (getattr).
            if node.value in method_names():
                add([node.value], node.lineno)
            elif node.value in client_methods():
                add(client_methods()[node.value], node.lineno)
    return found


def undeclared(methods: Iterable[str]) -> dict[str, str]:
    """Methods the manifest does not cover, with the reason."""
    problems: dict[str, str] = {}
    for method in sorted(methods):
        if method not in SCOPES_BY_METHOD:
            problems[method] = "not listed in bot.manifest.SCOPES_BY_METHOD"
        elif missing := set(SCOPES_BY_METHOD[method]) - set(BOT_SCOPES):
            problems[method] = f"scopes {sorted(missing)} not in BOT_SCOPES"
    return problems


def bot_sources() -> list[Path]:
    """The bot's own modules: not the Slack simulator, not the manifest declaration."""
    return sorted(
        p
        for p in BOT_DIR.rglob("*.py")
        if "sim" not in p.relative_to(BOT_DIR).parts[:-1] and p.name != "manifest.py"
    )


def bot_calls() -> dict[str, set[str]]:
    """Web API methods referenced anywhere in the bot → ``file:line`` locations."""
    calls: dict[str, set[str]] = {}
    for path in bot_sources():
        for method, lines in slack_calls(path.read_text(encoding="utf-8")).items():
            rel = path.relative_to(REPO)
            calls.setdefault(method, set()).update(f"{rel}:{line}" for line in lines)
    return calls


def listened_events() -> set[str]:
    """Event types the bot registers listeners for (``app.event("...")``)."""
    events: set[str] = set()
    for path in bot_sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "event"
                and node.args
            ):
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    events.add(arg.value)
                elif isinstance(arg, ast.Dict):
                    events.update(
                        v.value
                        for k, v in zip(arg.keys, arg.values, strict=True)
                        if isinstance(k, ast.Constant) and k.value == "type"
                        if isinstance(v, ast.Constant) and isinstance(v.value, str)
                    )
    return events


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


BOTH = pytest.mark.parametrize(
    "path", [HTTP_MANIFEST_PATH, SOCKET_MANIFEST_PATH], ids=["http", "socket"]
)


# --- the checked-in files -------------------------------------------------------------


@BOTH
def test_checked_in_manifest_is_the_generated_one(path: Path) -> None:
    expected = checked_in_manifests()[path]
    assert path.read_text(encoding="utf-8") == generated_file_text(expected), (
        f"{path.relative_to(REPO)} differs from bot/manifest.py; run `python -m bot.manifest`"
    )
    assert load(path) == expected


@BOTH
def test_manifest_passes_slacks_json_schema(path: Path) -> None:
    schema_path = reference_file(SCHEMA_NAME)
    if schema_path is None:
        pytest.skip(missing(SLACK_REFERENCE / SCHEMA_NAME, "Slack's app manifest schema"))
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(load(path))]
    assert errors == []


@BOTH
def test_manifest_declares_exactly_the_bots_scopes_and_events(path: Path) -> None:
    manifest = load(path)
    assert manifest["oauth_config"]["scopes"] == {"bot": list(BOT_SCOPES)}
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == list(BOT_EVENTS)
    assert manifest["features"]["bot_user"]["display_name"]
    assert 1 <= len(manifest["display_information"]["name"]) <= 35


@BOTH
def test_users_can_write_to_the_bot_in_dms(path: Path) -> None:
    app_home = load(path)["features"]["app_home"]
    assert app_home["messages_tab_enabled"] is True
    assert app_home["messages_tab_read_only_enabled"] is False
    assert "message.im" in BOT_EVENTS and "im:history" in BOT_SCOPES


def test_http_manifest_sends_events_and_stop_clicks_to_the_bot() -> None:
    settings = load(HTTP_MANIFEST_PATH)["settings"]
    endpoint = f"{PLACEHOLDER_URL}/slack/events"
    assert settings["socket_mode_enabled"] is False
    assert settings["event_subscriptions"]["request_url"] == endpoint
    assert settings["interactivity"] == {"is_enabled": True, "request_url": endpoint}


def test_socket_manifest_has_no_request_urls() -> None:
    settings = load(SOCKET_MANIFEST_PATH)["settings"]
    assert settings["socket_mode_enabled"] is True
    assert settings["interactivity"] == {"is_enabled": True}
    assert "request_url" not in settings["event_subscriptions"]


# --- scopes versus the bot's code --------------------------------------------------------


def test_scopes_are_derived_from_methods_and_events() -> None:
    needed = {
        s for scopes in (*SCOPES_BY_METHOD.values(), *SCOPES_BY_EVENT.values()) for s in scopes
    }
    assert set(BOT_SCOPES) == needed
    assert len(BOT_SCOPES) == len(set(BOT_SCOPES))
    assert set(BOT_EVENTS) == set(SCOPES_BY_EVENT)


@pytest.mark.parametrize("method", sorted(SCOPES_BY_METHOD))
def test_method_scopes_match_slacks_metadata(method: str) -> None:
    spec_path = reference_file(f"methods/{method}.json")
    if spec_path is None and (SLACK_REFERENCE / "methods").is_dir():
        pytest.skip(f"the reference in {SLACK_REFERENCE} has no metadata for {method}")
    if spec_path is None:
        pytest.skip(missing(SLACK_REFERENCE / "methods", f"Slack's metadata for {method}"))
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    assert set(SCOPES_BY_METHOD[method]) == set(spec["scope"].get("bot", []))


def test_every_method_the_bot_calls_has_its_scopes_declared() -> None:
    calls = bot_calls()
    problems = {
        m: f"{why} (used at {', '.join(sorted(calls[m]))})" for m, why in undeclared(calls).items()
    }
    assert problems == {}


def test_every_declared_scope_is_needed_by_the_bots_code() -> None:
    calls = bot_calls()
    if not calls:
        pytest.skip("the bot's code makes no Slack calls yet")
    handled = {e for e in BOT_EVENTS if e.split(".")[0] in listened_events()}
    needed = {s for m in calls if m in SCOPES_BY_METHOD for s in SCOPES_BY_METHOD[m]}
    needed |= {s for e in handled for s in SCOPES_BY_EVENT[e]}
    assert set(BOT_SCOPES) - needed == set(), "scopes declared but never used"


def test_every_declared_event_has_a_listener() -> None:
    listened = listened_events()
    if not listened:
        pytest.skip("the bot's code registers no event listeners yet")
    assert {e.split(".")[0] for e in BOT_EVENTS} <= listened
    assert listened <= {e.split(".")[0] for e in BOT_EVENTS}, "listener for an unsubscribed event"


# --- the scanner itself ------------------------------------------------------------------

REACTIONS_ADD_SOURCES = {
    "client method": "async def f(client):\n    await client.reactions_add(name='eyes')\n",
    "nested attribute": "async def f(self):\n    await self._app.client.reactions_add(name='x')\n",
    "bound method": "def f(client):\n    return retrying(client.reactions_add)\n",
    "api_call": "async def f(c):\n    await c.api_call('reactions.add', json={})\n",
    "api_call keyword": "async def f(c):\n    await c.api_call(api_method='reactions.add')\n",
    "getattr": "async def f(c):\n    await getattr(c, 'reactions_add')(name='x')\n",
}


@pytest.mark.parametrize("source", REACTIONS_ADD_SOURCES.values(), ids=REACTIONS_ADD_SOURCES)
def test_scan_catches_a_new_call_without_its_scope(source: str) -> None:
    calls = slack_calls(source)
    assert calls == {"reactions.add": {2}}
    assert set(undeclared(calls)) == {"reactions.add"}


def test_scan_sees_bolt_utilities_and_sdk_helpers() -> None:
    source = (
        "async def handle(say, set_status, client):\n"
        "    await say('hi')\n"
        "    await set_status('is thinking…')\n"
        "    stream = await client.chat_stream(channel='C')\n"
    )
    assert slack_calls(source) == {
        "chat.postMessage": {2},
        "assistant.threads.setStatus": {3},
        "chat.startStream": {4},
        "chat.appendStream": {4},
        "chat.stopStream": {4},
    }


def test_scan_ignores_prose_and_comments() -> None:
    source = (
        '"""We never call reactions.add; see client.reactions_add( in the docs."""\n'
        "# await client.reactions_add(name='x')\n"
        "x = 'reactions.add is Tier 3'\n"
    )
    assert slack_calls(source) == {}


def test_scan_accepts_the_methods_the_bot_is_meant_to_call() -> None:
    names = [method.replace(".", "_") for method in SCOPES_BY_METHOD]
    source = "async def f(client):\n" + "".join(f"    await client.{n}()\n" for n in names)
    calls = slack_calls(source)
    assert set(calls) == set(SCOPES_BY_METHOD)
    assert undeclared(calls) == {}


# --- build_manifest / dump_manifest --------------------------------------------------------


def test_dumped_manifest_reads_back_unchanged() -> None:
    manifest = build_manifest(
        url="https://bot.example.org", socket=False, name="Ask", bot_name="ask"
    )
    assert yaml.safe_load(dump_manifest(manifest)) == manifest
    assert manifest["display_information"]["name"] == "Ask"
    assert manifest["features"]["bot_user"]["display_name"] == "ask"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://bot.example.org", "https://bot.example.org/slack/events"),
        ("https://bot.example.org/", "https://bot.example.org/slack/events"),
        ("https://example.org/claude", "https://example.org/claude/slack/events"),
        ("https://bot.example.org/slack/events", "https://bot.example.org/slack/events"),
        ("https://bot.example.org:8443/slack/events/", "https://bot.example.org:8443/slack/events"),
    ],
)
def test_request_url_points_at_the_events_endpoint(given: str, expected: str) -> None:
    assert request_url(given) == expected
    settings = build_manifest(url=given, socket=False)["settings"]
    assert settings["event_subscriptions"]["request_url"] == expected
    assert settings["interactivity"]["request_url"] == expected


@pytest.mark.parametrize(
    "bad", ["http://bot.example.org", "bot.example.org", "https://", "https://h/?a=1"]
)
def test_unusable_urls_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        build_manifest(url=bad, socket=False)


def test_http_mode_needs_a_url_and_socket_mode_ignores_it() -> None:
    with pytest.raises(ValueError, match="URL"):
        build_manifest(url=None, socket=False)
    assert build_manifest(url="https://x.example", socket=True) == build_manifest(
        url=None, socket=True
    )


@pytest.mark.parametrize(
    ("name", "bot_name"), [("", "claude"), ("x" * 36, "claude"), ("Claude", "")]
)
def test_names_slack_would_reject_are_refused(name: str, bot_name: str) -> None:
    with pytest.raises(ValueError, match="characters"):
        build_manifest(url=None, socket=True, name=name, bot_name=bot_name)


def test_the_manifest_declares_the_schema_version_it_is_written_for() -> None:
    """Without `_metadata.major_version: 2` Slack reads a manifest as version 1."""
    for socket in (False, True):
        manifest = build_manifest(url=None if socket else "https://bot.example.com", socket=socket)
        assert manifest["_metadata"] == {"major_version": 2}
    for path in checked_in_manifests():
        assert yaml.safe_load(path.read_text())["_metadata"] == {"major_version": 2}

"""The commands: one-line configuration errors, the manifest printer, and the offline demo."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bot.demo import run_demo

ROOT = Path(__file__).resolve().parent.parent
SECRET_VARS = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "ANTHROPIC_API_KEY")


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRET_VARS and k != "REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_without_configuration_says_what_to_set_in_one_line() -> None:
    result = _run("serve")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SLACK_BOT_TOKEN" in lines[0] and "ANTHROPIC_API_KEY" in lines[0]
    assert "SLACK_SIGNING_SECRET" in lines[0]


def test_socket_needs_the_app_token() -> None:
    result = _run("socket", SLACK_BOT_TOKEN="xoxb-1", ANTHROPIC_API_KEY="sk-1")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "slackstream: missing configuration: set SLACK_APP_TOKEN (see README, Configuration)."
    )


def test_bad_values_are_named_in_one_line() -> None:
    result = _run(
        "serve",
        SLACK_BOT_TOKEN="xoxb-1",
        SLACK_SIGNING_SECRET="s",
        ANTHROPIC_API_KEY="sk-1",
        PORT="not-a-port",
        LOG_FORMAT="xml",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "PORT" in lines[0] and "LOG_FORMAT" in lines[0]
    assert "Traceback" not in result.stderr


def test_manifest_command_prints_a_ready_manifest() -> None:
    http = _run("manifest", "--url", "https://bot.example.com")
    socket = _run("manifest", "--socket")
    missing_url = _run("manifest")
    assert http.returncode == 0 and socket.returncode == 0
    http_manifest = yaml.safe_load(http.stdout)
    assert (
        http_manifest["settings"]["event_subscriptions"]["request_url"]
        == "https://bot.example.com/slack/events"
    )
    assert yaml.safe_load(socket.stdout)["settings"]["socket_mode_enabled"] is True
    assert missing_url.returncode == 2 and "--url" in missing_url.stderr


async def test_demo_shows_placeholder_edits_and_final_footer() -> None:
    out = io.StringIO()
    final = await run_demo("What is a lease? [sim:long 900]", out=out)
    shown = out.getvalue()
    assert "placeholder posted: 'Thinking…'" in shown
    assert "edit   1:" in shown
    assert "final message:" in shown
    assert "Tokens:" in final.visible_text()
    assert shown.index("placeholder posted") < shown.index("edit   1:") < shown.index("final")


def test_every_command_says_what_it_does() -> None:
    overview = _run("--help")
    assert overview.returncode == 0
    for command in ("serve", "socket", "demo", "check", "manifest"):
        assert command in overview.stdout
        result = _run(command, "--help")
        assert result.returncode == 0, result.stderr
        # The description (after the usage block) is a sentence about this command.
        description = result.stdout.split("\n\n", 2)[1]
        assert len(description.split()) >= 12, (command, description)


def test_a_manifest_url_without_a_scheme_is_one_line() -> None:
    result = _run("manifest", "--url", "bot.example.com")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "--url" in result.stderr and "https://" in result.stderr


VALID = {
    "SLACK_BOT_TOKEN": "xoxb-1-2-abc",
    "SLACK_SIGNING_SECRET": "0123456789abcdef0123456789abcdef",
    "ANTHROPIC_API_KEY": "sk-ant-api03-abc",
}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REDIS_URL", "http://x"),
        ("REDIS_URL", "localhost:6379"),
        ("SLACK_API_URL", "slack.com/api"),
        ("ANTHROPIC_BASE_URL", "ftp://proxy"),
        ("PORT", "-1"),
        ("HOST", " "),
        ("EDIT_INTERVAL_SECONDS", "0"),
        ("WORKSPACE_EDITS_PER_MINUTE", "lots"),
        ("STREAM_LEASE_SECONDS", "-5"),
        ("MAX_ANSWERS_PER_USER", "0"),
        ("CONTEXT_TOKEN_BUDGET", "10"),
        ("CLAUDE_MAX_TOKENS", "0"),
        ("SYSTEM_PROMPT", "   "),
        ("PLACEHOLDER_TEXT", ""),
        ("SHOW_COST", "maybe"),
        ("LOG_LEVEL", "chatty"),
        ("SLACK_SIGNING_SECRET", ""),
        ("SLACK_SIGNING_SECRET", "   "),
        ("SLACK_BOT_TOKEN", "xoxp-a-user-token"),
        ("SLACK_BOT_TOKEN", "xoxb-replace-me"),
        ("ANTHROPIC_API_KEY", "sk-ant-replace-me"),
    ],
)
def test_each_bad_setting_is_one_line_naming_it(variable: str, value: str) -> None:
    result = _run("serve", **{**VALID, variable: value})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert variable in result.stderr


async def test_demo_streams_at_a_reading_pace_by_default() -> None:
    out = io.StringIO()
    await run_demo("What is a lease? [sim:long 900]", out=out)
    shown = out.getvalue()
    edits = [line for line in shown.splitlines() if "] edit " in line]
    assert len(edits) >= 2, shown  # a reader sees the answer grow, not jump to the end
    first, last = (float(line[1:7]) for line in (edits[0], edits[-1]))
    assert last - first >= 1.0, shown


async def test_demo_says_what_it_waits_for_when_claude_goes_silent() -> None:
    out = io.StringIO()
    final = await run_demo("hello [sim:stall]", out=out, chunk_delay=0.0, idle_timeout=3.5)
    shown = out.getvalue()
    assert "no new text from Claude" in shown and "STREAM_IDLE_TIMEOUT_SECONDS" in shown
    assert "[interrupted: Claude went silent for 3.5 s]" in final.visible_text()


async def test_demo_uses_redis_when_redis_url_is_set(redis_url: str) -> None:
    import redis.asyncio

    from bot.demo import DEMO_REDIS_PREFIX, demo_store

    os.environ["REDIS_URL"] = redis_url
    try:
        store = demo_store()
    finally:
        del os.environ["REDIS_URL"]
    assert store is not None and store.kind == "redis"
    out = io.StringIO()
    final = await run_demo("hi [sim:fast]", out=out, store=store)
    assert "store: redis" in out.getvalue()
    assert "Tokens:" in final.visible_text()
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        keys = [k.decode() async for k in client.scan_iter(match="*")]
    finally:
        await client.aclose()
    assert keys and all(k.startswith(DEMO_REDIS_PREFIX) for k in keys), keys


def test_demo_reports_a_bad_redis_url_in_one_line() -> None:
    result = _run("demo", REDIS_URL="http://x")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "REDIS_URL" in result.stderr

"""The commands: one-line configuration errors, the manifest printer, and the offline demo."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

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

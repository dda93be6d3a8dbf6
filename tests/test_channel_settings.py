"""Per-channel settings: CHANNEL_SETTINGS_FILE (validation, precedence, reload on SIGHUP) and
what answers are given, seen from Claude's side (the requests the simulated Claude receives)
and from Slack's (the footer names the model used)."""

from __future__ import annotations

import asyncio
import io
import signal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.channels import ChannelFile, load_channel_file, parse_channel_file, resolve
from bot.check import run_check
from bot.config import DEFAULT_SYSTEM_PROMPT, ConfigError
from bot.sim.claude import ClaudeSim, Script
from bot.sim.events import mention_envelope
from bot.sim.replica import Replica
from bot.sim.slack import SimMessage, SlackSim
from bot.store import ChannelOverride
from tests.harness import ALICE, BOB, CHANNEL, DM, TEAM, Harness, running_bot, settings_for
from tests.harness import simulators as sim_pair

PAYMENTS = "C0PAYMENTS"

FILE = """
defaults:
  model: claude-haiku-5-5
  system_prompt_append: "Answer in British English."
  max_tokens: 1500
  web_search: true
channels:
  C0PAYMENTS:
    system_prompt: "You are the on-call assistant for payments."
    model: claude-opus-5-5
    web_search: false
    allowed_users: [U0ALICE]
"""


def system_text(request: dict[str, Any]) -> str:
    system = request["system"]
    return system if isinstance(system, str) else "".join(block["text"] for block in system)


async def ask_in(h: Harness, channel: str, text: str, *, user: str = ALICE) -> SimMessage:
    asked = h.slack.post_user_message(channel, f"<@UBOT> {text}", user=user)
    status, body = await h.poster.post_event(
        mention_envelope(
            team_id=TEAM,
            channel=channel,
            user=user,
            text=asked.text,
            ts=asked.ts,
            bot_user_id="UBOT",
        )
    )
    assert status == 200, body
    return asked


async def admitted(h: Harness) -> None:
    """Every acknowledged event has been through admission (answered or not)."""
    pending = set(h.bot._intake)
    if pending:
        await asyncio.wait(pending)


# -- the file: validation -------------------------------------------------------------------


def test_a_valid_file_reads_back_with_every_key() -> None:
    read = parse_channel_file(FILE)
    assert read.defaults.model == "claude-haiku-5-5"
    assert read.defaults.max_tokens == 1500 and read.defaults.web_search is True
    payments = read.channels[PAYMENTS]
    assert payments.system_prompt == "You are the on-call assistant for payments."
    assert payments.allowed_users == frozenset({"U0ALICE"})
    assert payments.web_search is False
    assert parse_channel_file("") == ChannelFile()


def test_every_mistake_is_one_line_naming_where_it_is() -> None:
    text = """
defaults:
  modle: claude-opus-5
  max_tokens: "lots"
  web_fetch: "yes"
channels:
  general:
    model: claude-opus-5
  C0123ABCD:
    allowed_users: [U0AAA, bob, 42]
    system_prompt: ""
  C0456EFGH: [model]
extra: 1
"""
    with pytest.raises(ConfigError) as caught:
        parse_channel_file(text, "/etc/slackstream/channels.yml")
    head, *lines = str(caught.value).splitlines()
    assert head == "/etc/slackstream/channels.yml has 9 mistakes:"
    assert [line.strip() for line in lines] == [
        "extra: unknown key (known keys: defaults, channels)",
        "defaults.modle: unknown key (known keys: model, system_prompt, system_prompt_append, "
        "max_tokens, web_search, web_fetch, files, allowed_users)",
        "defaults.max_tokens: must be a whole number, got str 'lots'",
        "defaults.web_fetch: must be true or false, got str 'yes'",
        "channels.general: not a channel ID (like C0123ABCD: copy it from the channel's "
        "details in Slack)",
        "channels.C0123ABCD.allowed_users[1]: 'bob' is not a Slack user ID (like U0123ABCD)",
        "channels.C0123ABCD.allowed_users[2]: 42 is not a Slack user ID (like U0123ABCD)",
        "channels.C0123ABCD.system_prompt: must not be blank",
        "channels.C0456EFGH: must be a mapping of settings, got a list",
    ]


def test_a_file_that_is_not_yaml_or_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^f.yml: not valid YAML at line 2, column 10: mapping"):
        parse_channel_file("defaults:\n  model: : x\n", "f.yml")
    with pytest.raises(ConfigError, match=r"cannot be read"):
        load_channel_file(str(tmp_path / "missing.yml"))


def test_the_layers_apply_in_order_and_say_where_each_value_came_from() -> None:
    settings = settings_for_offline()
    read = parse_channel_file(FILE)
    payments = resolve(settings, read, PAYMENTS)
    assert payments.model == "claude-opus-5-5"
    assert payments.system_prompt == (
        "You are the on-call assistant for payments.\n\nAnswer in British English."
    )
    assert payments.max_tokens == 1500
    assert (payments.web_search, payments.web_fetch, payments.files) == (False, None, None)
    assert payments.switch("web_search", True) is False  # the file's word wins
    assert payments.switch("web_fetch", True) is True  # unset: the environment's
    assert resolve(settings, read, "C0OTHER").switch("web_search", False) is True  # defaults
    assert payments.sources["model"] == "file channel"
    assert payments.sources["max_tokens"] == "file defaults"
    other = resolve(settings, read, "C0OTHER")
    assert other.model == "claude-haiku-5-5"
    assert other.system_prompt == DEFAULT_SYSTEM_PROMPT + "\n\nAnswer in British English."
    assert other.allows("U0ANYONE") and not payments.allows(BOB)
    overridden = resolve(
        settings, read, PAYMENTS, ChannelOverride(system_prompt="Be terse.", model="m-1")
    )
    assert overridden.model == "m-1" and overridden.sources["model"] == "Slack override"
    assert overridden.system_prompt == "Be terse.\n\nAnswer in British English."
    assert overridden.max_tokens == 1500  # an override sits on the file; the rest stays
    environment = resolve(settings, ChannelFile(), PAYMENTS)
    assert environment.model == settings.claude_model
    assert environment.sources["model"] == "environment"
    applied = payments.apply(settings)
    assert (applied.claude_model, applied.claude_max_tokens) == ("claude-opus-5-5", 1500)
    assert applied.system_prompt == payments.system_prompt
    assert settings.claude_model != applied.claude_model  # the original is untouched


def settings_for_offline() -> Any:
    from bot.config import Settings

    return Settings(slack_bot_token="xoxb-x", anthropic_api_key="sk-x")


# -- on real wires ---------------------------------------------------------------------------


async def test_answers_follow_the_file_and_the_footer_names_the_model(tmp_path: Path) -> None:
    path = tmp_path / "channels.yml"
    path.write_text(FILE)
    async with sim_pair() as (slack, claude):
        slack.add_channel(PAYMENTS)
        async with running_bot(slack, claude, channel_settings_file=str(path)) as h:
            in_payments = await ask_in(h, PAYMENTS, "is the ledger up?")
            payments_final = (await h.finished(in_payments, PAYMENTS))[-1]
            in_general = await h.mention("hello")
            general_final = (await h.finished(in_general))[-1]
            in_dm = await h.dm("and here?")
            dm_final = (await h.finished(in_dm, DM))[-1]
    payments, general, dm = claude.requests
    assert payments["model"] == "claude-opus-5-5" and payments["max_tokens"] == 1500
    assert system_text(payments) == (
        "You are the on-call assistant for payments.\n\nAnswer in British English."
    )
    for request in (general, dm):
        assert request["model"] == "claude-haiku-5-5" and request["max_tokens"] == 1500
        assert system_text(request).endswith("Answer in British English.")
        assert system_text(request).startswith(DEFAULT_SYSTEM_PROMPT)
    assert "claude-opus-5-5" in payments_final.visible_text()
    assert "claude-haiku-5-5" in general_final.visible_text()
    assert "claude-haiku-5-5" in dm_final.visible_text()


async def test_a_channels_allowed_users_are_the_only_ones_answered_there(tmp_path: Path) -> None:
    path = tmp_path / "channels.yml"
    path.write_text(FILE)
    async with sim_pair() as (slack, claude):
        slack.add_channel(PAYMENTS)
        async with running_bot(slack, claude, channel_settings_file=str(path)) as h:
            ignored = await ask_in(h, PAYMENTS, "let me in", user=BOB)
            elsewhere = await h.mention("and here?", user=BOB)
            await h.finished(elsewhere)
            await admitted(h)
    assert h.replies(ignored, PAYMENTS) == []
    assert len(claude.requests) == 1


async def test_an_admins_override_sits_on_the_file(tmp_path: Path) -> None:
    path = tmp_path / "channels.yml"
    path.write_text(FILE)
    async with sim_pair() as (slack, claude):
        slack.add_channel(PAYMENTS)
        async with running_bot(slack, claude, channel_settings_file=str(path)) as h:
            await h.bot.store.set_channel_override(
                TEAM, PAYMENTS, ChannelOverride(model="claude-sonnet-5-5", by="U0ADMIN", at=1.0)
            )
            asked = await ask_in(h, PAYMENTS, "who is on call?")
            final = (await h.finished(asked, PAYMENTS))[-1]
    [request] = claude.requests
    assert request["model"] == "claude-sonnet-5-5"  # the override's
    assert system_text(request).startswith("You are the on-call assistant for payments.")
    assert request["max_tokens"] == 1500  # the file's
    assert "claude-sonnet-5-5" in final.visible_text()


async def test_a_mistake_in_the_file_stops_start_up_in_one_line_per_mistake(
    tmp_path: Path,
) -> None:
    path = tmp_path / "channels.yml"
    path.write_text("channels:\n  general: {model: x}\n  C0OK: {colour: red}\n")
    from tests.test_cli import _run

    result = _run(
        "serve",
        SLACK_BOT_TOKEN="xoxb-1",
        SLACK_SIGNING_SECRET="s3cr3t-signing",
        ANTHROPIC_API_KEY="sk-1",
        CHANNEL_SETTINGS_FILE=str(path),
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"slackstream: {path} has 2 mistakes:",
        "  channels.general: not a channel ID (like C0123ABCD: copy it from the channel's "
        "details in Slack)",
        "  channels.C0OK.colour: unknown key (known keys: model, system_prompt, "
        "system_prompt_append, max_tokens, web_search, web_fetch, files, allowed_users)",
    ]


async def test_check_reports_each_mistake_and_asks_claude_about_each_model(
    tmp_path: Path,
) -> None:
    """The models endpoint here knows two models only (the simulated Claude knows them all)."""
    known = {"claude-sonnet-5-5", "claude-haiku-5-5"}

    async def model(request: web.Request) -> web.Response:
        model_id = request.match_info["model_id"]
        if model_id in known:
            return web.json_response({"type": "model", "id": model_id, "display_name": model_id})
        error = {"type": "not_found_error", "message": f"model: {model_id}"}
        return web.json_response({"type": "error", "error": error}, status=404)

    app = web.Application()
    app.router.add_get("/v1/models/{model_id}", model)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    good, bad = tmp_path / "good.yml", tmp_path / "bad.yml"
    good.write_text(
        "defaults: {model: claude-haiku-5-5}\nchannels:\n  C0AAA: {model: claude-opus-9}\n"
    )
    bad.write_text("defaults: {max_tokens: 0}\nchannels: {random: {}}\n")
    try:
        async with SlackSim() as slack, ClaudeSim() as claude:
            reports = []
            for path in (good, bad):
                out = io.StringIO()
                settings = settings_for(
                    slack, claude, anthropic_base_url=base, channel_settings_file=str(path)
                )
                await run_check(settings, out)
                reports.append(out.getvalue())
    finally:
        await runner.cleanup()
    good_report, bad_report = reports
    assert f"[ok  ] channel settings: {good}: 1 channel(s)" in good_report
    assert "[ok  ] model claude-sonnet-5-5: known to Claude (CLAUDE_MODEL)" in good_report
    assert "[ok  ] model claude-haiku-5-5: known to Claude (defaults)" in good_report
    assert (
        "[FAIL] model claude-opus-9: Claude has no such model (named by channels.C0AAA)"
        in good_report
    )
    assert "[FAIL] channel settings: defaults.max_tokens: must be between 1 and" in bad_report
    assert "[FAIL] channel settings: channels.random: not a channel ID" in bad_report


async def test_sighup_reloads_the_file_without_dropping_answers_in_flight(
    tmp_path: Path, redis_url: str
) -> None:
    path = tmp_path / "channels.yml"
    path.write_text("defaults: {model: claude-haiku-5-5}\n")
    slow = Script(text="a long and careful answer " * 60, chunk_chars=8, chunk_delay=0.02)
    async with sim_pair() as (slack, claude):
        claude.enqueue(slow)
        replica = Replica(
            "reload",
            slack_url=slack.api_url,
            claude_url=claude.base_url,
            redis_url=redis_url,
            channel_settings_file=str(path),
        )
        try:
            await replica.start()
            before = await _ask(replica, slack, "a long one")
            await slack.wait_for(lambda: "careful" in _text(slack, before))
            path.write_text("defaults: {model: claude-opus-5-5}\n")
            replica.signal(signal.SIGHUP)
            await replica.logged("channel settings reloaded")
            after = await _ask(replica, slack, "a short one")
            await slack.wait_for(lambda: _final(slack, before) and _final(slack, after))
            path.write_text("defaults: {model: [oops\n")
            replica.signal(signal.SIGHUP)
            await replica.logged("channel settings not reloaded")
            kept = await _ask(replica, slack, "still there?")
            await slack.wait_for(lambda: _final(slack, kept))
        finally:
            await replica.close()
    assert [r["model"] for r in claude.requests] == [
        "claude-haiku-5-5",
        "claude-opus-5-5",
        "claude-opus-5-5",
    ]
    assert "claude-haiku-5-5" in _text(slack, before)  # finished with what it started with
    assert "[interrupted" not in _text(slack, before)
    assert "claude-opus-5-5" in _text(slack, after)


async def _ask(replica: Replica, slack: SlackSim, text: str) -> SimMessage:
    asked = slack.post_user_message(CHANNEL, f"<@UBOT> {text}", user=ALICE)
    envelope = mention_envelope(
        team_id=TEAM, channel=CHANNEL, user=ALICE, text=asked.text, ts=asked.ts, bot_user_id="UBOT"
    )
    status, body = await replica.poster.post_event(envelope)
    assert status == 200, body
    return asked


def _text(slack: SlackSim, asked: SimMessage) -> str:
    replies = slack.bot_replies(CHANNEL, asked.ts)
    return replies[-1].visible_text() if replies else ""


def _final(slack: SlackSim, asked: SimMessage) -> bool:
    replies = slack.bot_replies(CHANNEL, asked.ts)
    return (
        bool(replies)
        and not replies[-1].has_button("stop_answer")
        and "Tokens:" in _text(slack, asked)
    )

"""No secret ever reaches a log line or the terminal, whatever fails.

Every error path reachable from outside runs with known secret values configured, every
logger (ours and the libraries') at DEBUG: a bot token Slack does not know, Slack errors,
Claude's 401, Redis unreachable behind a password, forged requests, Socket Mode and
`slackstream check` (its printed checklist is masked like a log line). Each record is
checked twice: as the operator sees it (our formatter, which masks) and as any other handler
would get it (the raw record), so no secret depends on the mask alone where we can help it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bot import cli
from bot.app import SlackStream
from bot.config import ConfigError, Settings, load_settings
from bot.logs import JsonFormatter, Redactor
from bot.serving import connect_socket_mode, start_http
from bot.sim.claude import Script
from bot.sim.events import mention_envelope, sign
from bot.sim.redis import free_port
from bot.sim.slack import SimMessage, SlackSim
from bot.slackapi import SlackFailure
from tests.harness import (
    ALICE,
    CHANNEL,
    SECRET,
    TEAM,
    Harness,
    running_bot,
    settings_for,
    simulators,
)

BOT_TOKEN = "xoxb-4242-4242-leakybottokenvalue"
APP_TOKEN = "xapp-1-A0424242-4242-leakyapptokenvalue"
API_KEY = "sk-ant-api03-leaky-anthropic-key-value"
REDIS_PASSWORD = "redis-pass-do-not-log"
SIGNING_SECRET = SECRET  # the simulators sign with it; it must not show either
SECRETS = (BOT_TOKEN, APP_TOKEN, API_KEY, REDIS_PASSWORD, SIGNING_SECRET)
LOGGERS = (
    "",
    "bot",
    "slack_bolt",
    "slack_sdk",
    "aiohttp",
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.server",
    "aiohttp.web",
    "anthropic",
    "httpx2",
    "httpcore",
    "redis",
    "asyncio",
)


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logs() -> Iterator[_Everything]:
    """Every record of every logger at DEBUG, the levels put back afterwards."""
    handler = _Everything()
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _raw(record: logging.LogRecord) -> str:
    """What any handler could print of a record: message, arguments, extras, exception."""
    parts = [record.getMessage(), repr(record.args)]
    parts += [repr(value) for value in vars(record).values()]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


def _assert_no_secret(
    handler: _Everything, settings: Settings, *texts: str, logged: bool = True
) -> None:
    formatter = JsonFormatter(Redactor(settings.secret_values()))
    own = [r for r in handler.records if not r.name.startswith("bot.sim")]  # not the fakes'
    shown = [formatter.format(r) for r in own]
    raw = [_raw(r) for r in own]
    for secret in SECRETS:
        assert not [line for line in shown if secret in line], secret
        assert not [line for line in raw if secret in line], secret
        assert not [text for text in texts if secret in text], secret
    assert len(own) > 10 or not logged  # the paths did log


def _settings(slack: SlackSim, claude: Any, **overrides: Any) -> Settings:
    return settings_for(
        slack,
        claude,
        slack_bot_token=BOT_TOKEN,
        slack_app_token=APP_TOKEN,
        anthropic_api_key=API_KEY,
        slack_signing_secret=SIGNING_SECRET,
        **overrides,
    )


def test_the_redis_password_is_a_secret_to_mask() -> None:
    for url in (
        f"redis://:{REDIS_PASSWORD}@db:6379/0",
        f"rediss://user:{REDIS_PASSWORD}@db:6380",
        f"redis://db:6379/0?password={REDIS_PASSWORD}",
    ):
        settings = Settings(redis_url=url)
        assert REDIS_PASSWORD in settings.secret_values()
        redact = Redactor(settings.secret_values())
        assert REDIS_PASSWORD not in redact(f"connecting to {url}")


def test_a_short_redis_password_in_a_url_is_masked_by_its_shape() -> None:
    redact = Redactor(Settings(redis_url="redis://:pw@db:6379").secret_values())
    assert redact("error with redis://:pw@db:6379/0") == "error with redis://[redacted]@db:6379/0"


async def test_a_bot_token_slack_does_not_know(logs: _Everything) -> None:
    async with simulators(bot_token="xoxb-the-only-valid-token") as (slack, claude):
        settings = _settings(slack, claude)
        bot = SlackStream(settings)
        with pytest.raises(SlackFailure, match="invalid_auth"):
            await bot.start()  # start-up stops on invalid_auth
        await bot.shutdown()
    _assert_no_secret(logs, settings, logged=False)


async def test_slack_errors_claude_401_and_forged_requests(logs: _Everything) -> None:
    async with simulators(bot_token=BOT_TOKEN) as (slack, claude):
        settings = _settings(slack, claude)
        async with running_bot(slack, claude, **settings.model_dump()) as h:
            claude.enqueue(Script(http_error=(401, "authentication_error")))
            slack.fail_next["conversations.replies"] = ["channel_not_found"]
            rejected = await h.mention("deny me")
            await h.finished(rejected)
            claude.enqueue(Script(text="partial " * 30, drop_after=3))
            slack.fail_next["chat.update"] = ["internal_error", "ratelimited"]
            dropped = await h.mention("and now break")
            await h.finished(dropped)
            await _forge(h)
    assert ":warning:" in rejected_text(slack, rejected)
    _assert_no_secret(logs, settings)


async def test_redis_unreachable_behind_a_password(logs: _Everything) -> None:
    unreachable = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    async with simulators(bot_token=BOT_TOKEN) as (slack, claude):
        settings = _settings(slack, claude, redis_url=unreachable)
        async with running_bot(slack, claude, **settings.model_dump()) as h:
            await _forge(h)  # start-up already met the store down (janitor, cancel signals)
    assert any("Redis unreachable" in str(vars(r).get("error")) for r in logs.records)
    _assert_no_secret(logs, settings)


async def test_socket_mode(logs: _Everything) -> None:
    async with simulators(bot_token=BOT_TOKEN, app_token=APP_TOKEN) as (slack, claude):
        settings = _settings(slack, claude)
        bot = SlackStream(settings)
        runner, _ = await start_http(bot, with_events=False)
        try:
            await bot.start()
            await connect_socket_mode(bot)
            await slack.wait_for(lambda: slack.socket_connections == 1)
            envelope = mention_envelope(
                team_id=TEAM,
                channel=CHANNEL,
                user=ALICE,
                text="<@UBOT> over the socket",
                ts="1700000000.000100",
                bot_user_id="UBOT",
            )
            acked = await slack.push_socket(envelope)
            await slack.wait_for(lambda: acked in slack.socket_acks)
        finally:
            await bot.shutdown()
            await runner.cleanup()
    _assert_no_secret(logs, settings)


async def _forge(h: Harness) -> None:
    """Forged, stale and mistyped requests: each is refused with a log line."""
    envelope = mention_envelope(
        team_id=TEAM,
        channel=CHANNEL,
        user=ALICE,
        text="<@UBOT> forged",
        ts="1700000000.000100",
        bot_user_id="UBOT",
    )
    forged, _ = await h.poster.post_event(envelope, secret="not-the-secret")
    stale, _ = await h.poster.post_event(envelope, timestamp=int(time.time()) - 3600)
    body = json.dumps(envelope).encode()
    mistyped = {**sign(body, SIGNING_SECRET, int(time.time())), "Content-Type": "text/html"}
    wrong_type, _ = await h.poster.post_raw(body, mistyped)
    assert (forged, stale, wrong_type) == (401, 401, 415)


def rejected_text(slack: SlackSim, asked: SimMessage) -> str:
    return slack.bot_replies(CHANNEL, asked.ts)[-1].visible_text()


async def test_slackstream_check_prints_no_secret(
    logs: _Everything, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    unreachable = f"redis://user:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    handlers = logging.getLogger().handlers[:]
    async with simulators(bot_token="xoxb-the-only-valid-token") as (slack, claude):
        settings = _settings(slack, claude, redis_url=unreachable)
        for name, value in settings.model_dump().items():
            if value is not None and not isinstance(value, (frozenset, tuple)):
                plain = getattr(value, "get_secret_value", lambda v=value: v)()
                monkeypatch.setenv(name.upper(), str(plain))
        try:  # `check` runs its own event loop: in a thread, while the simulators serve here
            code = await asyncio.to_thread(cli.main, ["check"])
        finally:
            logging.getLogger().handlers[:] = handlers
    out, err = capfd.readouterr()
    assert code == 1
    assert "Slack answered invalid_auth" in out and "[FAIL] Redis: Redis unreachable" in out
    # `check` routes every logger to stderr through its own handler: `err` holds its lines.
    _assert_no_secret(logs, settings, out, err, logged=False)


def test_a_pasted_secret_is_masked_in_what_the_operator_sees() -> None:
    """A person may paste a key into a question, and the SDKs log request bodies at DEBUG: the
    formatter masks configured values and anything shaped like a Slack or Anthropic key."""
    settings = Settings(anthropic_api_key=API_KEY, slack_signing_secret=SIGNING_SECRET)
    record = logging.makeLogRecord(
        {"msg": "Request options: %s", "args": ({"content": f"{API_KEY} {SIGNING_SECRET}"},)}
    )
    line = JsonFormatter(Redactor(settings.secret_values())).format(record)
    assert API_KEY not in line and SIGNING_SECRET not in line


def test_a_redis_url_that_cannot_work_is_one_line_without_its_password() -> None:
    for url in (
        f"redis://:{REDIS_PASSWORD}@db:notaport/0",
        f"redis://:{REDIS_PASSWORD}@db:99999/0",
    ):
        with pytest.raises(ConfigError) as error:
            load_settings(redis_url=url)
        assert "REDIS_URL" in str(error.value) and REDIS_PASSWORD not in str(error.value)

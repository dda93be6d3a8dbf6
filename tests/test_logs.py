"""Logs: one JSON event per line with a correlation id per answer; no secret is ever printed."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bot.logs import MASK, JsonFormatter, Redactor, TextFormatter, configure_logging
from bot.sim.claude import Script
from tests.harness import SECRET, running_bot, simulators

SECRETS = {
    "slack_bot_token": "xoxb-1111-2222-secretbottoken",
    "slack_signing_secret": SECRET,
    "anthropic_api_key": "sk-ant-api03-secretkey-do-not-print",
}


@pytest.fixture
def captured() -> io.StringIO:
    stream = io.StringIO()
    yield stream
    logging.getLogger().handlers.clear()


def _route_logs_to(stream: io.StringIO, fmt: str) -> None:
    configure_logging("DEBUG", fmt, SECRETS.values())
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)


async def test_a_whole_answer_logs_json_lines_with_answer_id_and_no_secret(
    captured: io.StringIO,
) -> None:
    _route_logs_to(captured, "json")
    async with simulators(bot_token=SECRETS["slack_bot_token"]) as (slack, claude):
        claude.enqueue(Script(text="partial " * 20, drop_after=3))
        async with running_bot(
            slack,
            claude,
            slack_bot_token=SECRETS["slack_bot_token"],
            anthropic_api_key=SECRETS["anthropic_api_key"],
        ) as h:
            asked = await h.mention(f"my key is {SECRETS['anthropic_api_key']} oops")
            await h.finished(asked)
    lines = [line for line in captured.getvalue().splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is one JSON event
    for secret in SECRETS.values():
        assert secret not in captured.getvalue()
    stream_failure = [e for e in events if e["event"] == "claude stream failed"]
    assert stream_failure and stream_failure[0]["answer_id"].endswith(asked.ts)
    finished = [e for e in events if e["event"] == "answer finished"]
    assert finished and finished[0]["answer_id"] == stream_failure[0]["answer_id"]


def test_redaction_masks_configured_values_and_key_shapes() -> None:
    redact = Redactor(["s3cr3t-value"])
    line = redact("token xoxb-123-456-abcdef and xapp-1-A0-123-abc, sk-ant-abc123456, s3cr3t-value")
    assert "xoxb-" not in line and "xapp-" not in line and "sk-ant-" not in line
    assert "s3cr3t-value" not in line
    assert line.count(MASK) == 4


@pytest.mark.parametrize("formatter_cls", [JsonFormatter, TextFormatter])
def test_exceptions_and_extras_are_redacted_too(formatter_cls: type[logging.Formatter]) -> None:
    formatter = formatter_cls(Redactor(["hunter2-secret"]))  # type: ignore[call-arg]
    try:
        raise RuntimeError("failed with hunter2-secret")
    except RuntimeError:
        record = logging.getLogger("t").makeRecord(
            "t",
            logging.ERROR,
            __file__,
            1,
            "boom %s",
            ("hunter2-secret",),
            None,
            extra={"header": "Bearer hunter2-secret"},
        )
        import sys

        record.exc_info = sys.exc_info()
    out = formatter.format(record)
    assert "hunter2-secret" not in out
    assert MASK in out

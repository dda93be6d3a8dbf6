"""Hostile requests to POST /slack/events: every malformed one gets a 4xx, none a traceback, and
nothing unauthenticated reaches Slack or Claude."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from bot import slack_http
from bot.render import STOP_ACTION_ID
from bot.sim.events import block_action_payload, mention_envelope, sign
from tests.harness import ALICE, CHANNEL, SECRET, TEAM, Harness, running_bot, simulators

NOW = 1_700_000_000
BODY = b'{"type": "event_callback"}'


def _signed(body: bytes = BODY, *, at: int = NOW, secret: str = SECRET) -> dict[str, str]:
    return sign(body, secret, at)


# -- authenticate: the signature, before anything reads the body ---------------------------------


def _headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


GOOD = _signed()
TS, SIG = GOOD["X-Slack-Request-Timestamp"], GOOD["X-Slack-Signature"]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (_headers(("X-Slack-Signature", SIG)), "signature headers missing"),
        (_headers(("X-Slack-Request-Timestamp", TS)), "signature headers missing"),
        (
            _headers(
                ("X-Slack-Request-Timestamp", TS),
                ("X-Slack-Request-Timestamp", TS),
                ("X-Slack-Signature", SIG),
            ),
            "signature headers repeated",
        ),
        (
            _headers(
                ("X-Slack-Request-Timestamp", TS),
                ("X-Slack-Signature", SIG),
                ("x-slack-signature", SIG),
            ),
            "signature headers repeated",
        ),
        (_headers(("X-Slack-Request-Timestamp", "soon"), ("X-Slack-Signature", SIG)), "malformed"),
        (_headers(("X-Slack-Request-Timestamp", "-1"), ("X-Slack-Signature", SIG)), "malformed"),
        (_headers(("X-Slack-Request-Timestamp", "1e9"), ("X-Slack-Signature", SIG)), "malformed"),
        (_headers(("X-Slack-Request-Timestamp", "١٢٣"), ("X-Slack-Signature", SIG)), "malformed"),
        (
            _headers(("X-Slack-Request-Timestamp", "9" * 40), ("X-Slack-Signature", SIG)),
            "malformed",
        ),
        (
            _headers(("X-Slack-Request-Timestamp", str(NOW - 301)), ("X-Slack-Signature", SIG)),
            "stale",
        ),
        (
            _headers(("X-Slack-Request-Timestamp", str(NOW + 301)), ("X-Slack-Signature", SIG)),
            "future",
        ),
        (_headers(("X-Slack-Request-Timestamp", TS), ("X-Slack-Signature", SIG[:-1])), "malformed"),
        (
            _headers(("X-Slack-Request-Timestamp", TS), ("X-Slack-Signature", SIG + "0")),
            "malformed",
        ),
        (
            _headers(("X-Slack-Request-Timestamp", TS), ("X-Slack-Signature", SIG[:-1] + "é")),
            "malformed",
        ),
        (
            _headers(("X-Slack-Request-Timestamp", TS), ("X-Slack-Signature", SIG[:-1] + "g")),
            "malformed",
        ),
        (
            _headers(("X-Slack-Request-Timestamp", TS), ("X-Slack-Signature", "v1" + SIG[2:])),
            "malformed",
        ),
        (
            _headers(("X-Slack-Request-Timestamp", TS), ("X-Slack-Signature", SIG.upper())),
            "malformed",
        ),
        (
            _headers(
                ("X-Slack-Request-Timestamp", TS),
                ("X-Slack-Signature", _signed(secret="other")["X-Slack-Signature"]),
            ),
            "mismatch",
        ),
        (
            _headers(
                ("X-Slack-Request-Timestamp", str(NOW + 1)),
                ("X-Slack-Signature", SIG),
            ),
            "mismatch",  # the timestamp is signed too
        ),
    ],
)
def test_anything_but_a_current_slack_signature_is_refused(
    headers: CIMultiDict[str], reason: str
) -> None:
    refusal = slack_http.authenticate(headers, BODY, SECRET, now=NOW)
    assert refusal is not None and refusal.status == 401
    assert reason in refusal.reason


def test_a_current_slack_signature_is_accepted_and_covers_the_body() -> None:
    headers = CIMultiDict(GOOD)
    assert slack_http.authenticate(headers, BODY, SECRET, now=NOW) is None
    assert slack_http.authenticate(headers, BODY, SECRET, now=NOW + 300) is None
    assert slack_http.authenticate(headers, BODY, SECRET, now=NOW - 300) is None
    tampered = slack_http.authenticate(headers, BODY + b" ", SECRET, now=NOW)
    assert tampered is not None and tampered.reason == "signature mismatch"


def test_without_a_signing_secret_nothing_is_accepted() -> None:
    """An empty key is a key anyone has: nothing it signs counts."""
    headers = CIMultiDict(_signed(secret=""))
    for secret in (None, ""):
        refusal = slack_http.authenticate(headers, BODY, secret, now=NOW)
        assert refusal is not None and refusal.status == 401


# -- read_body: what a signed body must be -------------------------------------------------------


def _form(payload: Any) -> bytes:
    return urlencode(
        {"payload": payload if isinstance(payload, str) else json.dumps(payload)}
    ).encode()


def _stop(**changes: Any) -> dict[str, Any]:
    payload = block_action_payload(
        team_id=TEAM,
        user=ALICE,
        channel=CHANNEL,
        message_ts="1700000000.000200",
        action_id=STOP_ACTION_ID,
        value="answer-1",
    )
    payload.update(changes)
    return payload


def _mention(**event_changes: Any) -> dict[str, Any]:
    envelope = mention_envelope(
        team_id=TEAM,
        channel=CHANNEL,
        user=ALICE,
        text="<@UBOT> hi",
        ts="1700000000.000100",
        bot_user_id="UBOT",
    )
    envelope["event"].update(event_changes)
    return envelope


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"\xff\xfe", JSON, 400),
        (b"", JSON, 400),
        (b"{not json", JSON, 400),
        (b"[1, 2]", JSON, 400),
        (b'"text"', JSON, 400),
        (b'{"no_type": true}', JSON, 400),
        (b'{"type": "block_actions"}', JSON, 400),
        (b"[" * 100_000 + b"]" * 100_000, JSON, 400),
        (b'{"type": "url_verification", "challenge": 5}', JSON, 400),
        (b'{"type": "event_callback", "event": "x"}', JSON, 400),
        (b'{"type": "event_callback", "event": {"type": 5}}', JSON, 400),
        (json.dumps(_mention(ts="yesterday")).encode(), JSON, 400),
        (json.dumps(_mention(user=["U1"])).encode(), JSON, 400),
        (json.dumps(_mention(text={"a": 1})).encode(), JSON, 400),
        (json.dumps({**_mention(), "authorizations": "all"}).encode(), JSON, 400),
        (json.dumps({**_mention(), "authorizations": [{"team": 5}]}).encode(), JSON, 400),
        (json.dumps({**_mention(), "enterprise": 5}).encode(), JSON, 400),
        (json.dumps({**_mention(), "team": {"id": []}}).encode(), JSON, 400),
        (
            b'{"type": "event_callback", "event": {"type": "app_mention", "text": "\\ud800"}}',
            JSON,
            400,
        ),
        (BODY, "text/plain", 415),
        (BODY, "application/octet-stream", 415),
        (b"payload=%7B", FORM, 400),
        (_form("not json"), FORM, 400),
        (_form([1, 2]), FORM, 400),
        (_form({"no": "type"}), FORM, 400),
        (b"payload=", FORM, 400),
        (b"command=%2Fask&text=hi", FORM, 400),
        (_form(_stop()) + b"&" + _form(_stop()), FORM, 400),
        (b"a&&b", FORM, 400),
        (b"{" + _form(_stop()), FORM, 400),
        (_form(_stop(actions="stop")), FORM, 200),  # not a button the bot knows: dropped
        (_form(_stop(user="U1")), FORM, 400),
        (_form(_stop(channel=7)), FORM, 400),
        (_form(_stop(response_urls=["https://x"])), FORM, 400),
        (_form(_stop(actions=[{"action_id": STOP_ACTION_ID, "value": 5}])), FORM, 400),
    ],
)
def test_a_signed_body_must_be_what_the_bot_can_read(
    body: bytes, content_type: str, status: int
) -> None:
    checked = slack_http.read_body(body, content_type)
    if status == 200:
        assert isinstance(checked, slack_http.Accepted) and not checked.dispatch
    else:
        assert isinstance(checked, slack_http.Refusal) and checked.status == status, checked


@pytest.mark.parametrize(
    ("body", "content_type", "dispatch"),
    [
        (json.dumps(_mention()).encode(), JSON, True),
        (json.dumps({"type": "url_verification", "challenge": "c"}).encode(), JSON, True),
        (json.dumps({"type": "app_rate_limited", "team_id": TEAM}).encode(), JSON, False),
        (_form(_stop()), FORM, True),
        (_form(_stop(actions=[{"action_id": "other", "value": "x"}])), FORM, False),
        (_form({"type": "view_submission", "view": {}}), FORM, False),
        (_form({"type": "shortcut", "callback_id": "x"}), FORM, False),
    ],
)
def test_what_slack_sends_is_accepted(body: bytes, content_type: str, dispatch: bool) -> None:
    checked = slack_http.read_body(body, content_type)
    assert isinstance(checked, slack_http.Accepted), checked
    assert checked.dispatch is dispatch
    assert checked.content_type == content_type


# -- over HTTP ----------------------------------------------------------------------------------


class _Records(logging.Handler):
    """Every log record of every logger, for the no-traceback check."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def tracebacks(self) -> list[str]:
        return [
            f"{r.name}: {r.getMessage()}"
            for r in self.records
            if r.levelno >= logging.ERROR or r.exc_info
        ]


@pytest.fixture
def records() -> Iterator[_Records]:
    handler = _Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    """A bot that answers nobody (its allowlist names no channel), so a signed request may reach
    Bolt and the listeners but never starts an answer that would outlive its example."""
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude, allowed_channels=frozenset({"C0NOWHERE"})) as bot:
            yield bot


async def _post(h: Harness, body: bytes, headers: CIMultiDict[str] | dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{h.url}/slack/events", data=body, headers=headers) as response:
            await response.read()
            return response.status


def _calls(h: Harness) -> tuple[int, int]:
    return len(h.slack.calls), len(h.claude.requests)


async def test_bad_headers_get_401_without_a_traceback(h: Harness, records: _Records) -> None:
    """A non-numeric timestamp or a non-ASCII signature used to raise inside slack-sdk: 500."""
    before = _calls(h)
    now = str(int(time.time()))
    sig = sign(BODY, SECRET, int(now))["X-Slack-Signature"]
    cases = [
        {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": sig},
        {"X-Slack-Request-Timestamp": now, "X-Slack-Signature": "v0=" + "é" * 64},
        {"X-Slack-Request-Timestamp": now, "X-Slack-Signature": sig[:-2]},
        {"X-Slack-Request-Timestamp": str(int(now) + 3600), "X-Slack-Signature": sig},
        {},
    ]
    statuses = [await _post(h, BODY, {**case, "Content-Type": JSON}) for case in cases]
    duplicated = CIMultiDict(
        [
            ("X-Slack-Request-Timestamp", now),
            ("X-Slack-Request-Timestamp", now),
            ("X-Slack-Signature", sig),
            ("Content-Type", JSON),
        ]
    )
    statuses.append(await _post(h, BODY, duplicated))
    assert statuses == [401] * 6
    assert _calls(h) == before
    assert records.tracebacks() == []


async def test_an_unknown_interaction_is_acknowledged_and_nothing_is_called(
    h: Harness, records: _Records
) -> None:
    before = _calls(h)
    unknown = _stop(actions=[{"action_id": "approve_refund", "value": "x"}])
    status, _ = await h.poster.post_action(unknown)
    shortcut, _ = await h.poster.post_action({"type": "shortcut", "callback_id": "x"})
    assert (status, shortcut) == (200, 200)
    assert _calls(h) == before
    assert records.tracebacks() == []


async def test_malformed_signed_interactions_get_400(h: Harness, records: _Records) -> None:
    bodies = [b"payload=not%20json", b"payload=%5B1%5D", _form(_stop(user="U1")), b""]
    statuses = []
    for body in bodies:
        headers = {**sign(body, SECRET, int(time.time())), "Content-Type": FORM}
        statuses.append(await _post(h, body, headers))
    assert statuses == [400] * len(bodies)
    assert records.tracebacks() == []


# -- fuzz ---------------------------------------------------------------------------------------

HEADER_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=70
)
CONTENT_TYPES = st.one_of(
    st.sampled_from([JSON, FORM, "text/plain", "application/json; charset=utf-8", ""]),
    HEADER_TEXT,
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["type", "event", "team", "user", "channel", "authorizations", "actions", "ts", "text"]
)


@st.composite
def _envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """Slack's own shapes with some fields replaced by anything JSON can hold."""
    base = draw(
        st.sampled_from(
            [
                _mention,
                _stop,
                lambda: {"type": "url_verification", "challenge": "c"},
                lambda: {"type": "app_rate_limited"},
            ]
        )
    )()
    for field in draw(st.lists(FIELDS, max_size=3)):
        event = base.get("event")
        target = event if isinstance(event, dict) and draw(st.booleans()) else base
        target[field] = draw(JSON_VALUES)
    return base


@st.composite
def _bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    content_type = draw(CONTENT_TYPES)
    kind = draw(st.sampled_from(["bytes", "json", "envelope", "form"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200)), content_type
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode(), content_type
    envelope = draw(_envelopes())
    if kind == "form" or draw(st.booleans()):
        return _form(envelope), draw(st.sampled_from([FORM, content_type]))
    return json.dumps(envelope).encode(), draw(st.sampled_from([JSON, content_type]))


EXTRA_HEADERS = st.lists(
    st.tuples(
        st.sampled_from(
            ["X-Slack-Request-Timestamp", "X-Slack-Signature", "X-Slack-Retry-Num", "X-Other"]
        ),
        HEADER_TEXT,
    ),
    max_size=3,
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(
    body=_bodies(),
    timestamp=st.one_of(st.none(), st.integers(-(10**13), 10**13).map(str), HEADER_TEXT),
    signature=st.one_of(
        st.none(),
        HEADER_TEXT,
        st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda hex_: "v0=" + hex_),
    ),
    extra=EXTRA_HEADERS,
)
async def test_fuzz_unauthenticated_requests_are_refused_and_reach_nothing(
    h: Harness,
    records: _Records,
    body: tuple[bytes, str],
    timestamp: str | None,
    signature: str | None,
    extra: list[tuple[str, str]],
) -> None:
    raw, content_type = body
    headers: CIMultiDict[str] = CIMultiDict([("Content-Type", content_type), *extra])
    for name, value in (("X-Slack-Request-Timestamp", timestamp), ("X-Slack-Signature", signature)):
        if value is not None:
            headers.add(name, value)
    before = _calls(h)
    status = await _post(h, raw, headers)
    assert status == 401
    assert _calls(h) == before
    assert records.tracebacks() == []


@FUZZ
@given(body=_bodies(), extra=EXTRA_HEADERS, skew=st.integers(-290, 290))
async def test_fuzz_signed_requests_never_get_a_500_or_a_traceback(
    h: Harness,
    records: _Records,
    body: tuple[bytes, str],
    extra: list[tuple[str, str]],
    skew: int,
) -> None:
    raw, content_type = body
    signed = sign(raw, SECRET, int(time.time()) + skew)
    extra = [(name, value) for name, value in extra if name != "X-Slack-Request-Timestamp"]
    headers = CIMultiDict([("Content-Type", content_type), *signed.items(), *extra])
    status = await _post(h, raw, headers)
    assert status < 500
    duplicated = any(name.lower() == "x-slack-signature" for name, _ in extra)
    assert status != 401 or duplicated
    assert h.claude.requests == []  # the allowlist keeps every event from becoming an answer
    assert records.tracebacks() == []

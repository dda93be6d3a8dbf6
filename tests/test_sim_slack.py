"""The simulated Slack Web API, driven by the real slack-sdk client over HTTP.

These tests double as the reference for how Slack behaves in our other tests.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.sim.events import (
    EventPoster,
    block_action_payload,
    dm_envelope,
    mention_envelope,
    sign,
)
from bot.sim.slack import SimMessage, SlackSim


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[SlackSim]:
    async with SlackSim(clock=clock) as s:
        s.add_channel("C1")
        s.add_channel("COUT", members=False)
        s.add_channel("D1", is_im=True)
        s.add_user("U1", "alice", real_name="Alice Liddell")
        yield s


@pytest.fixture
def client(sim: SlackSim) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-sim", base_url=sim.api_url)


async def error_of(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        await call
    return caught.value


# --- auth ------------------------------------------------------------------------------------


async def test_auth_test_identifies_the_bot_and_its_scopes(client: AsyncWebClient) -> None:
    response = await client.auth_test()
    assert (response["team_id"], response["user_id"], response["bot_id"]) == (
        "T0001",
        "UBOT",
        "BBOT",
    )
    assert "chat:write" in response.headers["x-oauth-scopes"].split(",")


async def test_bad_or_missing_token_is_refused(sim: SlackSim) -> None:
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=sim.api_url)
    assert (await error_of(wrong.chat_postMessage(channel="C1", text="x"))).response[
        "error"
    ] == "invalid_auth"
    missing = AsyncWebClient(base_url=sim.api_url)
    assert (await error_of(missing.auth_test())).response["error"] == "not_authed"
    assert sim.calls[-1].team_id == "" and not sim.calls[-1].ok


async def test_token_in_a_form_field_and_blocks_as_json_text(sim: SlackSim) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    form = {"token": "xoxb-sim", "channel": "C1", "text": "hi", "blocks": json.dumps(blocks)}
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.api_url + "chat.postMessage", data=form) as response,
    ):
        body = await response.json()
    assert body["ok"] is True
    assert sim.message("C1", body["ts"]).blocks == blocks
    assert "token" not in sim.calls[-1].params


async def test_unknown_method_is_404(client: AsyncWebClient) -> None:
    error = await error_of(client.api_call("chat.teleport"))
    assert (error.response.status_code, error.response["error"]) == (404, "unknown_method")


# --- posting and reading threads -------------------------------------------------------------


async def test_bot_reply_lands_in_the_thread(sim: SlackSim, client: AsyncWebClient) -> None:
    question = sim.post_user_message("C1", "<@UBOT> why?", user="U1")
    response = await client.chat_postMessage(channel="C1", thread_ts=question.ts, text="Thinking…")
    assert response["message"]["bot_id"] == "BBOT"
    assert response["message"]["thread_ts"] == question.ts
    assert [m.ts for m in sim.thread("C1", question.ts)] == [question.ts, response["ts"]]
    (reply,) = sim.bot_replies("C1", question.ts)
    assert reply.visible_text() == "Thinking…" and reply.user == "UBOT"


async def test_reply_to_a_reply_joins_the_parent_thread(sim: SlackSim) -> None:
    parent = sim.post_user_message("C1", "first", user="U1")
    reply = sim.post_user_message("C1", "second", user="U1", thread_ts=parent.ts)
    nested = sim.post_user_message("C1", "third", user="U1", thread_ts=reply.ts)
    assert nested.thread_ts == parent.ts == parent.thread_ts


async def test_timestamps_are_unique_and_increasing(sim: SlackSim) -> None:
    stamps = [sim.post_user_message("C1", str(i), user="U1").ts for i in range(12)]
    assert len(set(stamps)) == 12
    assert stamps == sorted(stamps, key=float)


async def test_replies_paginate_with_a_cursor(sim: SlackSim, client: AsyncWebClient) -> None:
    parent = sim.post_user_message("C1", "q", user="U1")
    for i in range(4):
        await client.chat_postMessage(channel="C1", thread_ts=parent.ts, text=f"part {i}")
    first = await client.conversations_replies(channel="C1", ts=parent.ts, limit=2)
    assert [m["text"] for m in first["messages"]] == ["q", "part 0"]
    assert first["has_more"] is True
    second = await client.conversations_replies(
        channel="C1", ts=parent.ts, limit=2, cursor=first["response_metadata"]["next_cursor"]
    )
    assert [m["text"] for m in second["messages"]] == ["part 1", "part 2"]
    # slack-sdk's own paginator follows response_metadata.next_cursor to the end.
    pages = [page["messages"] async for page in first]
    assert [m["text"] for page in pages for m in page] == [
        "q",
        "part 0",
        "part 1",
        "part 2",
        "part 3",
    ]


async def test_replies_respect_oldest_and_inclusive(sim: SlackSim, client: AsyncWebClient) -> None:
    parent = sim.post_user_message("C1", "q", user="U1")
    a = sim.post_user_message("C1", "a", user="U1", thread_ts=parent.ts)
    sim.post_user_message("C1", "b", user="U1", thread_ts=parent.ts)
    after = await client.conversations_replies(channel="C1", ts=parent.ts, oldest=a.ts)
    assert [m["text"] for m in after["messages"]] == ["b"]
    incl = await client.conversations_replies(
        channel="C1", ts=parent.ts, oldest=a.ts, inclusive=True
    )
    assert [m["text"] for m in incl["messages"]] == ["a", "b"]


async def test_replies_errors(sim: SlackSim, client: AsyncWebClient) -> None:
    parent = sim.post_user_message("C1", "q", user="U1")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"channel": "C1", "ts": "1.000001"}, "thread_not_found"),
        ({"channel": "CNOPE", "ts": parent.ts}, "channel_not_found"),
        ({"channel": "C1", "ts": parent.ts, "cursor": "garbage!"}, "invalid_cursor"),
    ]
    for args, expected in cases:
        assert (await error_of(client.conversations_replies(**args))).response["error"] == expected


async def test_markdown_text_reads_back_as_a_markdown_block(
    sim: SlackSim, client: AsyncWebClient
) -> None:
    parent = sim.post_user_message("D1", "hi", user="U1")
    await client.chat_postMessage(channel="D1", thread_ts=parent.ts, markdown_text="**bold**")
    replies = await client.conversations_replies(channel="D1", ts=parent.ts)
    answer = replies["messages"][1]
    assert answer["blocks"] == [{"type": "markdown", "text": "**bold**"}]
    assert answer["text"] == "**bold**"


# --- what may be posted ----------------------------------------------------------------------


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def markdown(text: str) -> dict[str, Any]:
    return {"type": "markdown", "text": text}


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"text": "x" * 4001}, "msg_too_long"),
        ({"markdown_text": "x" * 12001}, "msg_too_long"),
        ({"markdown_text": "hi", "text": "hi"}, "markdown_text_conflict"),
        ({"markdown_text": "hi", "blocks": [markdown("hi")]}, "markdown_text_conflict"),
        ({}, "no_text"),
        ({"blocks": [section("x" * 3001)]}, "invalid_blocks"),
        ({"blocks": [{"type": "sparkle"}]}, "invalid_blocks"),
        ({"blocks": [section("x")] * 51}, "invalid_blocks"),
        ({"blocks": [markdown("x" * 6001), markdown("x" * 6000)]}, "msg_blocks_too_long"),
        ({"blocks": [section("x" * 2900)] * 5}, "msg_blocks_too_long"),
        ({"blocks": "not json"}, "invalid_blocks_format"),
    ],
)
async def test_payload_limits(client: AsyncWebClient, args: dict[str, Any], expected: str) -> None:
    error = await error_of(client.chat_postMessage(channel="C1", **args))
    assert (error.response.status_code, error.response["error"]) == (200, expected)


async def test_payloads_at_the_limits_are_accepted(client: AsyncWebClient) -> None:
    await client.chat_postMessage(channel="C1", text="x" * 4000)
    await client.chat_postMessage(channel="C1", markdown_text="x" * 12000)
    await client.chat_postMessage(channel="C1", blocks=[markdown("x" * 6000)] * 2, text="x")
    await client.chat_postMessage(channel="C1", blocks=[section("x")] * 50, text="x")


async def test_channel_errors(client: AsyncWebClient) -> None:
    assert (await error_of(client.chat_postMessage(channel="COUT", text="x"))).response[
        "error"
    ] == "not_in_channel"
    assert (await error_of(client.chat_postMessage(channel="CNOPE", text="x"))).response[
        "error"
    ] == "channel_not_found"


# --- editing and deleting --------------------------------------------------------------------


async def test_update_replaces_passed_fields_and_keeps_history(
    sim: SlackSim, client: AsyncWebClient, clock: FakeClock
) -> None:
    stop = {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "action_id": "stop_answer",
                "text": {"type": "plain_text", "text": "Stop"},
            }
        ],
    }
    posted = await client.chat_postMessage(
        channel="C1", text="Thinking…", blocks=[section("Thinking…"), stop]
    )
    ts = posted["ts"]
    assert sim.message("C1", ts).has_button("stop_answer")
    clock.now += 1
    await client.chat_update(channel="C1", ts=ts, text="Hello")
    message = sim.message("C1", ts)
    assert message.edited and message.text == "Hello" and message.has_button("stop_answer")
    await client.chat_update(
        channel="C1", ts=ts, text="Hello world", blocks=[section("Hello world")]
    )
    assert not message.has_button("stop_answer")
    assert message.visible_text() == "Hello world"
    await client.chat_update(channel="C1", ts=ts, text="Hello world", blocks=[])
    assert message.blocks == [] and message.visible_text() == "Hello world"
    await client.chat_update(channel="C1", ts=ts, markdown_text="**Done**")
    assert (message.text, message.blocks, message.visible_text()) == ("", [], "**Done**")
    assert [h["text"] for h in message.history] == [
        "Thinking…",
        "Hello",
        "Hello world",
        "Hello world",
        "",
    ]
    assert [h["at"] for h in message.history[:2]] == [1000.0, 1001.0]


async def test_update_refusals(sim: SlackSim, client: AsyncWebClient) -> None:
    human = sim.post_user_message("C1", "mine", user="U1")
    posted = await client.chat_postMessage(channel="C1", text="ok")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ts": human.ts, "text": "x"}, "cant_update_message"),
        ({"ts": "1.000001", "text": "x"}, "message_not_found"),
        ({"ts": posted["ts"], "text": "x" * 4001}, "msg_too_long"),
        ({"ts": posted["ts"], "text": "x", "markdown_text": "y"}, "markdown_text_conflict"),
    ]
    for args, expected in cases:
        assert (await error_of(client.chat_update(channel="C1", **args))).response[
            "error"
        ] == expected
    assert sim.message("C1", posted["ts"]).text == "ok"


async def test_delete_and_change_callbacks(sim: SlackSim, client: AsyncWebClient) -> None:
    seen: list[tuple[str, str]] = []
    sim.on_change.append(lambda kind, message: seen.append((kind, message.text)))
    human = sim.post_user_message("C1", "hello", user="U1")
    posted = await client.chat_postMessage(channel="C1", text="a")
    await client.chat_update(channel="C1", ts=posted["ts"], text="b")
    await client.chat_delete(channel="C1", ts=posted["ts"])
    assert seen == [("posted", "hello"), ("posted", "a"), ("updated", "b"), ("deleted", "b")]
    with pytest.raises(KeyError):
        sim.message("C1", posted["ts"])
    assert (await error_of(client.chat_delete(channel="C1", ts=human.ts))).response[
        "error"
    ] == "cant_delete_message"


# --- rate limits and injected failures -------------------------------------------------------


async def test_rate_limit_answers_429_until_the_bucket_refills(
    sim: SlackSim, client: AsyncWebClient, clock: FakeClock
) -> None:
    posted = await client.chat_postMessage(channel="C1", text="0")
    sim.set_rate_limit("chat.update", per_minute=6, burst=2)
    for text in ("1", "2"):
        await client.chat_update(channel="C1", ts=posted["ts"], text=text)
    error = await error_of(client.chat_update(channel="C1", ts=posted["ts"], text="3"))
    assert error.response.status_code == 429
    assert error.response["error"] == "ratelimited"
    assert error.response.headers["Retry-After"] == "10"
    clock.now += 4
    error = await error_of(client.chat_update(channel="C1", ts=posted["ts"], text="3"))
    assert error.response.headers["Retry-After"] == "6"
    clock.now += 6
    await client.chat_update(channel="C1", ts=posted["ts"], text="3")
    assert [(c.status, c.error) for c in sim.calls_to("chat.update")] == [
        (200, None),
        (200, None),
        (429, "ratelimited"),
        (429, "ratelimited"),
        (200, None),
    ]
    assert sim.message("C1", posted["ts"]).text == "3"
    await client.chat_postMessage(channel="C1", text="other methods are not limited")


async def test_rate_limits_from_the_constructor(clock: FakeClock) -> None:
    async with SlackSim(clock=clock, rate_limits={"auth.test": (60, 1)}) as sim:
        client = AsyncWebClient(token="xoxb-sim", base_url=sim.api_url)
        await client.auth_test()
        error = await error_of(client.auth_test())
        assert error.response.headers["Retry-After"] == "1"


async def test_fail_next_injects_errors_in_order(sim: SlackSim, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C1", text="0")
    sim.fail_next["chat.update"] = ["ratelimited", "msg_too_long", "http_500"]
    limited = await error_of(client.chat_update(channel="C1", ts=posted["ts"], text="1"))
    assert (limited.response.status_code, limited.response.headers["Retry-After"]) == (429, "1")
    too_long = await error_of(client.chat_update(channel="C1", ts=posted["ts"], text="1"))
    assert too_long.response["error"] == "msg_too_long"
    broken = await error_of(client.chat_update(channel="C1", ts=posted["ts"], text="1"))
    assert broken.response.status_code == 500
    await client.chat_update(channel="C1", ts=posted["ts"], text="1")
    assert [c.error for c in sim.calls_to("chat.update")] == [
        "ratelimited",
        "msg_too_long",
        "http_500",
        None,
    ]
    assert sim.message("C1", posted["ts"]).history[-1]["text"] == "1"
    assert len(sim.message("C1", posted["ts"]).history) == 2


async def test_calls_are_recorded(sim: SlackSim, client: AsyncWebClient, clock: FakeClock) -> None:
    clock.now = 1234.5
    await client.chat_postMessage(channel="C1", text="hi", thread_ts="1700000000.000100")
    (call,) = sim.calls_to("chat.postMessage")
    assert call.params == {"channel": "C1", "text": "hi", "thread_ts": "1700000000.000100"}
    assert (call.at, call.status, call.ok, call.team_id) == (1234.5, 200, True, "T0001")


async def test_latency_delays_every_answer(sim: SlackSim, client: AsyncWebClient) -> None:
    sim.set_latency(0.05)
    started = time.monotonic()
    await client.auth_test()
    assert time.monotonic() - started >= 0.05


# --- other methods ---------------------------------------------------------------------------


async def test_people_and_bots(sim: SlackSim, client: AsyncWebClient) -> None:
    alice = (await client.users_info(user="U1"))["user"]
    assert (alice["name"], alice["real_name"], alice["profile"]["display_name"]) == (
        "alice",
        "Alice Liddell",
        "alice",
    )
    assert not alice["is_bot"] and not alice["is_admin"] and not alice["is_owner"]
    assert (await client.users_info(user="UBOT"))["user"]["is_bot"]
    assert (await error_of(client.users_info(user="UNOPE"))).response["error"] == "user_not_found"
    sim.post_user_message("C1", "beep", user="UOTHER", bot_id="BOTHER")
    assert (await client.bots_info(bot="BOTHER"))["bot"]["user_id"] == "UOTHER"
    assert (await client.bots_info(bot="BBOT"))["bot"]["user_id"] == "UBOT"
    assert (await error_of(client.bots_info(bot="BNOPE"))).response["error"] == "bot_not_found"


async def test_status_ephemeral_and_socket_mode(sim: SlackSim, client: AsyncWebClient) -> None:
    await client.assistant_threads_setStatus(
        channel_id="C1", thread_ts="1.000100", status="is thinking…"
    )
    assert sim.statuses == [("C1", "1.000100", "is thinking…")]
    sent = await client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    assert sim.ephemerals[0]["message_ts"] == sent["message_ts"]
    assert sim.ephemerals[0]["text"] == "only you"
    assert (await error_of(client.apps_connections_open(app_token="xoxb-sim"))).response[
        "error"
    ] == "not_allowed_token_type"


# --- waiting and reading ---------------------------------------------------------------------


async def test_wait_for_wakes_on_changes(sim: SlackSim, client: AsyncWebClient) -> None:
    parent = sim.post_user_message("C1", "q", user="U1")

    async def answer() -> None:
        await client.chat_postMessage(channel="C1", thread_ts=parent.ts, text="a")

    task = asyncio.create_task(answer())
    await sim.wait_for(lambda: len(sim.bot_replies("C1", parent.ts)) == 1, timeout=5)
    await task


async def test_wait_for_timeout_explains_the_state(sim: SlackSim) -> None:
    sim.post_user_message("C1", "still waiting", user="U1")
    with pytest.raises(TimeoutError, match="still waiting"):
        await sim.wait_for(lambda: False, timeout=0.01)


def test_visible_text_prefers_markdown_then_blocks_then_text() -> None:
    def message(**fields: Any) -> SimMessage:
        return SimMessage(channel="C1", ts="1.1", user="UBOT", bot_id="BBOT", **fields)

    context = {"type": "context", "elements": [{"type": "mrkdwn", "text": "Tokens: 1 in, 2 out"}]}
    stop = {"type": "actions", "elements": [{"type": "button", "action_id": "stop_answer"}]}
    assert message(text="fallback", markdown_text="**md**").visible_text() == "**md**"
    assert (
        message(text="fallback", blocks=[markdown("a"), section("b"), stop, context]).visible_text()
        == "a\nb\nTokens: 1 in, 2 out"
    )
    assert message(text="fallback", blocks=[stop]).visible_text() == "fallback"


async def test_post_user_message_needs_a_known_channel(sim: SlackSim) -> None:
    with pytest.raises(ValueError, match="add_channel"):
        sim.post_user_message("CNOPE", "hi", user="U1")


# --- signed events ---------------------------------------------------------------------------


def test_sign_matches_slack_sdk_verifier() -> None:
    body = b'{"type":"event_callback"}'
    now = int(time.time())
    headers = sign(body, "s3cret", now)
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    assert not SignatureVerifier("other").is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[web.Request], list[bytes]]]:
    """A stand-in bot endpoint that records what it receives and checks the signature."""
    requests: list[web.Request] = []
    bodies: list[bytes] = []
    verifier = SignatureVerifier("s3cret")

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        requests.append(request)
        bodies.append(body)
        valid = verifier.is_valid_request(body, dict(request.headers))
        return web.Response(status=200 if valid else 401, text="ok" if valid else "bad")

    app = web.Application()
    app.router.add_post("/slack/events", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/slack/events", requests, bodies
    await runner.cleanup()


async def test_event_poster_signs_events_and_retries(
    receiver: tuple[str, list[web.Request], list[bytes]],
) -> None:
    url, requests, bodies = receiver
    poster = EventPoster(url, "s3cret")
    envelope = mention_envelope(
        team_id="T0001",
        channel="C1",
        user="U1",
        text="<@UBOT> hi",
        ts="1700000000.000100",
        bot_user_id="UBOT",
        event_id="Ev1",
    )
    try:
        assert await poster.post_event(envelope) == (200, "ok")
        assert await poster.post_event(envelope, retry_num=1) == (200, "ok")
        assert (await poster.post_event(envelope, secret="forged"))[0] == 401
        stale = int(time.time()) - 301
        assert (await poster.post_event(envelope, timestamp=stale))[0] == 401
        assert (await poster.post_raw(b"{", {"Content-Type": "application/json"}))[0] == 401
    finally:
        await poster.close()
    assert json.loads(bodies[0]) == envelope
    assert envelope["event"]["type"] == "app_mention" and envelope["event_id"] == "Ev1"
    assert "X-Slack-Retry-Num" not in requests[0].headers
    assert (
        requests[1].headers["X-Slack-Retry-Num"],
        requests[1].headers["X-Slack-Retry-Reason"],
    ) == ("1", "http_timeout")


async def test_event_poster_sends_actions_as_a_form(
    receiver: tuple[str, list[web.Request], list[bytes]],
) -> None:
    url, requests, bodies = receiver
    poster = EventPoster(url, "s3cret")
    payload = block_action_payload(
        team_id="T0001",
        user="U1",
        channel="C1",
        message_ts="1700000000.000200",
        action_id="stop_answer",
        value="stop",
    )
    try:
        assert await poster.post_action(payload) == (200, "ok")
    finally:
        await poster.close()
    assert requests[0].content_type == "application/x-www-form-urlencoded"
    sent = json.loads(parse_qs(bodies[0].decode())["payload"][0])
    assert sent["actions"][0]["action_id"] == "stop_answer"
    assert sent["container"]["message_ts"] == "1700000000.000200"


def test_dm_envelope_is_an_im_message_event() -> None:
    envelope = dm_envelope(
        team_id="T0001",
        channel="D1",
        user="U1",
        text="hi",
        ts="1700000000.000100",
        thread_ts="1700000000.000050",
    )
    event = envelope["event"]
    assert (event["type"], event["channel_type"], event["thread_ts"]) == (
        "message",
        "im",
        "1700000000.000050",
    )
    assert envelope["event_id"].startswith("Ev") and "subtype" not in event
    assert (
        dm_envelope(
            team_id="T0001",
            channel="D1",
            user="U2",
            text="x",
            ts="1.1",
            subtype="bot_message",
            bot_id="B2",
        )["event"]["bot_id"]
        == "B2"
    )


async def test_bolt_takes_our_events_and_answers_through_the_sim(sim: SlackSim) -> None:
    """The whole loop the other tests build on: EventPoster -> Bolt -> SlackSim."""
    app = AsyncApp(
        client=AsyncWebClient(token="xoxb-sim", base_url=sim.api_url), signing_secret="s3cret"
    )
    clicked: list[str] = []

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], say: Any) -> None:
        await say(text="Thinking…", thread_ts=event.get("thread_ts") or event["ts"])

    @app.action("stop_answer")
    async def on_stop(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        clicked.append(body["container"]["message_ts"])

    runner = web.AppRunner(app.web_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    poster = EventPoster(f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events", "s3cret")
    try:
        question = sim.post_user_message("C1", "<@UBOT> hello", user="U1")
        status, _ = await poster.post_event(
            mention_envelope(
                team_id="T0001",
                channel="C1",
                user="U1",
                text=question.text,
                ts=question.ts,
                bot_user_id="UBOT",
            )
        )
        assert status == 200
        await sim.wait_for(lambda: len(sim.bot_replies("C1", question.ts)) == 1)
        (reply,) = sim.bot_replies("C1", question.ts)
        assert reply.visible_text() == "Thinking…"
        status, _ = await poster.post_action(
            block_action_payload(
                team_id="T0001",
                user="U1",
                channel="C1",
                message_ts=reply.ts,
                action_id="stop_answer",
                value="stop",
            )
        )
        assert (status, clicked) == (200, [reply.ts])
        assert (await poster.post_event({}, secret="forged"))[0] == 401
    finally:
        await poster.close()
        await runner.cleanup()

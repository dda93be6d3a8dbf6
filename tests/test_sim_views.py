"""The simulated Slack's Home tabs, modals and feedback buttons, driven by the real slack-sdk
client over HTTP, and checked against Slack's method metadata where the reference beside the
checkout has it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.render import FeedbackButtons, feedback_block, final_payload
from bot.sim.slack import SlackSim
from bot.sim.slack_views import TRIGGER_SECONDS, feedback_element
from tests.shared_files import SLACK_REFERENCE


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim(clock: Clock) -> AsyncIterator[SlackSim]:
    async with SlackSim(clock=clock) as s:
        s.add_channel("C1")
        s.add_user("U1", "alice")
        yield s


@pytest.fixture
def client(sim: SlackSim) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-sim", base_url=sim.api_url)


HOME = {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]}
MODAL = {
    "type": "modal",
    "callback_id": "settings",
    "title": {"type": "plain_text", "text": "Settings"},
    "submit": {"type": "plain_text", "text": "Save"},
    "blocks": [
        {
            "type": "input",
            "block_id": "model",
            "label": {"type": "plain_text", "text": "Model"},
            "element": {"type": "plain_text_input", "action_id": "model"},
        }
    ],
}


async def error_of(call: Any) -> str:
    with pytest.raises(SlackApiError) as caught:
        await call
    return str(caught.value.response["error"])


async def test_views_publish_keeps_each_persons_home_tab(
    sim: SlackSim, client: AsyncWebClient
) -> None:
    response = await client.views_publish(user_id="U1", view=HOME)
    view = response["view"]
    assert view["type"] == "home" and view["id"].startswith("V") and view["team_id"] == "T0001"
    assert sim.views.homes["U1"]["blocks"] == HOME["blocks"]
    assert await error_of(client.views_publish(user_id="U9", view=HOME)) == "invalid_arguments"
    assert await error_of(client.views_publish(user_id="U1", view=MODAL)) == "invalid_arguments"
    too_many = {"type": "home", "blocks": [HOME["blocks"][0]] * 101}
    assert await error_of(client.views_publish(user_id="U1", view=too_many)) == "invalid_arguments"
    twice = {
        "type": "home",
        "blocks": [
            {**HOME["blocks"][0], "block_id": "same"},
            {"type": "divider", "block_id": "same"},
        ],
    }
    assert await error_of(client.views_publish(user_id="U1", view=twice)) == "invalid_arguments"
    huge = {
        "type": "home",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 2900}}] * 95,
    }
    assert await error_of(client.views_publish(user_id="U1", view=huge)) == "view_too_large"
    sim.views.home_enabled = False
    assert await error_of(client.views_publish(user_id="U1", view=HOME)) == "not_enabled"


async def test_views_open_takes_a_fresh_trigger_once(
    sim: SlackSim, client: AsyncWebClient, clock: Clock
) -> None:
    trigger = sim.views.issue_trigger("U1")
    opened = await client.views_open(trigger_id=trigger, view=MODAL)
    assert opened["view"]["callback_id"] == "settings"
    assert sim.views.modals[opened["view"]["id"]].user == "U1"
    assert await error_of(client.views_open(trigger_id=trigger, view=MODAL)) == (
        "exchanged_trigger_id"
    )
    assert await error_of(client.views_open(trigger_id="1.2.nope", view=MODAL)) == (
        "invalid_trigger_id"
    )
    late = sim.views.issue_trigger("U1")
    clock.now += TRIGGER_SECONDS + 0.1
    assert await error_of(client.views_open(trigger_id=late, view=MODAL)) == "expired_trigger_id"
    untitled = {**MODAL, "title": {"type": "plain_text", "text": "A title far too long for Slack"}}
    fresh = sim.views.issue_trigger("U1")
    assert await error_of(client.views_open(trigger_id=fresh, view=untitled)) == (
        "invalid_arguments"
    )
    no_submit = {k: v for k, v in MODAL.items() if k != "submit"}
    assert await error_of(client.views_open(trigger_id=fresh, view=no_submit)) == (
        "invalid_arguments"
    )


async def test_a_submission_carries_the_values_by_block_and_action(
    sim: SlackSim, client: AsyncWebClient
) -> None:
    opened = await client.views_open(trigger_id=sim.views.issue_trigger("U1"), view=MODAL)
    payload = sim.views.submit(
        opened["view"]["id"], "U1", {"model": {"type": "plain_text_input", "value": "m"}}
    )
    assert payload["type"] == "view_submission" and payload["user"]["id"] == "U1"
    assert payload["view"]["callback_id"] == "settings"
    assert payload["view"]["state"]["values"] == {
        "model": {"model": {"type": "plain_text_input", "value": "m"}}
    }


async def test_feedback_buttons_are_taken_and_checked_in_a_message(
    sim: SlackSim, client: AsyncWebClient
) -> None:
    buttons = FeedbackButtons(positive_value="+1", negative_value="-1")
    payload = final_payload("An answer.", footer="Tokens: 1 in, 1 out", feedback=buttons)
    posted = await client.chat_postMessage(channel="C1", **payload.as_kwargs())
    message = sim.message("C1", posted["ts"])
    element = feedback_element(message)
    assert element is not None and element["positive_button"]["value"] == "+1"
    click = sim.views.click_feedback("U1", message, "negative")
    assert click["actions"][0]["type"] == "feedback_buttons"
    assert click["actions"][0]["value"] == "-1"
    assert click["container"] == {
        "type": "message",
        "message_ts": message.ts,
        "channel_id": "C1",
        "is_ephemeral": False,
    }
    block = feedback_block(buttons)
    bad_blocks = [
        {**block, "elements": []},
        {**block, "elements": [{"type": "button"}]},
        {
            **block,
            "elements": [
                {**block["elements"][0], "positive_button": {"text": {"type": "plain_text"}}}
            ],
        },
    ]
    for bad in bad_blocks:
        assert await error_of(client.chat_postMessage(channel="C1", text="x", blocks=[bad])) == (
            "invalid_blocks"
        )


@pytest.mark.parametrize(
    ("method", "required", "errors"),
    [
        (
            "views.publish",
            {"token", "user_id", "view"},
            {"invalid_arguments", "not_enabled", "view_too_large"},
        ),
        (
            "views.open",
            {"token", "view"},
            {
                "invalid_arguments",
                "invalid_trigger_id",
                "exchanged_trigger_id",
                "expired_trigger_id",
                "view_too_large",
            },
        ),
    ],
)
def test_the_simulated_views_methods_follow_slacks_metadata(
    method: str, required: set[str], errors: set[str]
) -> None:
    """What the simulator requires and answers, against Slack's own metadata for the method
    (skipped where the reference beside the checkout does not have it)."""
    spec_path = SLACK_REFERENCE / "methods" / f"{method}.json"
    if not spec_path.is_file():
        pytest.skip(f"the reference in {SLACK_REFERENCE} has no metadata for {method}")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    assert set(spec["args"]["required"]) == required
    generic = {"invalid_arguments"}  # every method's, not listed per method
    assert errors - generic <= set(spec["errors"])

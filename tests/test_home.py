"""The Home tab: each person's own usage; for workspace admins only, the channel settings
section, whose modal sets a channel's prompt and model (stored, shown with who and when, and
used by the next answer there). A non-admin's view has no such section, and a forged
submission from a non-admin is refused."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bot.home import ADMIN_PREFIX, OPEN_SETTINGS_ACTION
from bot.sim.claude import Script
from bot.sim.slack_views import forged_submission
from bot.store import ChannelOverride
from tests.harness import ADMIN, ALICE, BOB, CHANNEL, TEAM, Harness, running_bot, simulators

ANSWER = Script(text="A short answer.", input_tokens=300, output_tokens=100)


async def open_home(h: Harness, user: str) -> dict[str, Any]:
    """`user` opens the app's Home tab; the view the bot publishes for them."""
    published = len(h.slack.views.published)
    status, body = await h.poster.post_event(h.slack.views.home_opened(user))
    assert status == 200, body
    await h.slack.wait_for(lambda: any(u == user for u, _ in h.slack.views.published[published:]))
    return h.slack.views.homes[user]


def block_ids(view: dict[str, Any]) -> list[str]:
    return [str(block.get("block_id") or "") for block in view["blocks"]]


def text_of(view: dict[str, Any]) -> str:
    return json.dumps(view, ensure_ascii=False)


async def settled(h: Harness) -> None:
    pending = set(h.bot._ui)
    if pending:
        await asyncio.wait(pending)


async def open_settings(h: Harness, user: str, channel: str = "") -> str:
    """`user` clicks the settings button on their Home tab; the id of the modal it opens."""
    opened = set(h.slack.views.modals)
    payload = h.slack.views.click_in_home(user, OPEN_SETTINGS_ACTION, channel)
    status, _ = await h.poster.post_action(payload)
    assert status == 200
    await h.slack.wait_for(lambda: set(h.slack.views.modals) - opened != set())
    [view_id] = set(h.slack.views.modals) - opened
    return view_id


def filled(channel: str, model: str = "", prompt: str = "") -> dict[str, dict[str, Any]]:
    return {
        "channel": {"type": "conversations_select", "selected_conversation": channel},
        "model": {"type": "plain_text_input", "value": model or None},
        "prompt": {"type": "plain_text_input", "value": prompt or None},
    }


async def test_everyone_sees_their_own_usage_and_only_admins_the_settings() -> None:
    async with simulators(claude_default=ANSWER) as (slack, claude):
        async with running_bot(slack, claude, user_daily_token_budget=10_000) as h:
            asked = await h.mention("count me")
            await h.finished(asked)
            alices = await open_home(h, ALICE)
            bobs = await open_home(h, BOB)
            admins = await open_home(h, ADMIN)
    assert alices["type"] == "home"
    assert "*Today*" in text_of(alices) and "1 answer · 400 tokens · $0.0016" in text_of(alices)
    assert "Today's tokens: 400 of 10,000 (4%)" in text_of(alices)
    assert "0 answers · 0 tokens · $0.00" in text_of(bobs)
    for view in (alices, bobs):
        assert not any(b.startswith(ADMIN_PREFIX) for b in block_ids(view))
        assert OPEN_SETTINGS_ACTION not in text_of(view)
    assert f"{ADMIN_PREFIX}explain" in block_ids(admins)
    assert OPEN_SETTINGS_ACTION in text_of(admins)
    assert "This month's top people" in text_of(admins)
    assert f"<@{ALICE}>: 1 answer" in text_of(admins)
    assert f"<#{CHANNEL}>: 1 answer" in text_of(admins)


async def test_an_admin_sets_a_channels_prompt_and_model_from_slack() -> None:
    async with simulators(claude_default=ANSWER) as (slack, claude):
        async with running_bot(slack, claude) as h:
            await open_home(h, ADMIN)
            view_id = await open_settings(h, ADMIN)
            modal = slack.views.modals[view_id].view
            published = len(slack.views.published)
            submission = slack.views.submit(
                view_id, ADMIN, filled(CHANNEL, "claude-opus-5-5", "You answer for finance.")
            )
            status, body = await h.poster.post_action(submission)
            await settled(h)
            stored = await h.bot.store.channel_overrides(TEAM)
            home = slack.views.homes[ADMIN]
            asked = await h.mention("what is the budget?")
            final = (await h.finished(asked))[-1]
            # Editing it again: the modal opens with the current values.
            edit_id = await open_settings(h, ADMIN, CHANNEL)
            edit = slack.views.modals[edit_id].view
            cleared, _ = await h.poster.post_action(
                slack.views.submit(edit_id, ADMIN, filled(CHANNEL))
            )
            await settled(h)
            after_clear = await h.bot.store.channel_overrides(TEAM)
    assert modal["callback_id"] == "channel_settings"
    assert (status, body) == (200, "")  # an empty ack closes the modal
    override = stored[CHANNEL]
    assert (override.model, override.system_prompt, override.by) == (
        "claude-opus-5-5",
        "You answer for finance.",
        ADMIN,
    )
    assert len(slack.views.published) > published  # the admin's Home tab shows the change
    assert f"changed by <@{ADMIN}> on " in text_of(home)
    assert "claude-opus-5-5" in text_of(home)
    request = claude.requests[-1]
    assert request["model"] == "claude-opus-5-5"
    assert request["system"][0]["text"] == "You answer for finance."
    assert "claude-opus-5-5" in final.visible_text()
    initial = {b["block_id"]: b.get("element", {}) for b in edit["blocks"] if "element" in b}
    assert initial["channel"]["initial_conversation"] == CHANNEL
    assert initial["model"]["initial_value"] == "claude-opus-5-5"
    assert initial["prompt"]["initial_value"] == "You answer for finance."
    assert cleared == 200 and after_clear == {}


async def test_a_submission_from_a_non_admin_is_refused_and_changes_nothing() -> None:
    """A forged view_submission (signed, as if Slack sent it) from someone who never had the
    modal: refused with an error on the form, nothing stored."""
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude) as h:
            await open_home(h, ADMIN)
            view_id = await open_settings(h, ADMIN)
            real = slack.views.modals[view_id].view
            state = {
                "values": {k: {k: v} for k, v in filled(CHANNEL, "evil-model", "Obey me.").items()}
            }
            forged = forged_submission(TEAM, BOB, {**real, "state": state})
            status, body = await h.poster.post_action(forged)
            stored = await h.bot.store.channel_overrides(TEAM)
            # A non-admin clicking the (hidden) button by forging the click opens nothing.
            admins_home = slack.views.homes[ADMIN]
            slack.views.homes[BOB] = admins_home
            modals = set(slack.views.modals)
            click = slack.views.click_in_home(BOB, OPEN_SETTINGS_ACTION, "")
            click_status, _ = await h.poster.post_action(click)
            await settled(h)
    assert status == 200
    answer = json.loads(body)
    assert answer["response_action"] == "errors"
    assert answer["errors"] == {"channel": "Only workspace admins can change a channel's settings."}
    assert stored == {}
    assert click_status == 200 and set(slack.views.modals) == modals


async def test_mistakes_in_the_modal_are_shown_on_the_form() -> None:
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude) as h:
            await open_home(h, ADMIN)
            view_id = await open_settings(h, ADMIN)
            status, body = await h.poster.post_action(
                slack.views.submit(view_id, ADMIN, filled("", "not a model!"))
            )
            stored = await h.bot.store.channel_overrides(TEAM)
    assert status == 200
    assert json.loads(body) == {
        "response_action": "errors",
        "errors": {
            "channel": "Pick a channel.",
            "model": "That is not a model ID (like claude-sonnet-5-5).",
        },
    }
    assert stored == {}


async def test_the_messages_tab_publishes_nothing() -> None:
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude) as h:
            status, _ = await h.poster.post_event(slack.views.home_opened(ALICE, tab="messages"))
            await h.mention("hello")  # an event after it, handled after it
            await h.finished(await h.mention("and this"))
            await settled(h)
    assert status == 200 and slack.views.published == []


async def test_the_admin_section_lists_overrides_and_the_files_channels(tmp_path: Any) -> None:
    path = tmp_path / "channels.yml"
    path.write_text("channels:\n  C0PAYMENTS: {model: claude-haiku-5-5}\n")
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude, channel_settings_file=str(path)) as h:
            await h.bot.store.set_channel_override(
                TEAM, "C0SUPPORT", ChannelOverride(system_prompt="Be kind.", by=ADMIN, at=1.7e9)
            )
            view = await open_home(h, ADMIN)
    shown = text_of(view)
    assert "<#C0SUPPORT>* (set in Slack): prompt “Be kind.”" in shown
    assert f"changed by <@{ADMIN}> on 2023-11-14 22:13 UTC" in shown
    assert "<#C0PAYMENTS> (file): model `claude-haiku-5-5`" in shown
    assert str(path) in shown

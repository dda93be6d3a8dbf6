"""Bolt listeners: they parse Slack's payloads and delegate; no business logic lives here."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.home import OPEN_SETTINGS_ACTION, SETTINGS_CALLBACK
from bot.render import FEEDBACK_ACTION_ID, STOP_ACTION_ID

log = logging.getLogger(__name__)

# The interactions the listeners below answer (`slack_http` drops any other, unanswered).
ACTIONS = frozenset({STOP_ACTION_ID, FEEDBACK_ACTION_ID, OPEN_SETTINGS_ACTION})
VIEWS = frozenset({SETTINGS_CALLBACK})


class Dispatcher(Protocol):
    """What the listeners hand questions and answers' buttons to (`app.SlackStream`)."""

    async def ask(self, event: dict[str, Any], *, event_id: str | None, team_id: str) -> None: ...

    async def stop(self, *, answer_id: str, user: str, channel: str, team_id: str) -> None: ...

    def feedback(self, *, user: str, team_id: str, value: object) -> None: ...


class HomeDesk(Protocol):
    """What the listeners hand the Home tab's events to (`home_tab.HomeTab`)."""

    def home_opened(self, *, user: str, team_id: str) -> None: ...

    def open_channel_settings(
        self, *, user: str, team_id: str, trigger_id: str, channel: str
    ) -> None: ...

    async def channel_settings_submitted(
        self, *, user: str, team_id: str, view: dict[str, Any]
    ) -> dict[str, str] | None: ...


def register_listeners(app: AsyncApp, dispatcher: Dispatcher, home: HomeDesk) -> None:
    """Wire the events of the manifest (`app_mention`, `message.im`, `app_home_opened`), the
    Stop and feedback buttons, and the Home tab's channel settings (button and modal)."""

    @app.event("app_mention")
    async def on_mention(body: dict[str, Any], event: dict[str, Any]) -> None:
        await dispatcher.ask(event, event_id=body.get("event_id"), team_id=_team(body, event))

    @app.event("message")
    async def on_message(body: dict[str, Any], event: dict[str, Any]) -> None:
        # Only direct messages are questions; in channels the bot answers mentions only.
        if event.get("channel_type") == "im":
            await dispatcher.ask(event, event_id=body.get("event_id"), team_id=_team(body, event))

    @app.event("app_home_opened")
    async def on_home_opened(body: dict[str, Any], event: dict[str, Any]) -> None:
        if event.get("tab", "home") == "home" and isinstance(event.get("user"), str):
            home.home_opened(user=event["user"], team_id=_team(body, event))

    @app.action(STOP_ACTION_ID)
    async def on_stop(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        actions = body.get("actions") or [{}]
        await dispatcher.stop(
            answer_id=str(actions[0].get("value") or ""),
            user=_user(body),
            channel=str((body.get("channel") or {}).get("id") or ""),
            team_id=_team_of(body),
        )

    @app.action(FEEDBACK_ACTION_ID)
    async def on_feedback(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()  # the vote is recorded in the background: the click is answered now
        actions = body.get("actions") or [{}]
        dispatcher.feedback(user=_user(body), team_id=_team_of(body), value=actions[0].get("value"))

    @app.action(OPEN_SETTINGS_ACTION)
    async def on_open_settings(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        actions = body.get("actions") or [{}]
        home.open_channel_settings(
            user=_user(body),
            team_id=_team_of(body),
            trigger_id=str(body.get("trigger_id") or ""),
            channel=str(actions[0].get("value") or ""),
        )

    @app.view(SETTINGS_CALLBACK)
    async def on_settings_submitted(ack: AsyncAck, body: dict[str, Any]) -> None:
        errors = await home.channel_settings_submitted(
            user=_user(body), team_id=_team_of(body), view=body.get("view") or {}
        )
        if errors:
            await ack(response_action="errors", errors=errors)
        else:
            await ack()


def _team(body: dict[str, Any], event: dict[str, Any]) -> str:
    return str(body.get("team_id") or event.get("team") or "")


def _team_of(body: dict[str, Any]) -> str:
    return str((body.get("team") or {}).get("id") or "")


def _user(body: dict[str, Any]) -> str:
    return str((body.get("user") or {}).get("id") or "")

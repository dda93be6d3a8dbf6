"""Bolt listeners: they parse Slack's payloads and delegate; no business logic lives here."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.render import STOP_ACTION_ID

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    """What the listeners hand their parsed events to (implemented in `bot.app`)."""

    async def ask(self, event: dict[str, Any], *, event_id: str | None, team_id: str) -> None: ...

    async def stop(self, *, answer_id: str, user: str, channel: str, team_id: str) -> None: ...


def register_listeners(app: AsyncApp, dispatcher: Dispatcher) -> None:
    """Wire the events of the manifest (`app_mention`, `message.im`) and the Stop button."""

    @app.event("app_mention")
    async def on_mention(body: dict[str, Any], event: dict[str, Any]) -> None:
        await dispatcher.ask(event, event_id=body.get("event_id"), team_id=_team(body, event))

    @app.event("message")
    async def on_message(body: dict[str, Any], event: dict[str, Any]) -> None:
        # Only direct messages are questions; in channels the bot answers mentions only.
        if event.get("channel_type") == "im":
            await dispatcher.ask(event, event_id=body.get("event_id"), team_id=_team(body, event))

    @app.action(STOP_ACTION_ID)
    async def on_stop(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        actions = body.get("actions") or [{}]
        await dispatcher.stop(
            answer_id=str(actions[0].get("value") or ""),
            user=str((body.get("user") or {}).get("id") or ""),
            channel=str((body.get("channel") or {}).get("id") or ""),
            team_id=str((body.get("team") or {}).get("id") or ""),
        )


def _team(body: dict[str, Any], event: dict[str, Any]) -> str:
    return str(body.get("team_id") or event.get("team") or "")

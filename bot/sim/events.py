"""What Slack sends to a bot over HTTP: event envelopes and interaction payloads, signed.

Tests, the benchmarks and the demo use these to drive the bot's ``POST /slack/events`` endpoint
the way Slack does: the same payload shapes, the same v0 request signature, the same retry
headers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp

JsonDict = dict[str, Any]
VERIFICATION_TOKEN = "sim-verification-token"  # legacy field Slack still sends; bots ignore it


def sign(body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    """The signature headers: v0 HMAC-SHA256 of ``v0:{timestamp}:{body}`` with the secret."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}


def _event_id() -> str:
    return "Ev" + secrets.token_hex(5).upper()


def _envelope(
    *, team_id: str, api_app_id: str, bot_user_id: str, event: JsonDict, event_id: str | None
) -> JsonDict:
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or _event_id(),
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }


def _message_fields(
    *, team_id: str, channel: str, user: str, text: str, ts: str, thread_ts: str | None
) -> JsonDict:
    fields: JsonDict = {
        "user": user,
        "text": text,
        "ts": ts,
        "team": team_id,
        "channel": channel,
        "event_ts": ts,
    }
    if thread_ts is not None:
        fields["thread_ts"] = thread_ts
    return fields


def mention_envelope(
    *,
    team_id: str,
    channel: str,
    user: str,
    text: str,
    ts: str,
    thread_ts: str | None = None,
    bot_user_id: str,
    event_id: str | None = None,
    api_app_id: str = "A0001",
    files: list[JsonDict] | None = None,
) -> JsonDict:
    """An ``app_mention`` event callback; ``text`` should contain ``<@bot_user_id>``;
    ``files``: the file objects posted with the message."""
    event = {
        "type": "app_mention",
        **_message_fields(
            team_id=team_id, channel=channel, user=user, text=text, ts=ts, thread_ts=thread_ts
        ),
    }
    if files:
        event["files"] = files
    return _envelope(
        team_id=team_id,
        api_app_id=api_app_id,
        bot_user_id=bot_user_id,
        event=event,
        event_id=event_id,
    )


def dm_envelope(
    *,
    team_id: str,
    channel: str,
    user: str,
    text: str,
    ts: str,
    thread_ts: str | None = None,
    event_id: str | None = None,
    subtype: str | None = None,
    bot_id: str | None = None,
    bot_user_id: str = "UBOT",
    api_app_id: str = "A0001",
) -> JsonDict:
    """A ``message`` event from a direct message (``channel_type`` "im")."""
    event: JsonDict = {
        "type": "message",
        "channel_type": "im",
        **_message_fields(
            team_id=team_id, channel=channel, user=user, text=text, ts=ts, thread_ts=thread_ts
        ),
    }
    if subtype is not None:
        event["subtype"] = subtype
    if bot_id is not None:
        event["bot_id"] = bot_id
    return _envelope(
        team_id=team_id,
        api_app_id=api_app_id,
        bot_user_id=bot_user_id,
        event=event,
        event_id=event_id,
    )


def block_action_payload(
    *,
    team_id: str,
    user: str,
    channel: str,
    message_ts: str,
    action_id: str,
    value: str,
    trigger_id: str = "t1",
    api_app_id: str = "A0001",
) -> JsonDict:
    """A ``block_actions`` payload for a button click on a message.

    It has no ``response_url``: the sim serves none, so answers must go through the Web API.
    """
    return {
        "type": "block_actions",
        "token": VERIFICATION_TOKEN,
        "api_app_id": api_app_id,
        "team": {"id": team_id, "domain": "sim"},
        "user": {"id": user, "username": user, "name": user, "team_id": team_id},
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "channel": {"id": channel, "name": channel},
        "message": {"type": "message", "ts": message_ts},
        "trigger_id": trigger_id,
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "actions",
                "value": value,
                "action_ts": f"{time.time():.6f}",
            }
        ],
        "state": {"values": {}},
    }


class EventPoster:
    """Posts signed requests to a bot's Slack endpoint, like Slack's event delivery does."""

    def __init__(
        self,
        url: str,
        signing_secret: str,
        *,
        clock: Callable[[], float] = time.time,
        connection_limit: int = 100,
    ) -> None:
        """`connection_limit`: requests in flight at once (aiohttp's default; 0: no cap, so
        that a benchmark never counts a queue in the poster as the bot's latency)."""
        self.url = url
        self.signing_secret = signing_secret
        self._clock = clock
        self._connection_limit = connection_limit
        self._session: aiohttp.ClientSession | None = None

    async def post_event(
        self,
        envelope: JsonDict,
        *,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> tuple[int, str]:
        """Deliver an event; ``retry_num`` marks it as Slack's n-th redelivery."""
        body = json.dumps(envelope).encode()
        headers = self._signed(body, "application/json", timestamp, secret)
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        return await self.post_raw(body, headers)

    async def post_action(
        self, payload: JsonDict, *, timestamp: int | None = None, secret: str | None = None
    ) -> tuple[int, str]:
        """Deliver an interaction, form-encoded as ``payload=<json>`` like Slack does."""
        body = urlencode({"payload": json.dumps(payload)}).encode()
        headers = self._signed(body, "application/x-www-form-urlencoded", timestamp, secret)
        return await self.post_raw(body, headers)

    async def post_raw(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """Send exactly these bytes and headers (for forged or malformed requests)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connection_limit)
            self._session = aiohttp.ClientSession(connector=connector)
        async with self._session.post(self.url, data=body, headers=headers) as response:
            return response.status, await response.text()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _signed(
        self, body: bytes, content_type: str, timestamp: int | None, secret: str | None
    ) -> dict[str, str]:
        stamp = int(self._clock()) if timestamp is None else timestamp
        headers = sign(body, self.signing_secret if secret is None else secret, stamp)
        headers["Content-Type"] = content_type
        return headers

"""Slack Web API calls, counted and classified.

Every call the bot makes goes through `SlackCalls.call` so that metrics, log lines and the
distinction between "wait and retry" and "give up" live in one place instead of at each caller.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import render
from bot.metrics import Metrics
from bot.pacing import retry_after_seconds

log = logging.getLogger(__name__)

# Errors after which retrying the same call can never succeed.
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "missing_scope",
        "thread_not_found",
        "restricted_action",
        "msg_too_long",
        "msg_blocks_too_long",
        "invalid_blocks",
        "no_text",
        "markdown_text_conflict",
    }
)


@dataclass(frozen=True)
class SlackFailure(Exception):
    """A failed Slack call: `error` is Slack's error name (or a transport description)."""

    method: str
    error: str
    retry_after: float | None = None

    @property
    def rate_limited(self) -> bool:
        return self.retry_after is not None

    @property
    def permanent(self) -> bool:
        return self.error in PERMANENT_ERRORS

    @property
    def may_have_taken_effect(self) -> bool:
        """A server error or a broken connection: Slack may have done what was asked."""
        return self.error.startswith(("http_", "connection_error"))

    def __str__(self) -> str:
        return f"{self.method}: {self.error}"


class SlackCalls:
    """A thin, counted front to `AsyncWebClient`."""

    def __init__(self, client: AsyncWebClient, metrics: Metrics) -> None:
        self.client = client
        self._metrics = metrics

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Call `method` (Slack's dotted name); return the response data or raise SlackFailure."""
        self._metrics.slack_calls.labels(method).inc()
        try:
            # The typed SDK methods know each method's encoding (JSON for writes, query for reads).
            sdk_method = getattr(self.client, method.replace(".", "_"))
            response = await sdk_method(**_drop_none(params))
        except SlackApiError as e:
            status = e.response.status_code
            # A proxy's or an overloaded Slack's error page is not JSON: data is then its text.
            body = e.response.data if isinstance(e.response.data, dict) else {}
            error = str(body.get("error") or f"http_{status}")
            retry_after = None
            if status == 429 or error in ("ratelimited", "rate_limited"):
                retry_after = retry_after_seconds(_header(e.response.headers, "retry-after"))
            self._record(method, error)
            raise SlackFailure(method, error, retry_after) from None
        except (OSError, TimeoutError, ClientError) as e:
            # Not only OSError: on a kept-alive connection the server may hang up between calls
            # (ServerDisconnectedError), which slack-sdk's retry handler retries, then raises.
            self._record(method, "connection_error")
            raise SlackFailure(method, f"connection_error: {type(e).__name__}") from None
        data = response.data
        return data if isinstance(data, dict) else {}

    async def thread(
        self, channel: str, thread_ts: str, *, oldest: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The messages of a thread (those from `oldest` on, when given), page after page."""
        cursor: str | None = None
        while True:
            page = await self.call(
                "conversations.replies",
                channel=channel,
                ts=thread_ts,
                limit=200,
                cursor=cursor,
                oldest=oldest,
            )
            for message in page.get("messages") or []:
                yield message
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return

    async def answer_message(
        self, channel: str, thread_ts: str, answer_id: str, *, oldest: str | None = None
    ) -> str:
        """The ts of the message in a thread that carries `answer_id`'s Stop button, or "": it
        finds a placeholder whose posting was never confirmed."""
        async for message in self.thread(channel, thread_ts, oldest=oldest):
            if render.stop_button_answer_id(message) == answer_id:
                return str(message.get("ts") or "")
        return ""

    def _record(self, method: str, error: str) -> None:
        self._metrics.slack_errors.labels(method, error).inc()
        log.warning("slack call failed", extra={"method": method, "error": error})


def _drop_none(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _header(headers: Any, name: str) -> str | None:
    """Case-insensitive header lookup over slack-sdk's plain dict of headers."""
    if not headers:
        return None
    for key, value in dict(headers).items():
        if str(key).lower() == name:
            return str(value[0] if isinstance(value, list) else value)
    return None

"""Slack Web API calls, counted and classified.

Every call the bot makes goes through `SlackCalls.call` so that metrics, log lines and the
distinction between "wait and retry" and "give up" live in one place instead of at each caller.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.metrics import Metrics
from bot.pacing import retry_after_seconds

log = logging.getLogger(__name__)


class Refusal(enum.StrEnum):
    """Why Slack will never accept a call as it stands; retrying it only spends budget."""

    PAYLOAD = "payload"  # the payload is the problem: send it as plainer text
    MESSAGE_GONE = "message_gone"  # that message can no longer be edited (deleted, too old)
    CONVERSATION_GONE = "conversation_gone"  # nothing can be posted there any more
    AUTH = "auth"  # the bot's token or scopes no longer allow it


REFUSALS: dict[str, Refusal] = {
    **dict.fromkeys(
        (
            "msg_too_long",
            "msg_blocks_too_long",
            "invalid_blocks",
            "invalid_blocks_format",
            "no_text",
            "markdown_text_conflict",
            "block_mismatch",
            "invalid_metadata_format",
            "invalid_metadata_schema",
            "metadata_too_large",
        ),
        Refusal.PAYLOAD,
    ),
    **dict.fromkeys(
        ("message_not_found", "cant_update_message", "edit_window_closed"),
        Refusal.MESSAGE_GONE,
    ),
    **dict.fromkeys(
        (
            "channel_not_found",
            "not_in_channel",
            "is_archived",
            "thread_not_found",
            "invalid_thread_ts",
            "cannot_reply_to_message",
            "restricted_action",
            "ekm_access_denied",
            "team_access_not_granted",
            "channel_is_archived",
        ),
        Refusal.CONVERSATION_GONE,
    ),
    **dict.fromkeys(
        (
            "invalid_auth",
            "not_authed",
            "account_inactive",
            "token_revoked",
            "token_expired",
            "missing_scope",
            "no_permission",
            "not_allowed_token_type",
        ),
        Refusal.AUTH,
    ),
}
# Slack names these failures of its own: the call may or may not have taken effect.
_SERVER_FAILURES = ("internal_error", "fatal_error", "request_timeout", "service_unavailable")


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
    def refusal(self) -> Refusal | None:
        """Why retrying can never succeed, or None for a failure that may pass."""
        if self.error.startswith("restricted_action"):  # and its channel-specific variants
            return Refusal.CONVERSATION_GONE
        return REFUSALS.get(self.error)

    @property
    def permanent(self) -> bool:
        return self.refusal is not None

    @property
    def may_have_taken_effect(self) -> bool:
        """A server error or a broken connection: Slack may have done what was asked."""
        return self.error.startswith(("http_", "connection_error")) or self.error in (
            _SERVER_FAILURES
        )

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
        self,
        channel: str,
        thread_ts: str,
        *,
        oldest: str | None = None,
        with_metadata: bool = False,
    ) -> AsyncIterator[dict[str, Any]]:
        """The messages of a thread (those from `oldest` on, when given), page after page;
        `with_metadata` asks for each message's metadata too (it names an answer's parts)."""
        cursor: str | None = None
        while True:
            page = await self.call(
                "conversations.replies",
                channel=channel,
                ts=thread_ts,
                limit=200,
                cursor=cursor,
                oldest=oldest,
                include_all_metadata=True if with_metadata else None,
            )
            for message in page.get("messages") or []:
                yield message
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return

    async def is_admin(self, user: str) -> bool:
        """Whether `user` is a workspace admin or owner; a failed lookup says no."""
        try:
            data = await self.call("users.info", user=user)
        except SlackFailure:
            return False
        info = data.get("user") or {}
        return bool(info.get("is_admin") or info.get("is_owner") or info.get("is_primary_owner"))

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

"""The simulated Slack's Web API methods: who may call, injected failures, rate limits, and each
method against the workspace. Argument and error names follow Slack's method metadata."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.pacing import TokenBucket
from bot.sim.slack_payloads import ApiError, JsonDict, Limits, flag, metadata
from bot.sim.slack_views import Views
from bot.sim.slack_workspace import SimMessage, Workspace
from bot.slackts import parse as parse_ts
from bot.slackts import ts_key

Handler = Callable[[JsonDict], JsonDict]

DEFAULT_SCOPES = (
    "app_mentions:read",
    "channels:history",
    "groups:history",
    "im:history",
    "mpim:history",
    "chat:write",
    "users:read",
    "files:read",
)
MAX_PAGE = 1000

# A `fail_next` entry that lets the call take effect, then answers 500 as if the response was
# lost on the way back; every other entry fails the call before it does anything.
LOST_RESPONSE = "lost_response"


@dataclass
class SimCall:
    """The record of one Web API call, including rejected ones (429s, injected failures)."""

    method: str
    params: JsonDict
    at: float  # the sim's clock when the call was answered
    status: int
    ok: bool
    error: str | None
    team_id: str
    peer: str = ""  # the client's "host:port": calls over one kept-alive connection share it


@dataclass
class Reply:
    status: int
    body: JsonDict | None  # None: a non-JSON server error page
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        if self.body is None:
            return "http_500"
        return None if self.body.get("ok") else str(self.body.get("error"))


def error_reply(name: str) -> Reply:
    if name == "http_500":
        return Reply(500, None)
    if name == "ratelimited":
        return Reply(429, {"ok": False, "error": name}, {"Retry-After": "1"})
    return Reply(200, {"ok": False, "error": name})


class WebApi:
    """The methods the bot calls, answered from `workspace`; every call is kept in `calls`.

    `fail_next[method]` lists failures for the next calls of a method (an error name, or
    LOST_RESPONSE); `rate_limits[method]` is (per minute, burst), per workspace.
    """

    def __init__(
        self,
        workspace: Workspace,
        *,
        bot_token: str,
        app_token: str,
        limits: Limits,
        rate_limits: dict[str, tuple[float, float]],
        scopes: list[str],
        clock: Callable[[], float],
    ) -> None:
        self.workspace = workspace
        self.bot_token = bot_token
        self.app_token = app_token
        self.limits = limits
        self.scopes = scopes
        self.socket_url = ""  # what apps.connections.open hands out, once served
        self.calls: list[SimCall] = []
        self.fail_next: dict[str, list[str]] = {}
        self._clock = clock
        self._rate_limits = dict(rate_limits)
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._handlers: dict[str, Handler] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "conversations.replies": self._conversations_replies,
            "users.info": self._users_info,
            "bots.info": self._bots_info,
            "assistant.threads.setStatus": self._set_status,
            "apps.connections.open": self._apps_connections_open,
        }
        # Home tabs and modals (`slack_views`).
        self.views = Views(workspace, clock=clock)
        self._handlers.update(self.views.handlers())

    def set_rate_limit(self, method: str, per_minute: float, burst: float) -> None:
        """Limit ``method`` from now on, starting with a full bucket."""
        self._rate_limits[method] = (per_minute, burst)
        self._buckets = {k: b for k, b in self._buckets.items() if k[1] != method}

    def clear_rate_limit(self, method: str) -> None:
        """Lift a rate limit set with `set_rate_limit` (its bucket is forgotten too)."""
        self._rate_limits.pop(method, None)
        self._buckets = {k: v for k, v in self._buckets.items() if k[1] != method}

    def add_method(self, method: str, handler: Handler) -> None:
        """Answer `method` with `handler` (a feature kept in its own module, such as files)."""
        self._handlers[method] = handler

    def call(self, method: str, params: JsonDict, token: str | None, *, peer: str = "") -> Reply:
        """Answer one call, keep its record, and wake whoever waits for a change."""
        reply = self._answer(method, params, token)
        self.calls.append(
            SimCall(
                method=method,
                params=params,
                at=self._clock(),
                status=reply.status,
                ok=reply.error is None,
                error=reply.error,
                team_id=self.workspace.team_id if token == self.bot_token else "",
                peer=peer,
            )
        )
        self.workspace.notify()
        reply.headers = {"x-oauth-scopes": ",".join(self.scopes), **reply.headers}
        return reply

    def _answer(self, method: str, params: JsonDict, token: str | None) -> Reply:
        """Order of checks: known method, token, injected failure, rate limit, the method."""
        handler = self._handlers.get(method)
        if handler is None:
            return Reply(404, {"ok": False, "error": "unknown_method"})
        if method == "apps.connections.open" and token == self.app_token:
            return Reply(200, {"ok": True, "url": self.socket_url})
        if not token:
            return error_reply("not_authed")
        if token != self.bot_token:
            return error_reply("invalid_auth")
        queued = self.fail_next.get(method)
        failure = queued.pop(0) if queued else None
        if failure is not None and failure != LOST_RESPONSE:
            return error_reply(failure)
        wait = self._take_token(method)
        if wait > 0:
            retry_after = str(max(1, math.ceil(wait)))
            return Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": retry_after})
        try:
            reply = Reply(200, {"ok": True, **handler(params)})
        except ApiError as exc:
            return error_reply(exc.error)
        # The call took effect, but its answer is lost on the way back (a proxy timing out).
        return error_reply("http_500") if failure == LOST_RESPONSE else reply

    def _take_token(self, method: str) -> float:
        """0.0 when the call may go, else the seconds until it could (the bot's own bucket)."""
        limit = self._rate_limits.get(method)
        if limit is None:
            return 0.0
        per_minute, burst = limit
        now = self._clock()
        key = (self.workspace.team_id, method)
        bucket = self._buckets.setdefault(key, TokenBucket.full(burst, now))
        return bucket.take(now, per_minute=per_minute, burst=burst)

    # --- helpers of the methods --------------------------------------------------------------

    def _own_message(self, p: JsonDict, refusal: str) -> SimMessage:
        channel = self.workspace.channel(p.get("channel"))
        message = self.workspace.find(channel, str(p.get("ts") or ""))
        if message is None:
            raise ApiError("message_not_found")
        if message.user != self.workspace.bot_user_id:
            raise ApiError(refusal)
        return message

    def _render(self, m: SimMessage, *, with_metadata: bool = False) -> JsonDict:
        """A message as the Web API returns it; markdown_text comes back as a markdown block,
        and metadata only when asked for (`include_all_metadata`)."""
        out: JsonDict = {
            "type": "message",
            "ts": m.ts,
            "text": m.text or m.markdown_text or "",
            "team": self.workspace.team_id,
        }
        blocks = m.blocks or (
            [{"type": "markdown", "text": m.markdown_text}] if m.markdown_text else []
        )
        optional = {
            "user": m.user,
            "bot_id": m.bot_id,
            "blocks": blocks,
            "thread_ts": m.thread_ts,
            "subtype": m.subtype,
            "files": m.files,
        }
        out.update({k: v for k, v in optional.items() if v})
        if with_metadata and m.metadata:
            out["metadata"] = m.metadata
        return out

    # --- methods -----------------------------------------------------------------------------

    def _auth_test(self, p: JsonDict) -> JsonDict:
        ws = self.workspace
        return {
            "url": "https://sim.slack.invalid/",
            "team": "Simulated Workspace",
            "user": ws.users[ws.bot_user_id]["name"],
            "team_id": ws.team_id,
            "user_id": ws.bot_user_id,
            "bot_id": ws.bot_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, p: JsonDict) -> JsonDict:
        ws = self.workspace
        channel = ws.channel(p.get("channel"), post=True)
        text, blocks, markdown = self.limits.content(p)
        message = SimMessage(
            channel=channel,
            ts=ws.next_ts(),
            user=ws.bot_user_id,
            bot_id=ws.bot_id,
            text=text or "",
            blocks=blocks or [],
            markdown_text=markdown,
            thread_ts=ws.thread_root(channel, p.get("thread_ts")),
            metadata=metadata(p.get("metadata")),
        )
        ws.store(message)
        return {"channel": channel, "ts": message.ts, "message": self._render(message)}

    def _chat_update(self, p: JsonDict) -> JsonDict:
        """Passed fields replace stored ones (``blocks=[]`` clears them; text-only keeps blocks).

        ``markdown_text`` excludes ``text`` and ``blocks``, so passing it clears both, and
        passing either of them drops a previous ``markdown_text``.
        """
        message = self._own_message(p, "cant_update_message")
        text, blocks, markdown = self.limits.content(p)
        if markdown is not None:
            message.text, message.blocks, message.markdown_text = "", [], markdown
        else:
            message.text = message.text if text is None else text
            message.blocks = message.blocks if blocks is None else blocks
            message.markdown_text = None
        if p.get("metadata") is not None:  # omitted, the message keeps its metadata
            message.metadata = metadata(p["metadata"]) or None
        self.workspace.updated(message)
        return {
            "channel": message.channel,
            "ts": message.ts,
            "text": message.text,
            "message": self._render(message),
        }

    def _chat_delete(self, p: JsonDict) -> JsonDict:
        message = self._own_message(p, "cant_delete_message")
        self.workspace.delete(message)
        return {"channel": message.channel, "ts": message.ts}

    def _chat_post_ephemeral(self, p: JsonDict) -> JsonDict:
        ws = self.workspace
        channel = ws.channel(p.get("channel"), post=True)
        if not p.get("user"):
            raise ApiError("user_not_in_channel")
        text, blocks, markdown = self.limits.content(p)
        ts = ws.next_ts()
        ws.ephemerals.append(
            {
                "channel": channel,
                "user": p["user"],
                "message_ts": ts,
                "text": text or markdown or "",
                "blocks": blocks or [],
                "thread_ts": p.get("thread_ts"),
            }
        )
        return {"message_ts": ts}

    def _conversations_replies(self, p: JsonDict) -> JsonDict:
        """Parent and replies, oldest first, in pages of ``limit`` behind an opaque cursor."""
        ws = self.workspace
        channel = ws.channel(p.get("channel"))
        root = ws.find(channel, str(p.get("ts") or ""))
        if root is None:
            raise ApiError("thread_not_found")
        inside = _window(p)
        messages = [m for m in ws.thread(channel, root.thread_ts or root.ts) if inside(m.ts)]
        start = _cursor_index(p.get("cursor"), messages)
        limit = min(max(int(p.get("limit") or MAX_PAGE), 1), MAX_PAGE)
        page, rest = messages[start : start + limit], messages[start + limit :]
        next_cursor = _encode_cursor(rest[0].ts) if rest else ""
        with_metadata = flag(p.get("include_all_metadata"))
        return {
            "messages": [self._render(m, with_metadata=with_metadata) for m in page],
            "has_more": bool(rest),
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _users_info(self, p: JsonDict) -> JsonDict:
        user = self.workspace.users.get(str(p.get("user") or ""))
        if user is None:
            raise ApiError("user_not_found")
        return {"user": user}

    def _bots_info(self, p: JsonDict) -> JsonDict:
        bot = self.workspace.bots.get(str(p.get("bot") or ""))
        if bot is None:
            raise ApiError("bot_not_found")
        return {"bot": bot}

    def _set_status(self, p: JsonDict) -> JsonDict:
        channel = self.workspace.channel(p.get("channel_id"))
        thread_ts = str(p.get("thread_ts") or "")
        if not thread_ts:
            raise ApiError("invalid_thread_ts")
        self.workspace.statuses.append((channel, thread_ts, str(p.get("status") or "")))
        return {}

    def _apps_connections_open(self, p: JsonDict) -> JsonDict:
        """Only reached with a bot token (the app token is answered in `_answer`)."""
        raise ApiError("not_allowed_token_type")


def _bound(p: JsonDict, name: str) -> tuple[int, int] | None:
    if p.get(name) in (None, ""):
        return None
    bound = parse_ts(str(p[name]))
    if bound is None:
        raise ApiError(f"invalid_ts_{name}")
    return bound


def _window(p: JsonDict) -> Callable[[str], bool]:
    """The ``oldest``/``latest`` bounds of conversations.replies, exclusive unless ``inclusive``."""
    oldest, latest, inclusive = _bound(p, "oldest"), _bound(p, "latest"), flag(p.get("inclusive"))

    def inside(ts: str) -> bool:
        key = ts_key(ts)
        if oldest is not None and (key < oldest or (key == oldest and not inclusive)):
            return False
        return latest is None or key < latest or (key == latest and inclusive)

    return inside


def _encode_cursor(ts: str) -> str:
    return base64.b64encode(f"next_ts:{ts}".encode()).decode()


def _cursor_index(cursor: object, messages: list[SimMessage]) -> int:
    """Index of the first message of the page a cursor points at (0 without a cursor)."""
    if not cursor:
        return 0
    try:
        label, _, ts = base64.b64decode(str(cursor), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError("invalid_cursor") from None
    key = parse_ts(ts)
    if label != "next_ts" or key is None:
        raise ApiError("invalid_cursor")
    return next((i for i, m in enumerate(messages) if ts_key(m.ts) >= key), len(messages))

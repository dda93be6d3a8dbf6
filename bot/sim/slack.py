"""A simulated Slack Web API, served over HTTP so the real slack-sdk client can talk to it.

The demo, the tests and the benchmarks point ``AsyncWebClient(base_url=sim.api_url)`` here. The
sim keeps messages in memory, checks payloads against Slack's documented limits, enforces
per-method rate limits, and can inject failures. Argument and error names follow Slack's method
metadata (Slack's per-method JSON reference); where Slack's behaviour is undocumented, the
function that makes the choice says what it does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.pacing import TokenBucket
from bot.slackts import parse as parse_ts
from bot.slackts import ts_key

JsonDict = dict[str, Any]
Handler = Callable[[JsonDict], JsonDict]

DEFAULT_SCOPES = (
    "app_mentions:read",
    "channels:history",
    "groups:history",
    "im:history",
    "mpim:history",
    "chat:write",
    "users:read",
)
BLOCK_TYPES = frozenset(
    {
        "actions",
        "context",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "table",
        "video",
    }
)
MAX_BLOCKS = 50
SECTION_TEXT_LIMIT = 3000
HEADER_TEXT_LIMIT = 150
MAX_PAGE = 1000
DEFAULT_BOT_TOKEN = "xoxb-sim"
_TS_EPOCH = 1_700_000_000
_TS_STEP = 100  # microseconds between two generated timestamps


# A `fail_next` entry that lets the call take effect, then answers 500 as if the response was
# lost on the way back; every other entry fails the call before it does anything.
LOST_RESPONSE = "lost_response"


class _ApiError(Exception):
    """A Slack error name, answered as HTTP 200 ``{"ok": false, "error": name}``."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _text_of(obj: Any) -> str:
    """The ``text`` of a Block Kit text object (or "" when there is none)."""
    if isinstance(obj, dict) and isinstance(obj.get("text"), str):
        return str(obj["text"])
    return ""


def _block_texts(block: JsonDict) -> list[str]:
    """The reader-visible texts of one block; interactive blocks (actions) show none."""
    kind = block.get("type")
    if kind == "markdown":
        return [_text_of(block)]
    if kind in ("section", "header"):
        texts = [_text_of(block.get("text"))]
        texts += [_text_of(f) for f in block.get("fields") or []]
        return [t for t in texts if t]
    if kind == "context":
        return [t for t in (_text_of(e) for e in block.get("elements") or []) if t]
    return []


@dataclass
class SimMessage:
    """One stored message, with every version of its payload."""

    channel: str
    ts: str
    user: str | None
    bot_id: str | None
    text: str
    blocks: list[JsonDict] = field(default_factory=list)
    markdown_text: str | None = None
    thread_ts: str | None = None
    edited: bool = False
    subtype: str | None = None
    metadata: JsonDict | None = None  # Slack message metadata (event_type, event_payload)
    history: list[JsonDict] = field(default_factory=list)

    def visible_text(self) -> str:
        """What a reader sees: markdown_text, else the text blocks, else the fallback ``text``."""
        if self.markdown_text:
            return self.markdown_text
        parts = [t for block in self.blocks for t in _block_texts(block)]
        return "\n".join(parts) if parts else self.text

    def has_button(self, action_id: str) -> bool:
        for block in self.blocks:
            elements = list(block.get("elements") or []) if block.get("type") == "actions" else []
            elements.append(block.get("accessory") or {})
            if any(
                e.get("type") == "button" and e.get("action_id") == action_id
                for e in elements
                if isinstance(e, dict)
            ):
                return True
        return False


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
class _Reply:
    status: int
    body: JsonDict | None  # None: a non-JSON server error page
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        if self.body is None:
            return "http_500"
        return None if self.body.get("ok") else str(self.body.get("error"))


def _error(name: str) -> _Reply:
    if name == "http_500":
        return _Reply(500, None)
    if name == "ratelimited":
        return _Reply(429, {"ok": False, "error": name}, {"Retry-After": "1"})
    return _Reply(200, {"ok": False, "error": name})


def _decode_blocks(value: Any) -> Any:
    """Form posts carry ``blocks`` as JSON text; decode it (bad JSON stays a string)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _peer(request: web.Request) -> str:
    peername = request.transport.get_extra_info("peername") if request.transport else None
    return f"{peername[0]}:{peername[1]}" if peername else ""


async def _read_request(request: web.Request) -> tuple[JsonDict, str | None]:
    """Arguments from the query, a form or a JSON body; the token from the header or a field."""
    params: JsonDict = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()
            params.update(body if isinstance(body, dict) else {})
        else:
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
    if "blocks" in params:
        params["blocks"] = _decode_blocks(params["blocks"])
    field_token = params.pop("token", None)
    auth = request.headers.get("Authorization", "")
    token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
    return params, token or field_token


def _metadata(value: Any) -> JsonDict | None:
    """Message metadata as posted (a JSON string or an object); invalid shapes are refused."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _ApiError("invalid_metadata_format") from None
    if not isinstance(value, dict):
        raise _ApiError("invalid_metadata_format")
    if value and (not isinstance(value.get("event_type"), str) or "event_payload" not in value):
        raise _ApiError("invalid_metadata_schema")
    return value


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


class SlackSim:
    """One simulated workspace with one bot installed; see the module docstring."""

    def __init__(
        self,
        *,
        team_id: str = "T0001",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        bot_token: str = DEFAULT_BOT_TOKEN,
        app_token: str = "xapp-sim",
        latency: float = 0.0,
        rate_limits: dict[str, tuple[float, float]] | None = None,
        text_limit: int = 4000,
        markdown_limit: int = 12000,
        blocks_text_limit: int = 13000,
        scopes: list[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.team_id, self.bot_user_id, self.bot_id = team_id, bot_user_id, bot_id
        self.bot_token = bot_token
        self.app_token = app_token
        self.latency = latency
        # Socket Mode: open WebSocket connections and the envelope ids the bot acknowledged.
        self.socket_acks: list[str] = []
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_url = ""
        self.text_limit, self.markdown_limit = text_limit, markdown_limit
        self.blocks_text_limit = blocks_text_limit
        self.scopes = list(scopes if scopes is not None else DEFAULT_SCOPES)
        self.api_url = ""
        self.calls: list[SimCall] = []
        self.users: dict[str, JsonDict] = {}
        self.bots: dict[str, JsonDict] = {}
        self.ephemerals: list[JsonDict] = []
        self.statuses: list[tuple[str, str, str]] = []
        self.on_change: list[Callable[[str, SimMessage], None]] = []
        self.fail_next: dict[str, list[str]] = {}
        self._clock = clock
        self._limits: dict[str, tuple[float, float]] = dict(rate_limits or {})
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._channels: dict[str, bool] = {}  # channel id -> the bot is a member
        self._messages: dict[tuple[str, str], SimMessage] = {}
        self._ts_counter = 0
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
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
        self.add_user(bot_user_id, "slackstream", is_bot=True)
        self.bots[bot_id] = {
            "id": bot_id,
            "name": "slackstream",
            "user_id": bot_user_id,
            "deleted": False,
            "app_id": "A0001",
        }

    # --- server life cycle -------------------------------------------------------------------

    async def start(self) -> str:
        """Serve on a free loopback port; returns ``api_url`` for ``AsyncWebClient(base_url=)``."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._serve)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.api_url = f"http://127.0.0.1:{port}/api/"
        self._socket_url = f"ws://127.0.0.1:{port}/socket"
        return self.api_url

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackSim:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- test controls -----------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        self.latency = seconds

    def set_rate_limit(self, method: str, per_minute: float, burst: float) -> None:
        """Limit ``method`` from now on, starting with a full bucket."""
        self._limits[method] = (per_minute, burst)
        self._buckets = {k: b for k, b in self._buckets.items() if k[1] != method}

    def clear_rate_limit(self, method: str) -> None:
        """Lift a rate limit set with `set_rate_limit` (its bucket is forgotten too)."""
        self._limits.pop(method, None)
        self._buckets = {k: v for k, v in self._buckets.items() if k[1] != method}

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        is_bot: bool = False,
        is_admin: bool = False,
        real_name: str | None = None,
    ) -> None:
        shown = real_name or name
        self.users[user_id] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": shown,
            "deleted": False,
            "is_bot": is_bot,
            "is_admin": is_admin,
            "is_owner": False,
            "profile": {"real_name": shown, "display_name": name},
        }

    def add_channel(self, channel_id: str, *, is_im: bool = False, members: bool = True) -> None:
        """Declare a conversation; ``members=False`` makes the bot an outsider (not_in_channel).

        A DM (``is_im``) always includes the bot.
        """
        self._channels[channel_id] = members or is_im

    def post_user_message(
        self,
        channel: str,
        text: str,
        *,
        user: str,
        thread_ts: str | None = None,
        bot_id: str | None = None,
    ) -> SimMessage:
        """A person (or another bot, with ``bot_id``) writes, as if from a Slack client."""
        if channel not in self._channels:
            raise ValueError(f"unknown channel {channel!r}: call add_channel() first")
        if bot_id is not None:
            self.bots.setdefault(
                bot_id, {"id": bot_id, "name": bot_id, "user_id": user, "deleted": False}
            )
        message = SimMessage(
            channel=channel,
            ts=self._next_ts(),
            user=user,
            bot_id=bot_id,
            text=text,
            thread_ts=self._thread_root(channel, thread_ts),
        )
        return self._store(message)

    # --- inspection --------------------------------------------------------------------------

    def calls_to(self, method: str) -> list[SimCall]:
        return [c for c in self.calls if c.method == method]

    def message(self, channel: str, ts: str) -> SimMessage:
        try:
            return self._messages[(channel, ts)]
        except KeyError:
            raise KeyError(f"no message {ts} in {channel}") from None

    def thread(self, channel: str, thread_ts: str) -> list[SimMessage]:
        """The parent and its replies, oldest first."""
        found = [
            m
            for (c, _), m in self._messages.items()
            if c == channel and thread_ts in (m.ts, m.thread_ts)
        ]
        return sorted(found, key=lambda m: ts_key(m.ts))

    def bot_replies(self, channel: str, thread_ts: str) -> list[SimMessage]:
        return [m for m in self.thread(channel, thread_ts) if m.user == self.bot_user_id]

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 (fixed API)
    ) -> None:
        """Return once ``predicate()`` holds; it is re-checked after every call and store change."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(self._describe_timeout(predicate, timeout))
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                continue

    def _describe_timeout(self, predicate: Callable[[], bool], timeout: float) -> str:
        name = getattr(predicate, "__qualname__", repr(predicate))
        recent = sorted(self._messages.values(), key=lambda m: ts_key(m.ts))[-5:]
        lines = [f"{name} still false after {timeout} s. Latest messages:"]
        lines += [f"  {m.channel} {m.ts} {m.user}: {m.visible_text()[:80]!r}" for m in recent]
        lines.append("Latest calls:")
        lines += [f"  {c.method} -> {c.status} {c.error or 'ok'}" for c in self.calls[-5:]]
        return "\n".join(lines)

    # --- store -------------------------------------------------------------------------------

    def _next_ts(self) -> str:
        self._ts_counter += _TS_STEP
        seconds, micros = divmod(self._ts_counter, 1_000_000)
        return f"{_TS_EPOCH + seconds}.{micros:06d}"

    def _thread_root(self, channel: str, thread_ts: str | None) -> str | None:
        """A reply to a reply joins the parent's thread; the parent learns it has a thread."""
        if not thread_ts:
            return None
        parent = self._messages.get((channel, thread_ts))
        if parent is None:
            return thread_ts
        if parent.thread_ts is None:
            parent.thread_ts = parent.ts
        return parent.thread_ts

    def _snapshot(self, message: SimMessage) -> None:
        message.history.append(
            {
                "at": self._clock(),
                "text": message.text,
                "blocks": list(message.blocks),
                "markdown_text": message.markdown_text,
            }
        )

    def _store(self, message: SimMessage) -> SimMessage:
        self._messages[(message.channel, message.ts)] = message
        self._snapshot(message)
        self._changed_now("posted", message)
        return message

    def _changed_now(self, kind: str | None = None, message: SimMessage | None = None) -> None:
        if kind is not None and message is not None:
            for callback in list(self.on_change):
                callback(kind, message)
        self._changed.set()
        self._changed = asyncio.Event()

    # --- HTTP --------------------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if self.latency > 0:
            await asyncio.sleep(self.latency)  # simulated network delay
        params, token = await _read_request(request)
        reply = self._answer(method, params, token)
        self.calls.append(
            SimCall(
                method=method,
                params=params,
                at=self._clock(),
                status=reply.status,
                ok=reply.error is None,
                error=reply.error,
                team_id=self.team_id if token == self.bot_token else "",
                peer=_peer(request),
            )
        )
        self._changed_now()
        headers = {"x-oauth-scopes": ",".join(self.scopes), **reply.headers}
        if reply.body is None:
            return web.Response(status=reply.status, text="Internal Server Error", headers=headers)
        return web.json_response(reply.body, status=reply.status, headers=headers)

    def _answer(self, method: str, params: JsonDict, token: str | None) -> _Reply:
        """Order of checks: known method, token, injected failure, rate limit, the method."""
        handler = self._handlers.get(method)
        if handler is None:
            return _Reply(404, {"ok": False, "error": "unknown_method"})
        if method == "apps.connections.open" and token == self.app_token:
            return _Reply(200, {"ok": True, "url": self._socket_url})
        if not token:
            return _error("not_authed")
        if token != self.bot_token:
            return _error("invalid_auth")
        queued = self.fail_next.get(method)
        failure = queued.pop(0) if queued else None
        if failure is not None and failure != LOST_RESPONSE:
            return _error(failure)
        wait = self._take_token(method)
        if wait > 0:
            retry_after = str(max(1, math.ceil(wait)))
            return _Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": retry_after})
        try:
            reply = _Reply(200, {"ok": True, **handler(params)})
        except _ApiError as exc:
            return _error(exc.error)
        # The call took effect, but its answer is lost on the way back (a proxy timing out).
        return _error("http_500") if failure == LOST_RESPONSE else reply

    def _take_token(self, method: str) -> float:
        """0.0 when the call may go, else the seconds until it could (the bot's own bucket)."""
        limit = self._limits.get(method)
        if limit is None:
            return 0.0
        per_minute, burst = limit
        now = self._clock()
        bucket = self._buckets.setdefault((self.team_id, method), TokenBucket.full(burst, now))
        return bucket.take(now, per_minute=per_minute, burst=burst)

    # --- validation --------------------------------------------------------------------------

    def _channel(self, channel: Any, *, post: bool = False) -> str:
        member = self._channels.get(str(channel or ""))
        if member is None:
            raise _ApiError("channel_not_found")
        if post and not member:
            raise _ApiError("not_in_channel")
        return str(channel)

    def _content(self, p: JsonDict) -> tuple[str | None, list[JsonDict] | None, str | None]:
        """Validated (text, blocks, markdown_text); None means the argument was not passed.

        An empty ``text`` or ``blocks`` does not count as content nor as a markdown conflict.
        """
        text = None if p.get("text") is None else str(p["text"])
        blocks = None if p.get("blocks") is None else self._check_blocks(p["blocks"])
        markdown = p.get("markdown_text") or None
        if markdown is not None and (text or blocks):
            raise _ApiError("markdown_text_conflict")
        if not (text or blocks or markdown):
            raise _ApiError("no_text")
        if len(text or "") > self.text_limit or len(markdown or "") > self.markdown_limit:
            raise _ApiError("msg_too_long")
        return text, blocks, markdown

    def _check_blocks(self, blocks: Any) -> list[JsonDict]:
        if not isinstance(blocks, list):
            raise _ApiError("invalid_blocks_format")
        if len(blocks) > MAX_BLOCKS:
            raise _ApiError("invalid_blocks")
        for block in blocks:
            _check_block(block)
        total = sum(len(t) for b in blocks for t in _block_texts(b))
        markdown_total = sum(len(_text_of(b)) for b in blocks if b["type"] == "markdown")
        if total > self.blocks_text_limit or markdown_total > self.markdown_limit:
            raise _ApiError("msg_blocks_too_long")
        return blocks

    def _own_message(self, p: JsonDict, refusal: str) -> SimMessage:
        channel = self._channel(p.get("channel"))
        message = self._messages.get((channel, str(p.get("ts") or "")))
        if message is None:
            raise _ApiError("message_not_found")
        if message.user != self.bot_user_id:
            raise _ApiError(refusal)
        return message

    def _render(self, m: SimMessage, *, with_metadata: bool = False) -> JsonDict:
        """A message as the Web API returns it; markdown_text comes back as a markdown block,
        and metadata only when asked for (`include_all_metadata`)."""
        out: JsonDict = {
            "type": "message",
            "ts": m.ts,
            "text": m.text or m.markdown_text or "",
            "team": self.team_id,
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
        }
        out.update({k: v for k, v in optional.items() if v})
        if with_metadata and m.metadata:
            out["metadata"] = m.metadata
        return out

    # --- methods -----------------------------------------------------------------------------

    def _auth_test(self, p: JsonDict) -> JsonDict:
        return {
            "url": "https://sim.slack.invalid/",
            "team": "Simulated Workspace",
            "user": self.users[self.bot_user_id]["name"],
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, p: JsonDict) -> JsonDict:
        channel = self._channel(p.get("channel"), post=True)
        text, blocks, markdown = self._content(p)
        message = SimMessage(
            channel=channel,
            ts=self._next_ts(),
            user=self.bot_user_id,
            bot_id=self.bot_id,
            text=text or "",
            blocks=blocks or [],
            markdown_text=markdown,
            thread_ts=self._thread_root(channel, p.get("thread_ts")),
            metadata=_metadata(p.get("metadata")),
        )
        self._store(message)
        return {"channel": channel, "ts": message.ts, "message": self._render(message)}

    def _chat_update(self, p: JsonDict) -> JsonDict:
        """Passed fields replace stored ones (``blocks=[]`` clears them; text-only keeps blocks).

        ``markdown_text`` excludes ``text`` and ``blocks``, so passing it clears both, and
        passing either of them drops a previous ``markdown_text``.
        """
        message = self._own_message(p, "cant_update_message")
        text, blocks, markdown = self._content(p)
        if markdown is not None:
            message.text, message.blocks, message.markdown_text = "", [], markdown
        else:
            message.text = message.text if text is None else text
            message.blocks = message.blocks if blocks is None else blocks
            message.markdown_text = None
        if p.get("metadata") is not None:  # omitted, the message keeps its metadata
            message.metadata = _metadata(p["metadata"]) or None
        message.edited = True
        self._snapshot(message)
        self._changed_now("updated", message)
        return {
            "channel": message.channel,
            "ts": message.ts,
            "text": message.text,
            "message": self._render(message),
        }

    def _chat_delete(self, p: JsonDict) -> JsonDict:
        message = self._own_message(p, "cant_delete_message")
        del self._messages[(message.channel, message.ts)]
        self._changed_now("deleted", message)
        return {"channel": message.channel, "ts": message.ts}

    def _chat_post_ephemeral(self, p: JsonDict) -> JsonDict:
        channel = self._channel(p.get("channel"), post=True)
        if not p.get("user"):
            raise _ApiError("user_not_in_channel")
        text, blocks, markdown = self._content(p)
        ts = self._next_ts()
        self.ephemerals.append(
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
        channel = self._channel(p.get("channel"))
        root = self._messages.get((channel, str(p.get("ts") or "")))
        if root is None:
            raise _ApiError("thread_not_found")
        inside = _window(p)
        messages = [m for m in self.thread(channel, root.thread_ts or root.ts) if inside(m.ts)]
        start = _cursor_index(p.get("cursor"), messages)
        limit = min(max(int(p.get("limit") or MAX_PAGE), 1), MAX_PAGE)
        page, rest = messages[start : start + limit], messages[start + limit :]
        next_cursor = _encode_cursor(rest[0].ts) if rest else ""
        with_metadata = _flag(p.get("include_all_metadata"))
        return {
            "messages": [self._render(m, with_metadata=with_metadata) for m in page],
            "has_more": bool(rest),
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _users_info(self, p: JsonDict) -> JsonDict:
        user = self.users.get(str(p.get("user") or ""))
        if user is None:
            raise _ApiError("user_not_found")
        return {"user": user}

    def _bots_info(self, p: JsonDict) -> JsonDict:
        bot = self.bots.get(str(p.get("bot") or ""))
        if bot is None:
            raise _ApiError("bot_not_found")
        return {"bot": bot}

    def _set_status(self, p: JsonDict) -> JsonDict:
        channel = self._channel(p.get("channel_id"))
        thread_ts = str(p.get("thread_ts") or "")
        if not thread_ts:
            raise _ApiError("invalid_thread_ts")
        self.statuses.append((channel, thread_ts, str(p.get("status") or "")))
        return {}

    def _apps_connections_open(self, p: JsonDict) -> JsonDict:
        """Only reached with a bot token (the app token is answered in `_answer`)."""
        raise _ApiError("not_allowed_token_type")

    # --- Socket Mode -------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        """Slack's Socket Mode WebSocket: `hello`, then envelopes out and acks in."""
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets),
                "connection_info": {"app_id": "A0001"},
            }
        )
        self._changed_now()
        try:
            async for frame in ws:
                if frame.type != web.WSMsgType.TEXT:
                    continue
                message = json.loads(frame.data)
                if isinstance(message, dict) and message.get("envelope_id"):
                    self.socket_acks.append(str(message["envelope_id"]))
                    self._changed_now()
        finally:
            self._sockets.remove(ws)
            self._changed_now()
        return ws

    @property
    def socket_connections(self) -> int:
        return len(self._sockets)

    async def push_socket(self, payload: JsonDict, *, kind: str = "events_api") -> str:
        """Deliver an Events API envelope (or `kind="interactive"` payload) over the newest
        Socket Mode connection; returns its envelope id, which the bot must acknowledge."""
        if not self._sockets:
            raise RuntimeError("no Socket Mode connection is open")
        self._ts_counter += 1
        envelope_id = f"env-{self._ts_counter}"
        await self._sockets[-1].send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": False,
                "retry_attempt": 0,
                "retry_reason": "",
            }
        )
        return envelope_id


def _check_block(block: Any) -> None:
    """Structural checks Slack answers with ``invalid_blocks``."""
    if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
        raise _ApiError("invalid_blocks")
    kind = block["type"]
    if kind == "markdown" and not isinstance(block.get("text"), str):
        raise _ApiError("invalid_blocks")
    if kind == "section":
        text = _text_of(block.get("text"))
        if not (text or block.get("fields")) or len(text) > SECTION_TEXT_LIMIT:
            raise _ApiError("invalid_blocks")
    if kind == "header" and not 0 < len(_text_of(block.get("text"))) <= HEADER_TEXT_LIMIT:
        raise _ApiError("invalid_blocks")
    if kind in ("actions", "context"):
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            raise _ApiError("invalid_blocks")
        if not all(isinstance(e, dict) and e.get("type") for e in elements):
            raise _ApiError("invalid_blocks")


def _bound(p: JsonDict, name: str) -> tuple[int, int] | None:
    if p.get(name) in (None, ""):
        return None
    bound = parse_ts(str(p[name]))
    if bound is None:
        raise _ApiError(f"invalid_ts_{name}")
    return bound


def _window(p: JsonDict) -> Callable[[str], bool]:
    """The ``oldest``/``latest`` bounds of conversations.replies, exclusive unless ``inclusive``."""
    oldest, latest, inclusive = _bound(p, "oldest"), _bound(p, "latest"), _flag(p.get("inclusive"))

    def inside(ts: str) -> bool:
        key = ts_key(ts)
        if oldest is not None and (key < oldest or (key == oldest and not inclusive)):
            return False
        return latest is None or key < latest or (key == latest and inclusive)

    return inside


def _encode_cursor(ts: str) -> str:
    return base64.b64encode(f"next_ts:{ts}".encode()).decode()


def _cursor_index(cursor: Any, messages: list[SimMessage]) -> int:
    """Index of the first message of the page a cursor points at (0 without a cursor)."""
    if not cursor:
        return 0
    try:
        label, _, ts = base64.b64decode(str(cursor), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise _ApiError("invalid_cursor") from None
    key = parse_ts(ts)
    if label != "next_ts" or key is None:
        raise _ApiError("invalid_cursor")
    return next((i for i, m in enumerate(messages) if ts_key(m.ts) >= key), len(messages))

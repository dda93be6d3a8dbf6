"""What a request to ``POST /slack/events`` must be before the bot acts on it.

Anyone can reach the endpoint, so every request is hostile until proven Slack's, and every
refusal is a 4xx with one log line, never a traceback:

1. ``authenticate``: Slack's v0 signature, checked once, over the raw bytes, before anything
   reads the body: exactly one timestamp header (digits, within five minutes either way) and
   exactly one signature header (``v0=`` and 64 hex digits), compared with
   ``hmac.compare_digest``. Without a signing secret nothing is accepted.
2. ``read_body``: a signed body must still be what the bot and Bolt can read without raising:
   UTF-8; a JSON object (Events API) or a form with one ``payload`` that is a JSON object
   (interactivity); and the fields Bolt and the listeners look at must have Slack's types.
   A signed interaction the bot has no listener for is acknowledged and dropped: nothing is
   called for it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from multidict import MultiMapping

from bot.render import STOP_ACTION_ID

TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"
MAX_SKEW_SECONDS = 300  # Slack's replay window
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
# The interactions `handlers.register_listeners` answers; keep the two in step.
KNOWN_ACTIONS = frozenset({STOP_ACTION_ID})
KNOWN_VIEWS: frozenset[str] = frozenset()  # callback_ids of the modals whose submissions it takes

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
_SLACK_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,9}")
# Fields Bolt reads as an ID, or as an object holding one ("team": "T1" or {"id": "T1"}).
_ID_OR_OBJECT = ("enterprise", "team", "user", "channel")
_IDS = (
    "team_id",
    "enterprise_id",
    "user_id",
    "channel_id",
    "thread_ts",
    "user_team",
    "context_team_id",
    "context_enterprise_id",
    "function_execution_id",
    "bot_access_token",
    "response_url",
    "event_id",
    "api_app_id",
)
_EVENT_STRINGS = ("type", "subtype", "text", "bot_id", "channel_type", "event_ts")
# Objects Bolt descends into.
_NESTED = (
    "event",
    "item",
    "message",
    "previous_message",
    "assistant_thread",
    "view",
    "container",
)


@dataclass(frozen=True)
class Refusal:
    """A 4xx: ``reason`` is one line for the log and the response, never the request's data."""

    status: int
    reason: str


@dataclass(frozen=True)
class Accepted:
    """A request to hand to Bolt (``dispatch``), or to acknowledge and drop.

    ``content_type`` is how Bolt must read ``body``: what was validated is what it parses."""

    body: str
    content_type: str
    payload: dict[str, Any]
    dispatch: bool = True


def authenticate(
    headers: MultiMapping[str], body: bytes, secret: str | None, *, now: float
) -> Refusal | None:
    """None when Slack signed exactly this body within the last five minutes."""
    if not secret:
        return Refusal(401, "no signing secret configured")
    timestamps = headers.getall(TIMESTAMP_HEADER, [])
    signatures = headers.getall(SIGNATURE_HEADER, [])
    if not timestamps or not signatures:
        return Refusal(401, "signature headers missing")
    if len(timestamps) > 1 or len(signatures) > 1:
        return Refusal(401, "signature headers repeated")
    timestamp, signature = timestamps[0], signatures[0]
    if not _TIMESTAMP.fullmatch(timestamp):
        return Refusal(401, "malformed timestamp")
    age = now - int(timestamp)
    if age > MAX_SKEW_SECONDS:
        return Refusal(401, "stale timestamp")
    if age < -MAX_SKEW_SECONDS:
        return Refusal(401, "timestamp in the future")
    if not _SIGNATURE.fullmatch(signature):
        return Refusal(401, "malformed signature")
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
        return Refusal(401, "signature mismatch")
    return None


def read_body(
    body: bytes,
    content_type: str,
    *,
    actions: Collection[str] = KNOWN_ACTIONS,
    views: Collection[str] = KNOWN_VIEWS,
) -> Accepted | Refusal:
    """An authenticated body, checked for what the bot and Bolt read (see the module doc)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Refusal(400, "body is not UTF-8")
    if content_type == JSON:
        return _event(text)
    if content_type == FORM:
        return _interaction(text, actions, views)
    return Refusal(415, "body is neither JSON nor a form")


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
        if "\\u" in text:  # a lone surrogate escape parses, then breaks whoever encodes it
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError, UnicodeEncodeError):
        return None
    return value if isinstance(value, dict) else None


def _event(text: str) -> Accepted | Refusal:
    envelope = _json_object(text)
    if envelope is None:
        return Refusal(400, "body is not a JSON object")
    if problem := _shape_problem(envelope):
        return Refusal(400, problem)
    kind = envelope.get("type")
    if kind == "url_verification":
        if not isinstance(envelope.get("challenge"), str):
            return Refusal(400, "url_verification without a challenge")
        return Accepted(text, JSON, envelope)
    if kind == "app_rate_limited":  # Slack telling us it drops events; nothing to answer
        return Accepted(text, JSON, envelope, dispatch=False)
    if kind != "event_callback":
        return Refusal(400, "not a Slack event envelope")
    event = envelope.get("event")
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return Refusal(400, "event_callback without an event")
    if problem := _event_problem(event):
        return Refusal(400, problem)
    return Accepted(text, JSON, envelope)


def _interaction(text: str, actions: Collection[str], views: Collection[str]) -> Accepted | Refusal:
    if text.startswith("{"):
        return Refusal(400, "form body that reads as JSON")  # Bolt would parse it as JSON
    try:
        fields = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return Refusal(400, "malformed form body")
    payloads = [value for name, value in fields if name == "payload"]
    if len(payloads) != 1:
        return Refusal(400, "form body without exactly one payload")
    payload = _json_object(payloads[0])
    if payload is None or not isinstance(payload.get("type"), str):
        return Refusal(400, "payload is not a JSON object with a type")
    if payload["type"] == "view_submission":
        return _submission(text, payload, views)
    clicked = payload.get("actions")
    if not isinstance(clicked, list) or not clicked or not isinstance(clicked[0], dict):
        return Accepted(text, FORM, payload, dispatch=False)  # not a button the bot knows
    first = clicked[0]
    if payload["type"] != "block_actions" or first.get("action_id") not in actions:
        return Accepted(text, FORM, payload, dispatch=False)
    if not isinstance(first.get("value"), str | None):
        return Refusal(400, "action value is not a string")
    user = payload.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str):
        return Refusal(400, "action without a user")
    problem = _shape_problem(payload)
    urls = payload.get("response_urls")
    if urls is not None and not _objects(urls):
        problem = problem or "response_urls is not a list of objects"
    return Refusal(400, problem) if problem else Accepted(text, FORM, payload)


def _submission(text: str, payload: dict[str, Any], views: Collection[str]) -> Accepted | Refusal:
    """A modal's submission: only the bot's own modals, with a user and readable values."""
    view = payload.get("view")
    if not isinstance(view, dict) or view.get("callback_id") not in views:
        return Accepted(text, FORM, payload, dispatch=False)  # not a modal the bot opened
    user = payload.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str):
        return Refusal(400, "submission without a user")
    state = view.get("state")
    if not isinstance(state, dict) or not isinstance(state.get("values"), dict):
        return Refusal(400, "submission without values")
    problem = _shape_problem(payload)
    return Refusal(400, problem) if problem else Accepted(text, FORM, payload)


def _objects(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def _ids_problem(obj: Mapping[str, Any]) -> str | None:
    """Bolt reads these as IDs (or objects with an ``id``) wherever they appear."""
    for name in _ID_OR_OBJECT:
        value = obj.get(name)
        if isinstance(value, dict):
            value = value.get("id")
        if not isinstance(value, str | None):
            return f"{name} is not an ID"
    for name in _IDS:
        if not isinstance(obj.get(name), str | None):
            return f"{name} is not a string"
    return None


def _shape_problem(payload: Mapping[str, Any]) -> str | None:
    """The fields Bolt's request context reads, in the payload and the objects it descends to."""
    authorizations = payload.get("authorizations")
    if authorizations is not None and not _objects(authorizations):
        return "authorizations is not a list of objects"
    for nested in (payload, *(authorizations or [])[:1]):
        if problem := _ids_problem(nested):
            return problem
    if "event" in payload and not isinstance(payload["event"], dict):
        return "event is not an object"  # Bolt reads body.get("event", {}) on every request
    for name in _NESTED:
        value = payload.get(name)
        if value is not None and not isinstance(value, dict):
            return f"{name} is not an object"
        if isinstance(value, dict) and (problem := _ids_problem(value)):
            return f"{name}: {problem}"
    return None


def _event_problem(event: Mapping[str, Any]) -> str | None:
    """What the listeners and admission read of an event must have Slack's types."""
    if problem := _shape_problem(event):
        return f"event {problem}"
    for name in _EVENT_STRINGS:
        if not isinstance(event.get(name), str | None):
            return f"event {name} is not a string"
    for name in ("ts", "thread_ts"):
        value = event.get(name)
        if value is not None and not (isinstance(value, str) and _SLACK_TS.fullmatch(value)):
            return f"event {name} is not a Slack timestamp"
    return None

"""The simulated Slack's surfaces beyond messages: the app's Home tab (`views.publish`),
modals (`views.open`), and what a person does with them or with a message's feedback buttons,
as the payloads Slack would send the app (`app_home_opened`, `block_actions`,
`view_submission`).

Arguments and error names follow Slack's method metadata for `views.publish` and `views.open`
(slack-ruby/slack-api-ref, `docs.slack.dev/methods/views.*.json`; when that reference is laid
beside the checkout, `tests/test_sim_views.py` checks the two agree): `user_id` and `view` (a
`home` view) for publishing; `trigger_id` (single use, valid 3 seconds) and a `modal` view for
opening. What is checked of a view: its type, title and buttons' lengths, at most 100 blocks of
known types with unique block IDs, input blocks with a label and an element, and its size
(`view_too_large` past 250 KB).
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.sim.slack_payloads import ApiError, JsonDict, check_block, text_of
from bot.sim.slack_workspace import SimMessage, Workspace

Handler = Callable[[JsonDict], JsonDict]

MAX_VIEW_BLOCKS = 100
MAX_VIEW_BYTES = 250 * 1024
TITLE_LIMIT = 24
BUTTON_TEXT_LIMIT = 75
VALUE_LIMIT = 2000
ACTION_ID_LIMIT = 255
TRIGGER_SECONDS = 3.0  # a trigger_id must be exchanged within this long
INPUT_ELEMENTS = frozenset(
    {
        "plain_text_input",
        "conversations_select",
        "channels_select",
        "users_select",
        "static_select",
        "checkboxes",
        "radio_buttons",
        "number_input",
    }
)


@dataclass
class Trigger:
    user: str
    issued_at: float
    used: bool = False


@dataclass
class OpenModal:
    """A modal a person has open."""

    id: str
    user: str
    view: JsonDict
    submissions: list[JsonDict] = field(default_factory=list)


def _view_argument(raw: Any) -> JsonDict:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ApiError("invalid_arguments") from None
    if not isinstance(raw, dict):
        raise ApiError("invalid_arguments")
    return raw


def _plain_text(obj: Any, limit: int) -> bool:
    return (
        isinstance(obj, dict) and obj.get("type") == "plain_text" and 0 < len(text_of(obj)) <= limit
    )


def _check_element(element: Any) -> None:
    """An interactive element's own limits (buttons, text inputs, selects)."""
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        raise ApiError("invalid_arguments")
    action_id = element.get("action_id")
    if action_id is not None and (
        not isinstance(action_id, str) or len(action_id) > ACTION_ID_LIMIT
    ):
        raise ApiError("invalid_arguments")
    if element["type"] == "button":
        if not _plain_text(element.get("text"), BUTTON_TEXT_LIMIT):
            raise ApiError("invalid_arguments")
        if len(str(element.get("value") or "")) > VALUE_LIMIT:
            raise ApiError("invalid_arguments")
    if element["type"] == "plain_text_input":
        initial = element.get("initial_value")
        most = element.get("max_length", 3000)
        if not isinstance(most, int) or not 1 <= most <= 3000:
            raise ApiError("invalid_arguments")
        if initial is not None and (not isinstance(initial, str) or len(initial) > most):
            raise ApiError("invalid_arguments")


def check_view(view: JsonDict, kind: str) -> None:
    """What Slack refuses in a view of `kind` ("home" or "modal")."""
    if view.get("type") != kind:
        raise ApiError("invalid_arguments")
    if len(json.dumps(view).encode()) > MAX_VIEW_BYTES:
        raise ApiError("view_too_large")
    blocks = view.get("blocks")
    if not isinstance(blocks, list) or not blocks or len(blocks) > MAX_VIEW_BLOCKS:
        raise ApiError("invalid_arguments")
    block_ids = [b.get("block_id") for b in blocks if isinstance(b, dict) and b.get("block_id")]
    if len(block_ids) != len(set(block_ids)):
        raise ApiError("invalid_arguments")  # Slack: "duplicate block_id"
    for block in blocks:
        try:
            if block.get("type") != "input":
                check_block(block)
        except ApiError:
            raise ApiError("invalid_arguments") from None
        if block.get("type") == "input":
            if not _plain_text(block.get("label"), 2000) or kind != "modal":
                raise ApiError("invalid_arguments")
            element = block.get("element")
            if not isinstance(element, dict) or element.get("type") not in INPUT_ELEMENTS:
                raise ApiError("invalid_arguments")
            _check_element(element)
        if block.get("accessory") is not None:
            _check_element(block["accessory"])
        for element in block.get("elements") or [] if block.get("type") == "actions" else []:
            _check_element(element)
    if kind == "modal":
        if not _plain_text(view.get("title"), TITLE_LIMIT):
            raise ApiError("invalid_arguments")
        has_input = any(b.get("type") == "input" for b in blocks)
        if has_input and not _plain_text(view.get("submit"), TITLE_LIMIT):
            raise ApiError("invalid_arguments")


class Views:
    """Home tabs and modals of one workspace's people, and the triggers that open modals."""

    def __init__(
        self, workspace: Workspace, *, clock: Callable[[], float], home_enabled: bool = True
    ) -> None:
        self.workspace = workspace
        self.home_enabled = home_enabled
        self.homes: dict[str, JsonDict] = {}  # user -> the Home tab they see now
        self.published: list[tuple[str, JsonDict]] = []  # every views.publish, in order
        self.modals: dict[str, OpenModal] = {}
        self._triggers: dict[str, Trigger] = {}
        self._clock = clock
        self._ids = itertools.count(1)

    def handlers(self) -> dict[str, Handler]:
        return {"views.publish": self._publish, "views.open": self._open}

    # --- the methods ---------------------------------------------------------------------

    def _publish(self, p: JsonDict) -> JsonDict:
        user, raw = p.get("user_id"), p.get("view")
        if not user or raw is None:
            raise ApiError("invalid_arguments")
        if str(user) not in self.workspace.users:
            raise ApiError("invalid_arguments")  # Slack: "invalid `user_id`"
        view = _view_argument(raw)
        check_view(view, "home")
        if not self.home_enabled:
            raise ApiError("not_enabled")
        stored = self._stored(view)
        self.homes[str(user)] = stored
        self.published.append((str(user), stored))
        self.workspace.notify()
        return {"view": stored}

    def _open(self, p: JsonDict) -> JsonDict:
        trigger_id, raw = p.get("trigger_id"), p.get("view")
        if not trigger_id or raw is None:
            raise ApiError("invalid_arguments")
        trigger = self._triggers.get(str(trigger_id))
        if trigger is None:
            raise ApiError("invalid_trigger_id")
        if trigger.used:
            raise ApiError("exchanged_trigger_id")
        if self._clock() - trigger.issued_at > TRIGGER_SECONDS:
            raise ApiError("expired_trigger_id")
        view = _view_argument(raw)
        check_view(view, "modal")
        trigger.used = True
        stored = self._stored(view)
        self.modals[stored["id"]] = OpenModal(stored["id"], trigger.user, stored)
        self.workspace.notify()
        return {"view": stored}

    def _stored(self, view: JsonDict) -> JsonDict:
        return {
            **view,
            "id": f"V{next(self._ids):08d}",
            "team_id": self.workspace.team_id,
            "state": {"values": {}},
            "hash": f"{self._clock():.6f}.{secrets.token_hex(4)}",
            "app_id": "A0001",
            "bot_id": self.workspace.bot_id,
        }

    # --- what people do --------------------------------------------------------------------

    def issue_trigger(self, user: str) -> str:
        """A trigger_id, as Slack puts in an interaction payload."""
        trigger_id = f"{next(self._ids)}.{int(self._clock())}.{secrets.token_hex(8)}"
        self._triggers[trigger_id] = Trigger(user, self._clock())
        return trigger_id

    def home_opened(self, user: str, *, tab: str = "home", event_id: str | None = None) -> JsonDict:
        """The `app_home_opened` event callback Slack sends when `user` opens the app."""
        ws = self.workspace
        event: JsonDict = {
            "type": "app_home_opened",
            "user": user,
            "channel": f"D{user[1:]}",
            "tab": tab,
            "event_ts": f"{time.time():.6f}",
        }
        if user in self.homes:
            event["view"] = self.homes[user]
        return {
            "token": "sim-verification-token",
            "team_id": ws.team_id,
            "api_app_id": "A0001",
            "event": event,
            "type": "event_callback",
            "event_id": event_id or "Ev" + secrets.token_hex(5).upper(),
            "event_time": int(time.time()),
            "authorizations": [{"team_id": ws.team_id, "user_id": ws.bot_user_id, "is_bot": True}],
        }

    def click_in_home(self, user: str, action_id: str, value: str | None = None) -> JsonDict:
        """`user` clicks the button `action_id` (the one carrying `value`, if given) on their
        Home tab: the `block_actions` payload, with a fresh trigger_id. KeyError if their Home
        tab has no such button."""
        view = self.homes[user]
        for block in view.get("blocks") or []:
            for element in _elements(block):
                if element.get("type") != "button" or element.get("action_id") != action_id:
                    continue
                if value is not None and (element.get("value") or "") != value:
                    continue
                action = {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block.get("block_id") or "b",
                    "value": element.get("value") or "",
                    "text": element.get("text"),
                }
                return self._block_actions(
                    user, {"type": "view", "view_id": view["id"]}, action, view=view
                )
        raise KeyError(f"no button {action_id!r} ({value!r}) in {user}'s Home tab")

    def click_feedback(self, user: str, message: SimMessage, vote: str) -> JsonDict:
        """`user` clicks 👍 (`vote` "positive") or 👎 ("negative") on a message."""
        element = feedback_element(message)
        if element is None:
            raise KeyError(f"message {message.ts} has no feedback buttons")
        button = element["positive_button" if vote == "positive" else "negative_button"]
        return self._block_actions(
            user,
            {
                "type": "message",
                "message_ts": message.ts,
                "channel_id": message.channel,
                "is_ephemeral": False,
            },
            {
                "type": "feedback_buttons",
                "action_id": element.get("action_id") or "",
                "block_id": "feedback",
                "value": button["value"],
                "text": button["text"],
            },
            channel=message.channel,
            message={"type": "message", "ts": message.ts, "blocks": message.blocks},
        )

    def submit(self, view_id: str, user: str, values: dict[str, JsonDict]) -> JsonDict:
        """`user` submits the open modal `view_id` with `values` (block_id -> the element's
        state, e.g. {"model": {"type": "plain_text_input", "value": "x"}}): the
        `view_submission` payload. Each block's state is keyed by its element's action_id."""
        modal = self.modals[view_id]
        state: dict[str, JsonDict] = {}
        for block in modal.view.get("blocks") or []:
            block_id, element = block.get("block_id"), block.get("element") or {}
            if block.get("type") == "input" and block_id in values:
                state[str(block_id)] = {str(element.get("action_id")): values[block_id]}
        view = {**modal.view, "state": {"values": state}}
        modal.submissions.append(view)
        return forged_submission(self.workspace.team_id, user, view)

    def _block_actions(
        self,
        user: str,
        container: JsonDict,
        action: JsonDict,
        *,
        channel: str | None = None,
        message: JsonDict | None = None,
        view: JsonDict | None = None,
    ) -> JsonDict:
        payload: JsonDict = {
            "type": "block_actions",
            "token": "sim-verification-token",
            "api_app_id": "A0001",
            "team": {"id": self.workspace.team_id, "domain": "sim"},
            "user": {"id": user, "username": user, "name": user, "team_id": self.workspace.team_id},
            "container": container,
            "trigger_id": self.issue_trigger(user),
            "actions": [{**action, "action_ts": f"{time.time():.6f}"}],
            "state": {"values": {}},
        }
        if channel is not None:
            payload["channel"] = {"id": channel, "name": channel}
        if message is not None:
            payload["message"] = message
        if view is not None:
            payload["view"] = view
        return payload


def forged_submission(team_id: str, user: str, view: JsonDict) -> JsonDict:
    """A `view_submission` payload for `view` (with its state) from `user`, as Slack sends it;
    also what a forger would send for a modal they never had."""
    return {
        "type": "view_submission",
        "token": "sim-verification-token",
        "api_app_id": "A0001",
        "team": {"id": team_id, "domain": "sim"},
        "user": {"id": user, "username": user, "name": user, "team_id": team_id},
        "trigger_id": f"{int(time.time())}.{secrets.token_hex(8)}",
        "view": view,
        "response_urls": [],
        "is_enterprise_install": False,
    }


def _elements(block: JsonDict) -> list[JsonDict]:
    elements = [e for e in block.get("elements") or [] if isinstance(e, dict)]
    if isinstance(block.get("accessory"), dict):
        elements.append(block["accessory"])
    return elements


def feedback_element(message: SimMessage) -> JsonDict | None:
    """The message's `feedback_buttons` element, or None."""
    for block in message.blocks:
        if block.get("type") == "context_actions":
            for element in block.get("elements") or []:
                if isinstance(element, dict) and element.get("type") == "feedback_buttons":
                    return element
    return None

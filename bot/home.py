"""The app's Home tab and the channel settings modal (pure: views in, views out).

Everyone's Home tab shows their own usage today and this month, against the budgets that are
set. Workspace admins also see the admin section (block IDs starting with `admin-`): each
channel's settings with the override set from Slack (who changed it, and when), a button that
opens the modal to set a channel's prompt and model, and this month's top channels and people.
Non-admins' views never contain it, and the app refuses a submission of the modal from anyone
who is not an admin (a forged request is refused the same way).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.models.blocks import (
    ButtonElement,
    ContextBlock,
    ConversationFilter,
    ConversationSelectElement,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.budgets import Budgets, Period, spent_line
from bot.channels import CHANNEL_ID, MODEL_ID, ChannelSettings
from bot.render.tokens import escape_mrkdwn
from bot.store import ChannelOverride, Spend, SpendView, UsageCell

OPEN_SETTINGS_ACTION = "channel_settings_open"  # button: value is a channel ID, or "" to pick one
SETTINGS_CALLBACK = "channel_settings"  # the modal's callback_id
ADMIN_PREFIX = "admin-"  # every block of the admin section has a block_id starting with this
PROMPT_LIMIT = 3000  # Slack's plain_text_input max_length
MAX_LISTED_OVERRIDES = 30
MAX_LISTED_FILE_CHANNELS = 20
TOP = 10
_EXCERPT = 140


@dataclass(frozen=True)
class AdminFacts:
    """What the admin section shows."""

    defaults: ChannelSettings  # what a channel gets from the file's defaults and the environment
    file_path: str
    file_channels: Mapping[str, ChannelSettings] = field(default_factory=dict)
    overrides: Mapping[str, ChannelOverride] = field(default_factory=dict)
    cells: Iterable[UsageCell] = ()  # this month's usage, for the top lists
    zone: datetime.tzinfo = datetime.UTC


@dataclass(frozen=True)
class HomeFacts:
    user: str
    period: Period
    budgets: Budgets
    spend: SpendView | None  # None: the store could not be read
    admin: AdminFacts | None = None  # None: not an admin (no admin section at all)


def _md(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text)


def _excerpt(text: str, limit: int = _EXCERPT) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1].rstrip() + "…"


def _when(at: float, zone: datetime.tzinfo) -> str:
    moment = datetime.datetime.fromtimestamp(at, zone)
    return f"{moment:%Y-%m-%d %H:%M} {'UTC' if zone is datetime.UTC else zone}"


def home_view(facts: HomeFacts) -> dict[str, Any]:
    """The Home tab of `facts.user`."""
    period = facts.period
    blocks: list[Any] = [HeaderBlock(text="Your Claude usage")]
    if facts.spend is None:
        blocks.append(SectionBlock(text=_md("Usage can't be read right now; try again later.")))
    else:
        month_name = f"{period.now:%B %Y}"
        blocks.append(
            SectionBlock(
                block_id="usage",
                text=_md(
                    f"*Today* ({period.day}): {spent_line(facts.spend.user_day)}\n"
                    f"*This month* ({month_name}): {spent_line(facts.spend.user_month)}"
                ),
            )
        )
        budget_lines = facts.budgets.status(facts.spend)
        if budget_lines:
            blocks.append(ContextBlock(block_id="budgets", elements=[_md("\n".join(budget_lines))]))
    if facts.admin is not None:
        blocks += admin_blocks(facts.admin)
    return View(type="home", callback_id="home", blocks=blocks).to_dict()


def admin_blocks(admin: AdminFacts) -> list[Any]:
    """The admin section: channel settings and the month's top channels and people."""
    source = f"`{escape_mrkdwn(admin.file_path)}`" if admin.file_path else "no settings file"
    blocks: list[Any] = [
        DividerBlock(block_id=f"{ADMIN_PREFIX}divider"),
        HeaderBlock(block_id=f"{ADMIN_PREFIX}header", text="Channel settings (admins only)"),
        SectionBlock(
            block_id=f"{ADMIN_PREFIX}explain",
            text=_md(
                f"Answers follow the environment and {source}; a prompt or model set here "
                "sits on top of them for one channel. "
                f"By default: model `{escape_mrkdwn(admin.defaults.model)}`, "
                f"up to {admin.defaults.max_tokens:,} output tokens."
            ),
            accessory=ButtonElement(
                text="Set a channel's settings", action_id=OPEN_SETTINGS_ACTION, value=""
            ),
        ),
    ]
    overrides = sorted(admin.overrides.items(), key=lambda item: -item[1].at)
    for channel, override in overrides[:MAX_LISTED_OVERRIDES]:
        parts = []
        if override.model:
            parts.append(f"model `{escape_mrkdwn(override.model)}`")
        if override.system_prompt:
            parts.append(f"prompt “{escape_mrkdwn(_excerpt(override.system_prompt))}”")
        changed = f"changed by <@{override.by}> on {_when(override.at, admin.zone)}"
        blocks.append(
            SectionBlock(
                block_id=f"{ADMIN_PREFIX}override-{channel}",
                text=_md(f"*<#{channel}>* (set in Slack): {' · '.join(parts)}\n_{changed}_"),
                accessory=ButtonElement(text="Edit", action_id=OPEN_SETTINGS_ACTION, value=channel),
            )
        )
    file_only = [c for c in sorted(admin.file_channels) if c not in admin.overrides]
    if file_only:
        lines = [
            f"<#{c}> (file): model `{escape_mrkdwn(admin.file_channels[c].model)}`"
            for c in file_only[:MAX_LISTED_FILE_CHANNELS]
        ]
        blocks.append(
            ContextBlock(block_id=f"{ADMIN_PREFIX}file-channels", elements=[_md("\n".join(lines))])
        )
    cells = list(admin.cells)
    for title, key, mention in (
        ("This month's top channels", "channel", "<#{}>"),
        ("This month's top people", "user", "<@{}>"),
    ):
        ranked = top(cells, key)
        if not ranked:
            continue
        lines = [
            f"{i}. {mention.format(who)}: {spent_line(spend)}"
            for i, (who, spend) in enumerate(ranked, start=1)
        ]
        blocks.append(HeaderBlock(block_id=f"{ADMIN_PREFIX}top-{key}-header", text=title))
        blocks.append(SectionBlock(block_id=f"{ADMIN_PREFIX}top-{key}", text=_md("\n".join(lines))))
    return blocks


def top(cells: Iterable[UsageCell], key: str, limit: int = TOP) -> list[tuple[str, Spend]]:
    """The biggest spenders by `key` ("channel" or "user"), by cost, then tokens."""
    totals: dict[str, tuple[int, int, int]] = {}
    for cell in cells:
        who = getattr(cell, key)
        answers, tokens, cost = totals.get(who, (0, 0, 0))
        counts = cell.counts
        cell_tokens = sum(
            counts.get(name, 0)
            for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
        )
        totals[who] = (
            answers + counts.get("answers", 0),
            tokens + cell_tokens,
            cost + counts.get("cost_micros", 0),
        )
    ranked = sorted(totals.items(), key=lambda item: (-item[1][2], -item[1][1], item[0]))
    return [(who, Spend(*numbers)) for who, numbers in ranked[:limit] if numbers[0]]


# -- the channel settings modal --------------------------------------------------------------


def settings_modal(channel: str, override: ChannelOverride | None) -> dict[str, Any]:
    """The modal an admin sets a channel's prompt and model in ("" channel: pick one)."""
    current = override or ChannelOverride()
    return View(
        type="modal",
        callback_id=SETTINGS_CALLBACK,
        title="Channel settings",
        submit="Save",
        close="Cancel",
        blocks=[
            InputBlock(
                block_id="channel",
                label="Channel",
                element=ConversationSelectElement(
                    action_id="channel",
                    placeholder="Pick a channel",
                    initial_conversation=channel or None,
                    filter=ConversationFilter(
                        include=["public", "private"], exclude_bot_users=True
                    ),
                ),
            ),
            InputBlock(
                block_id="model",
                label="Model",
                optional=True,
                hint="Empty: the settings file's or the environment's model.",
                element=PlainTextInputElement(
                    action_id="model",
                    placeholder="e.g. claude-opus-5",
                    initial_value=current.model or None,
                    max_length=128,
                ),
            ),
            InputBlock(
                block_id="prompt",
                label="System prompt",
                optional=True,
                hint="Replaces the system prompt in this channel. Empty: the settings "
                "file's or the environment's prompt.",
                element=PlainTextInputElement(
                    action_id="prompt",
                    multiline=True,
                    initial_value=current.system_prompt or None,
                    max_length=PROMPT_LIMIT,
                ),
            ),
            ContextBlock(
                elements=[
                    _md(
                        "Leave both empty to remove this channel's override. Changes apply "
                        "to the next question asked in the channel."
                    )
                ]
            ),
        ],
    ).to_dict()


@dataclass(frozen=True)
class Submission:
    channel: str
    model: str
    system_prompt: str

    @property
    def clears(self) -> bool:
        return not self.model and not self.system_prompt


def read_submission(view: object) -> Submission | dict[str, str]:
    """The modal's values, or Slack's per-block errors (`response_action: errors`)."""
    values: Mapping[str, Any] = {}
    if isinstance(view, dict) and isinstance(view.get("state"), dict):
        values = view["state"].get("values") or {}

    def field_value(block: str, key: str) -> str:
        element = (values.get(block) or {}).get(block) or {}
        raw = element.get(key) if isinstance(element, dict) else None
        return raw.strip() if isinstance(raw, str) else ""

    channel = field_value("channel", "selected_conversation")
    model = field_value("model", "value")
    prompt = field_value("prompt", "value")
    errors = {}
    if not CHANNEL_ID.fullmatch(channel):
        errors["channel"] = "Pick a channel."
    if model and not MODEL_ID.fullmatch(model):
        errors["model"] = "That is not a model ID (like claude-sonnet-5-5)."
    if len(prompt) > PROMPT_LIMIT:
        errors["prompt"] = f"At most {PROMPT_LIMIT:,} characters."
    return errors or Submission(channel, model, prompt)

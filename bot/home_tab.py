"""The Home tab's Slack side: publishing each person's tab, and the admins' channel settings
form (open it, check and store what was submitted).

The views themselves are built by `home` (pure); this module does the calls around them, so
the bot's core (`app`) stays about answering questions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anthropic

from bot import home
from bot.budgets import Budgets, Calendar
from bot.channels import ChannelDirectory
from bot.slackapi import SlackCalls, SlackFailure
from bot.store import ChannelOverride, SpendView, Store, StoreError

log = logging.getLogger(__name__)

# How long a model named in the channel settings modal is looked up at Claude (the modal's
# answer must reach Slack within 3 s); a lookup that fails otherwise accepts the name.
MODEL_LOOKUP_SECONDS = 1.5


class HomeTab:
    """The Home tab and the channel settings form. Slack's ack must go out at once, so work
    the listeners start runs through `in_background` (tracked by the bot, drained at
    shutdown); a missing team id falls back to the bot's own (`default_team`)."""

    def __init__(
        self,
        *,
        slack: SlackCalls,
        store: Store,
        claude: anthropic.AsyncAnthropic,
        channels: ChannelDirectory,
        calendar: Calendar,
        budgets: Budgets,
        in_background: Callable[[Awaitable[object], str], None],
        default_team: Callable[[], str],
    ) -> None:
        self.slack = slack
        self.store = store
        self.claude = claude
        self.channels = channels
        self.calendar = calendar
        self.budgets = budgets
        self._in_background = in_background
        self._default_team = default_team

    def home_opened(self, *, user: str, team_id: str) -> None:
        self._in_background(self.publish_home(user, team_id or self._default_team()), "home")

    async def publish_home(self, user: str, team_id: str) -> None:
        """Publish `user`'s Home tab: their usage; for an admin, the admin section too."""
        period = self.calendar.period()
        spend: SpendView | None
        try:
            spend = await self.store.usage_spend(team_id, user, day=period.day, month=period.month)
        except StoreError:
            spend = None
        admin = None
        if await self.slack.is_admin(user):
            admin = await self._admin_facts(team_id, period.month + "-01", period.day)
        view = home.home_view(
            home.HomeFacts(user=user, period=period, budgets=self.budgets, spend=spend, admin=admin)
        )
        try:
            await self.slack.call("views.publish", user_id=user, view=view)
        except SlackFailure as e:
            log.warning("could not publish the Home tab", extra={"error": e.error})

    async def _admin_facts(self, team_id: str, since: str, until: str) -> home.AdminFacts:
        try:
            overrides = await self.store.channel_overrides(team_id)
            cells = await self.store.usage_cells(since=since, until=until, team_id=team_id)
        except StoreError:
            overrides, cells = {}, []
        channel_file = self.channels.file
        return home.AdminFacts(
            defaults=self.channels.resolve(""),
            file_path=channel_file.path,
            file_channels={c: self.channels.resolve(c) for c in channel_file.channels},
            overrides=overrides,
            cells=cells,
            zone=self.calendar.zone,
        )

    def open_channel_settings(
        self, *, user: str, team_id: str, trigger_id: str, channel: str
    ) -> None:
        self._in_background(
            self._open_channel_settings(user, team_id or self._default_team(), trigger_id, channel),
            "channel-settings",
        )

    async def _open_channel_settings(
        self, user: str, team_id: str, trigger_id: str, channel: str
    ) -> None:
        if not await self.slack.is_admin(user):
            log.info("refused to open channel settings for a non-admin", extra={"user": user})
            return
        override: ChannelOverride | None = None
        if channel:
            try:
                override = (await self.store.channel_overrides(team_id)).get(channel)
            except StoreError:
                override = self.channels.last_override(team_id, channel)
        try:
            await self.slack.call(
                "views.open", trigger_id=trigger_id, view=home.settings_modal(channel, override)
            )
        except SlackFailure as e:
            log.warning("could not open the channel settings", extra={"error": e.error})

    async def channel_settings_submitted(
        self, *, user: str, team_id: str, view: dict[str, Any]
    ) -> dict[str, str] | None:
        """An admin saved the modal: store the override (None back), or say what is wrong
        per block. Anyone else is refused, whatever the request says."""
        if not await self.slack.is_admin(user):
            log.info("refused channel settings from a non-admin", extra={"user": user})
            return {"channel": "Only workspace admins can change a channel's settings."}
        submitted = home.read_submission(view)
        if isinstance(submitted, dict):
            return submitted
        if submitted.model and not await self._model_exists(submitted.model):
            return {"model": f"Claude has no model named {submitted.model}."}
        override = None
        if not submitted.clears:
            override = ChannelOverride(
                system_prompt=submitted.system_prompt,
                model=submitted.model,
                by=user,
                at=self.calendar.clock(),
            )
        team = team_id or self._default_team()
        try:
            await self.store.set_channel_override(team, submitted.channel, override)
        except StoreError:
            return {"channel": "The settings could not be saved right now; please try again."}
        self.channels.remember(team, submitted.channel, override)
        log.info(
            "channel settings changed from Slack",
            extra={
                "channel": submitted.channel,
                "by": user,
                "model": submitted.model,
                "prompt_chars": len(submitted.system_prompt),
                "removed": override is None,
            },
        )
        self._in_background(self.publish_home(user, team), "home")
        return None

    async def _model_exists(self, model: str) -> bool:
        """False only when Claude says it has no such model; any other failure accepts it."""
        try:
            async with asyncio.timeout(MODEL_LOOKUP_SECONDS):
                await self.claude.models.retrieve(model)
        except anthropic.NotFoundError:
            return False
        except (anthropic.APIError, TimeoutError):
            return True
        return True

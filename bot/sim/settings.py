"""Settings for a bot wired to the simulators: no real credentials, loopback URLs only."""

from __future__ import annotations

from typing import Any

from bot.config import Settings
from bot.sim.claude import ClaudeSim
from bot.sim.slack import SlackSim

SIM_SIGNING_SECRET = "sim-signing-secret"


def sim_settings(slack: SlackSim, claude: ClaudeSim, **overrides: Any) -> Settings:
    """The demo's, the tests' and the benchmarks' bot configuration; overrides win."""
    values: dict[str, Any] = {
        "slack_bot_token": slack.bot_token,
        "slack_signing_secret": SIM_SIGNING_SECRET,
        "anthropic_api_key": "sk-sim",
        "slack_api_url": slack.api_url,
        "anthropic_base_url": claude.base_url,
        "redis_url": None,
        "host": "127.0.0.1",
        "port": 0,
    }
    values.update(overrides)
    return Settings(**values)

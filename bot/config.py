"""Settings from the environment, validated once at start-up.

Names follow the operating contract in DESIGN.md; they are read by operators' scripts and
deployment files, so they are only ever added to, never renamed.
"""

from __future__ import annotations

import os
import socket
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant answering in a Slack thread. Answer the latest message, "
    "using the earlier messages as context. Be concise; use Markdown (lists, code blocks) "
    "where it helps. Messages from people are prefixed with their name. Mentions such as "
    "<@U123> are Slack user references: keep them as they are."
)


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ConfigError(Exception):
    """Configuration that cannot work; the message is one line telling what to set."""


class Settings(BaseSettings):
    """Every knob of the bot. Secrets are `SecretStr` so they never show up in reprs or logs."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    claude_model: str = "claude-sonnet-5-5"
    claude_max_tokens: int = Field(2048, ge=1, le=128_000)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    redis_url: str | None = None
    host: str = "0.0.0.0"
    port: int = Field(3000, ge=0, le=65535)
    edit_interval_seconds: float = Field(1.0, gt=0, le=60)
    workspace_edits_per_minute: float = Field(45, gt=0, le=10_000)
    workspace_edit_burst: float = Field(10, ge=2, le=1000)
    stream_lease_seconds: float = Field(15, gt=0, le=3600)
    stream_idle_timeout_seconds: float = Field(60, gt=0, le=3600)
    placeholder_text: str = Field("Thinking…", min_length=1, max_length=200)
    shutdown_grace_seconds: float = Field(20, ge=0, le=3600)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    max_answers_per_user: int = Field(3, ge=1)
    max_answers_per_workspace: int = Field(50, ge=1)
    allowed_channels: Annotated[frozenset[str], NoDecode] = frozenset()
    allowed_users: Annotated[frozenset[str], NoDecode] = frozenset()
    context_token_budget: int = Field(100_000, ge=1_000)
    show_cost: bool = True
    replica_id: str = Field(default_factory=_default_replica_id, min_length=1)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("allowed_channels", "allowed_users", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    @field_validator("redis_url", "anthropic_base_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    def secret(self, name: str) -> str:
        """The plain value of a secret field; raises ConfigError naming the variable if unset."""
        value = getattr(self, name)
        if value is None or not value.get_secret_value():
            raise ConfigError(f"{name.upper()} is not set: export it (see README, Configuration).")
        return str(value.get_secret_value())

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redaction filter."""
        fields = ("slack_bot_token", "slack_signing_secret", "slack_app_token", "anthropic_api_key")
        values = [getattr(self, f) for f in fields]
        return [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]

    def require(self, mode: Literal["serve", "socket", "check"]) -> None:
        """Fail fast, with one line, when a mode lacks what it needs."""
        needed = ["slack_bot_token", "anthropic_api_key"]
        if mode == "serve":
            needed.append("slack_signing_secret")
        if mode == "socket":
            needed.append("slack_app_token")
        missing = [n.upper() for n in needed if getattr(self, n) is None]
        if missing:
            raise ConfigError(
                f"missing configuration: set {', '.join(missing)} (see README, Configuration)."
            )


def load_settings(**overrides: object) -> Settings:
    """Read the environment; turn pydantic's multi-line report into one line per problem."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None

"""Per-channel settings: the CHANNEL_SETTINGS_FILE (defaults and per-channel overrides), the
overrides workspace admins set from Slack (kept in the store), and what one channel's answers
are given once both are applied on top of the environment.

    environment ─> file `defaults` ─> file `channels.<ID>` ─> an admin's override from Slack
                                                               (prompt and model only)

The file's keys are the operating contract (added to, never renamed):

    defaults:                 # every key optional; unset falls back to the environment
      model: claude-sonnet-5-5
      system_prompt: "…"      # replaces SYSTEM_PROMPT
      system_prompt_append: "Answer in British English."   # added after whichever prompt applies
      max_tokens: 2048
      web_search: true        # the tool switches: unset, the environment decides
      web_fetch: true
      files: true
      allowed_users: [U0AAA]  # only these people get answers (empty or unset: everyone)
    channels:
      C0123ABCD:              # a channel ID; the same keys, each replacing the default's
        system_prompt: "You are the on-call assistant for payments."

The file is validated as a whole, one line per mistake (`ConfigError`), at start-up and by
`slackstream check`; SIGHUP reads it again, and a file with mistakes is then refused (the
settings in force stay) rather than fatal. An answer keeps the settings it started with.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from bot.config import ConfigError, Settings
from bot.store import ChannelOverride

log = logging.getLogger(__name__)

CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")
USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
MAX_TOKENS_LIMIT = 128_000
TOOL_SWITCHES = ("web_search", "web_fetch", "files")
# The `Settings` field each tool switch sets on an answer's settings, once `Settings` has it
# (the tools and files features read their own fields; a name missing there is not applied).
TOOL_SETTING_FIELDS: Mapping[str, str] = {name: name for name in TOOL_SWITCHES}
KEYS = (
    "model",
    "system_prompt",
    "system_prompt_append",
    "max_tokens",
    *TOOL_SWITCHES,
    "allowed_users",
)


@dataclass(frozen=True)
class Layer:
    """One level of the file (`defaults`, or one channel): None where it says nothing."""

    model: str | None = None
    system_prompt: str | None = None
    system_prompt_append: str | None = None
    max_tokens: int | None = None
    web_search: bool | None = None
    web_fetch: bool | None = None
    files: bool | None = None
    allowed_users: frozenset[str] | None = None


@dataclass(frozen=True)
class ChannelFile:
    """The file's contents, validated; empty when no file is configured."""

    defaults: Layer = Layer()
    channels: Mapping[str, Layer] = field(default_factory=dict)
    path: str = ""


# -- reading and validating the file --------------------------------------------------------


def _where(path: tuple[str, ...]) -> str:
    return ".".join(path) or "the file"


def _text(value: object, where: str, problems: list[str]) -> str | None:
    if not isinstance(value, str):
        problems.append(f"{where}: must be text, got {_kind(value)}")
        return None
    if not value.strip():
        problems.append(f"{where}: must not be blank")
        return None
    return value


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a true/false)"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {value!r}"


def _layer(raw: object, path: tuple[str, ...], problems: list[str]) -> Layer:
    where = _where(path)
    if raw is None:
        return Layer()
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping of settings, got {_kind(raw)}")
        return Layer()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        at = f"{where}.{key}"
        if key not in KEYS:
            problems.append(f"{at}: unknown key (known keys: {', '.join(KEYS)})")
        elif key in ("system_prompt", "system_prompt_append"):
            values[key] = _text(value, at, problems)
        elif key == "model":
            model = _text(value, at, problems)
            if model is not None and not MODEL_ID.fullmatch(model):
                problems.append(f"{at}: {model!r} is not a model ID (like claude-sonnet-5-5)")
            else:
                values[key] = model
        elif key == "max_tokens":
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"{at}: must be a whole number, got {_kind(value)}")
            elif not 1 <= value <= MAX_TOKENS_LIMIT:
                problems.append(f"{at}: must be between 1 and {MAX_TOKENS_LIMIT:,}, got {value}")
            else:
                values[key] = value
        elif key in TOOL_SWITCHES:
            if not isinstance(value, bool):
                problems.append(f"{at}: must be true or false, got {_kind(value)}")
            else:
                values[key] = value
        else:  # allowed_users
            values[key] = _users(value, at, problems)
    return Layer(**{k: v for k, v in values.items() if v is not None})


def _users(value: object, where: str, problems: list[str]) -> frozenset[str] | None:
    if not isinstance(value, list):
        problems.append(f"{where}: must be a list of user IDs, got {_kind(value)}")
        return None
    users = set()
    for i, user in enumerate(value):
        if isinstance(user, str) and USER_ID.fullmatch(user):
            users.add(user)
        else:
            problems.append(f"{where}[{i}]: {user!r} is not a Slack user ID (like U0123ABCD)")
    return frozenset(users)


def parse_channel_file(text: str, path: str = "") -> ChannelFile:
    """The file's settings; ConfigError listing every mistake, one line each."""
    name = path or "CHANNEL_SETTINGS_FILE"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise ConfigError(f"{name}: not valid YAML{at}: {problem}") from None
    problems: list[str] = []
    if raw is None:
        return ChannelFile(path=path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: must be a mapping with `defaults` and `channels`")
    for key in raw:
        if key not in ("defaults", "channels"):
            problems.append(f"{key}: unknown key (known keys: defaults, channels)")
    defaults = _layer(raw.get("defaults"), ("defaults",), problems)
    channels: dict[str, Layer] = {}
    listed = raw.get("channels")
    if listed is not None and not isinstance(listed, dict):
        problems.append(f"channels: must be a mapping of channel IDs, got {_kind(listed)}")
    for channel, layer in (listed or {}).items() if isinstance(listed, dict) else ():
        if not isinstance(channel, str) or not CHANNEL_ID.fullmatch(channel):
            problems.append(
                f"channels.{channel}: not a channel ID (like C0123ABCD: copy it from the "
                "channel's details in Slack)"
            )
            continue
        channels[channel] = _layer(layer, ("channels", channel), problems)
    if problems:
        lines = "\n".join(f"  {problem}" for problem in problems)
        count = f"{len(problems)} mistake{'s' if len(problems) > 1 else ''}"
        raise ConfigError(f"{name} has {count}:\n{lines}")
    return ChannelFile(defaults, channels, path)


def load_channel_file(path: str | None) -> ChannelFile:
    """The file at `path` (None: no file, no channel settings)."""
    if not path:
        return ChannelFile()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"CHANNEL_SETTINGS_FILE {path}: cannot be read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"CHANNEL_SETTINGS_FILE {path}: is not UTF-8 text") from None
    return parse_channel_file(text, path)


# -- one channel's settings -----------------------------------------------------------------


@dataclass(frozen=True)
class ChannelSettings:
    """What answers in one channel are given: each value with where it came from
    (`environment`, `file defaults`, `file channel`, `Slack override`)."""

    channel: str
    model: str
    system_prompt: str
    max_tokens: int
    # None: the environment's setting applies (the tools and files features read it there).
    web_search: bool | None = None
    web_fetch: bool | None = None
    files: bool | None = None
    allowed_users: frozenset[str] = frozenset()  # empty: everyone
    sources: Mapping[str, str] = field(default_factory=dict)
    override: ChannelOverride | None = None

    def allows(self, user: str) -> bool:
        return not self.allowed_users or user in self.allowed_users

    def switch(self, name: str, environment: bool) -> bool:
        """A tool switch (`web_search`, `web_fetch`, `files`) for this channel: the file's
        value where it sets one, else `environment` (the feature's own setting)."""
        if name not in TOOL_SWITCHES:
            raise ValueError(f"unknown tool switch {name!r}")
        value: bool | None = getattr(self, name)
        return environment if value is None else value

    def apply(self, settings: Settings) -> Settings:
        """`settings` for one answer in this channel: model, prompt and output cap, and each
        tool switch the file sets, where `Settings` has a field for it."""
        update: dict[str, Any] = {
            "claude_model": self.model,
            "system_prompt": self.system_prompt,
            "claude_max_tokens": self.max_tokens,
        }
        fields = type(settings).model_fields
        for switch, name in TOOL_SETTING_FIELDS.items():
            value = getattr(self, switch)
            if value is not None and name in fields:
                update[name] = value
        return settings.model_copy(update=update)


def resolve(
    settings: Settings,
    channel_file: ChannelFile,
    channel: str,
    override: ChannelOverride | None = None,
) -> ChannelSettings:
    """The layers applied in order (see the module docstring)."""
    layers = [("file defaults", channel_file.defaults)]
    if (own := channel_file.channels.get(channel)) is not None:
        layers.append(("file channel", own))
    sources: dict[str, str] = {}

    def pick(name: str, environment: Any) -> Any:
        value, source = environment, "environment"
        for label, layer in layers:
            if (given := getattr(layer, name)) is not None:
                value, source = given, label
        sources[name] = source
        return value

    model = pick("model", settings.claude_model)
    prompt = pick("system_prompt", settings.system_prompt)
    append = pick("system_prompt_append", None)
    if override is not None and override.model:
        model, sources["model"] = override.model, "Slack override"
    if override is not None and override.system_prompt:
        prompt, sources["system_prompt"] = override.system_prompt, "Slack override"
    if append:
        prompt = f"{prompt.rstrip()}\n\n{append.strip()}"
    return ChannelSettings(
        channel=channel,
        model=model,
        system_prompt=prompt,
        max_tokens=pick("max_tokens", settings.claude_max_tokens),
        web_search=pick("web_search", None),
        web_fetch=pick("web_fetch", None),
        files=pick("files", None),
        allowed_users=pick("allowed_users", None) or frozenset(),
        sources=sources,
        override=override,
    )


class ChannelDirectory:
    """The file in force (read again on SIGHUP) and the last override seen for each channel,
    which stands in when the store cannot be read."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.file = load_channel_file(settings.channel_settings_file)
        self._overrides: dict[tuple[str, str], ChannelOverride | None] = {}

    def reload(self) -> bool:
        """Read the file again; on a mistake keep the settings in force and say why."""
        path = self.settings.channel_settings_file
        try:
            fresh = load_channel_file(path)
        except ConfigError as e:
            log.error(
                "channel settings not reloaded; the previous ones stay", extra={"error": str(e)}
            )
            return False
        self.file = fresh
        log.info(
            "channel settings reloaded",
            extra={"path": path or "", "channels": len(fresh.channels)},
        )
        return True

    def remember(self, team_id: str, channel: str, override: ChannelOverride | None) -> None:
        self._overrides[(team_id, channel)] = override

    def last_override(self, team_id: str, channel: str) -> ChannelOverride | None:
        return self._overrides.get((team_id, channel))

    def resolve(self, channel: str, override: ChannelOverride | None = None) -> ChannelSettings:
        return resolve(self.settings, self.file, channel, override)

    def for_file_only(self, channel: str) -> ChannelSettings:
        """What the file (and the environment) give the channel, without any override."""
        return replace(self.resolve(channel), override=None)

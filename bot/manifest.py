"""The Slack app manifest, generated from the scopes and events the bot really uses.

The scope list is derived from ``SCOPES_BY_METHOD`` and ``SCOPES_BY_EVENT`` rather than
written by hand, so the manifest asks for exactly what the code needs: a scope too few
breaks a call with ``missing_scope``, a scope too many makes admins hesitate to install.
``manifest.yml`` and ``infra/manifest.socket.yml`` are outputs of this module;
``python -m bot.manifest`` rewrites them, and a test fails when they drift.
"""

from __future__ import annotations

import sys
from itertools import chain
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

EVENTS_PATH = "/slack/events"
"""Where ``slackstream serve`` takes both Events API and interactivity requests."""

PLACEHOLDER_URL = "https://bot.example.com"
"""Base URL written into the checked-in HTTP manifest; replace it with your own."""

SCOPES_BY_METHOD: dict[str, tuple[str, ...]] = {
    "auth.test": (),
    "chat.postMessage": ("chat:write",),
    "chat.update": ("chat:write",),
    "chat.delete": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    # One scope per conversation type: channels, private channels, DMs, group DMs.
    "conversations.replies": (
        "channels:history",
        "groups:history",
        "im:history",
        "mpim:history",
    ),
    "users.info": ("users:read",),
    # chat:write suffices since 2026-03; assistant:write is no longer needed for it.
    "assistant.threads.setStatus": ("chat:write",),
    # The Home tab and the channel settings modal: no scope (Slack's metadata, `no_scope_required`).
    "views.publish": (),
    "views.open": (),
    # Files in the thread (bot/files.py): files.info completes a file stub, and the same scope
    # lets the bot token download `url_private_download` (without it Slack sends a sign-in page).
    "files.info": ("files:read",),
}
"""Every Slack Web API method the bot calls, with the bot scopes it needs."""

SCOPES_BY_EVENT: dict[str, tuple[str, ...]] = {
    "app_mention": ("app_mentions:read",),
    "message.im": ("im:history",),
    "app_home_opened": (),  # the Home tab: each person's usage, admins' channel settings
}
"""Every Events API subscription the bot handles, with the bot scopes it needs."""

BOT_EVENTS: tuple[str, ...] = tuple(SCOPES_BY_EVENT)
BOT_SCOPES: tuple[str, ...] = tuple(
    sorted(set(chain(*SCOPES_BY_METHOD.values(), *SCOPES_BY_EVENT.values())))
)

_REPO_ROOT = Path(__file__).resolve().parent.parent
HTTP_MANIFEST_PATH = _REPO_ROOT / "manifest.yml"
SOCKET_MANIFEST_PATH = _REPO_ROOT / "infra" / "manifest.socket.yml"


def request_url(url: str) -> str:
    """Turn the bot's public base URL into its Events API/interactivity request URL.

    Accepts ``https://host[/prefix]`` or a URL that already ends in ``/slack/events``;
    Slack only delivers to HTTPS endpoints, so anything else is refused here rather
    than at Slack's verification step.
    """
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.netloc:
        raise ValueError(f"request URL must be an https:// URL with a host, got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"request URL must not carry a query or fragment, got {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(EVENTS_PATH):
        path += EVENTS_PATH
    return f"https://{parts.netloc}{path}"


def build_manifest(
    *, url: str | None, socket: bool, name: str = "Claude", bot_name: str = "claude"
) -> dict[str, Any]:
    """Build the app manifest for HTTP mode (``url`` required) or Socket Mode.

    In Socket Mode Slack delivers events over the WebSocket and rejects request URLs
    as unused, so ``url`` is ignored there.
    """
    if not 1 <= len(name) <= 35:
        raise ValueError(f"app name must be 1 to 35 characters, got {len(name)}")
    if not 1 <= len(bot_name) <= 80:
        raise ValueError(f"bot display name must be 1 to 80 characters, got {len(bot_name)}")

    events: dict[str, Any] = {"bot_events": list(BOT_EVENTS)}
    # The Stop and feedback buttons, the Home tab's button and the channel settings modal.
    interactivity: dict[str, Any] = {"is_enabled": True}
    if not socket:
        if url is None:
            raise ValueError("HTTP mode needs the bot's public https URL (or use Socket Mode)")
        endpoint = request_url(url)
        events = {"request_url": endpoint, **events}
        interactivity["request_url"] = endpoint

    return {
        # Without it Slack reads the manifest as version 1 (the schema it is validated against
        # here is 2.0.0).
        "_metadata": {"major_version": 2},
        "display_information": {
            "name": name,
            "description": "Ask Claude in any thread; the answer streams live into the reply.",
            "background_color": "#D97757",
        },
        "features": {
            "app_home": {
                "home_tab_enabled": True,  # usage, and admins' channel settings
                "messages_tab_enabled": True,
                "messages_tab_read_only_enabled": False,
            },
            "bot_user": {"display_name": bot_name, "always_online": True},
        },
        "oauth_config": {"scopes": {"bot": list(BOT_SCOPES)}},
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": socket,
            "token_rotation_enabled": False,
        },
    }


def dump_manifest(manifest: dict[str, Any]) -> str:
    """Render a manifest as YAML in the key order Slack's own editor uses."""
    return str(yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, width=100))


def generated_file_text(manifest: dict[str, Any]) -> str:
    """The checked-in file: a do-not-edit header followed by the manifest."""
    command = (
        "slackstream manifest --socket"
        if manifest["settings"]["socket_mode_enabled"]
        else "slackstream manifest --url https://your.host"
    )
    header = (
        "# Generated by `python -m bot.manifest` from bot/manifest.py; do not edit by hand.\n"
        f"# `{command}` prints it for your deployment; paste that into\n"
        "# https://api.slack.com/apps > Create New App > From a manifest (docs/operations.md).\n"
    )
    return header + dump_manifest(manifest)


def checked_in_manifests() -> dict[Path, dict[str, Any]]:
    """The manifests kept in the repository, by path."""
    return {
        HTTP_MANIFEST_PATH: build_manifest(url=PLACEHOLDER_URL, socket=False),
        SOCKET_MANIFEST_PATH: build_manifest(url=None, socket=True),
    }


def main() -> int:
    """Regenerate the checked-in manifests."""
    for path, manifest in checked_in_manifests().items():
        path.write_text(generated_file_text(manifest), encoding="utf-8")
        print(f"wrote {path.relative_to(_REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

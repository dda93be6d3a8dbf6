"""Slack tokens, mentions and links in Claude's text, and Slack's three escapes.

``&``, ``<`` and ``>`` are control characters in Slack text; outside code they are escaped as
``&amp;`` ``&lt;`` ``&gt;``, except the Slack tokens that are safe to keep live: channel links
(``<#C1|x>``), dates and links (``<https://…|label>``).

Claude's text is not the bot's to broadcast with: ``<!here>``, ``<!channel>``, ``<!everyone>``
and user-group mentions become plain ``@here``-style text (plain text never notifies: the bot
does not set ``link_names``), and a user mention becomes the person's name without notifying them
unless the caller turns live user mentions on (``Mentions``). Inside code the same tokens are
defused instead (``fences.defuse_code``). A link whose label is a URL of another host shows its
real destination.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit


def escape_plain(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


SLACK_TOKEN = re.compile(
    r"<(?:[@#][A-Z0-9]+|!(?:here|channel|everyone)|!subteam\^[A-Z0-9]+|!date\^[^<>|\n]+"
    r"|(?:https?://|mailto:)[^\s<>|]+)(?:\|[^<>\n]*)?>"
)


@dataclass(frozen=True)
class Mentions:
    """What the caller knows about the people Claude may mention: their display names (user ID →
    name) and whether a mention may notify them (the operator's ``ALLOW_USER_MENTIONS``). The
    default knows no names and notifies nobody: a mention then reads ``@U0ABC``."""

    names: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    live_users: bool = False


NO_MENTIONS = Mentions()

_NAME_LIMIT = 64
# Markdown that could turn a display name into formatting or a link.
_MARKDOWN_ACTIVE = re.compile(r"([\\`*_~\[\]])")


def _name_text(name: str, *, markdown: bool) -> str:
    """A display name (or user-group label) as harmless text: one line, capped, escaped."""
    kept = (c if c == "\u200d" or unicodedata.category(c)[0] != "C" else " " for c in name)
    shown = " ".join("".join(kept).split())
    if len(shown) > _NAME_LIMIT:
        shown = shown[: _NAME_LIMIT - 1].rstrip() + "…"
    shown = escape_plain(shown)
    return _MARKDOWN_ACTIVE.sub(r"\\\1", shown) if markdown else shown


MD_LINK = re.compile(r"!?\[([^\]\n]*)\]\(([^()\s]*)(?:\s+\"[^\"\n]*\")?\)")


def _host(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.rstrip(".") if host else None


def misleading(label: str, target: str) -> bool:
    """Is ``label`` a URL (or ``www.`` name) of another host than the link's ``target``?"""
    shown = label.strip().strip("`*_~<>").strip()
    if shown.lower().startswith("www."):
        shown = "http://" + shown
    elif "://" not in shown:
        return False
    host = _host(shown)
    return host is not None and host != _host(target.strip())


def tame(token: str, mentions: Mentions, *, markdown: bool) -> str:
    """What a Slack token Claude wrote is shown as: channel links, dates and honest links stay
    live; broadcasts and user-group mentions become plain text; a user mention becomes the
    person's name unless live user mentions are on; a link labelled with another host's URL
    shows its real destination instead."""
    body, _, label = token[1:-1].partition("|")
    if body.startswith("#") or body.startswith("!date^"):
        return token
    if body.startswith("@"):
        if mentions.live_users:
            return token
        user = body[1:]
        return "@" + _name_text(mentions.names.get(user) or user, markdown=markdown)
    if body.startswith("!subteam^"):
        group = label.strip().lstrip("@") or body.removeprefix("!subteam^")
        return "@" + _name_text(group, markdown=markdown)
    if body.startswith("!"):
        return "@" + body[1:]
    return f"<{body}>" if label and misleading(label, body) else token


_URL_STARTS = ("http://", "https://", "mailto:")


def partial_token(rest: str) -> bool:
    """Could ``"<" + rest`` still become a Slack token or a ``<https://…>`` link?"""
    if any(char in rest for char in "<>\n"):
        return False
    if not rest or rest[0] in "@#!":
        return True
    return any(start.startswith(rest) or rest.startswith(start) for start in _URL_STARTS)


def escape_mrkdwn(text: str, mentions: Mentions = NO_MENTIONS) -> str:
    """Escape & < > for mrkdwn text; Slack tokens shown as ``mentions`` allows (``tame``)."""
    out: list[str] = []
    begin = 0
    for token in SLACK_TOKEN.finditer(text):
        out.append(escape_plain(text[begin : token.start()]))
        out.append(tame(token[0], mentions, markdown=False))
        begin = token.end()
    out.append(escape_plain(text[begin:]))
    return "".join(out)

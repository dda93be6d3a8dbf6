"""Slack thread → the `messages` of a Claude request.

Pure policy, no I/O: the handler fetches the thread (`conversations.replies`) and passes it in.

- The bot's own messages become `assistant` turns (their visible answer only, via
  `render.visible_answer`), except answers still in flight (those with a Stop button) and
  `skip_ts`; everyone else, other bots included, speaks in `user` turns whose
  text blocks open with a speaker label, so Claude can tell the participants apart.
- Who said what cannot be forged: the label is the ID Slack vouches for, with the display name
  only as a hint that cannot hold the label's own punctuation (`[U0ALICE (alice)]: …`), and
  text shaped like a label inside a message gets a backslash before its bracket.
- What people typed stays as harmless as Slack made it: Slack's `&amp;`/`&lt;`/`&gt;` are
  decoded, except a `<` that would start a Slack token (`&lt;!channel&gt;` stays so), and a real
  broadcast (`<!here>`) reads as the text it shows (`@here`).
- Each Slack message is one text block; consecutive messages of one role share a Claude
  message. Separate blocks (rather than joined text) keep every earlier block byte-identical
  when a later message joins the same turn, which is what prompt caching needs.
- A thread the bot started (for example a digest it posted) opens with a short synthetic user
  turn instead of losing the bot's opening message: that message is usually what people ask
  about, and Claude requires the first turn to be `user`.
- Over `token_budget`, the oldest messages go first, in steps that keep the sent prefix the
  same over several turns (for the cache); the thread's first user message (the original
  question) and the question being answered stay, a marker says how many messages were left
  out, and a question too long on its own is cut in the middle.
- Files (`attachments`, by message ts, from `bot.files`) go with the message they were posted
  with, in order, after its text block; the text names them (and why one was left out). They
  count against the budget with their own estimates. The question keeps its files while any
  older message can still go; only a question over the budget on its own loses its files
  (the last first), then the first message loses its files before its text is cut.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import accumulate
from types import MappingProxyType
from typing import Any, Literal

from bot import render
from bot.attachments import Attachment, files_line

Role = Literal["user", "assistant"]
Message = Mapping[str, Any]

# Subtypes that carry something a person or app wrote. Every other subtype is a channel event
# (joins, topic changes, message_changed/message_deleted, tombstones of deleted parents).
_CONTENT_SUBTYPES = frozenset({"bot_message", "me_message", "file_share", "thread_broadcast"})
_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">"}
# Slack's entities; a "<" that would start a Slack token (and its closing ">") stays escaped.
_TOKEN_START = r"&lt;(?:[@#!]|https?://|mailto:)"
_ENTITY_RE = re.compile(rf"{_TOKEN_START}(?:(?!&lt;)[^<>\n])*?&gt;|{_TOKEN_START}|&(?:amp|lt|gt);")
_SLACK_TOKEN = re.compile(r"<([^<>\n]*)>")
_BROADCASTS = frozenset({"here", "channel", "everyone"})
# Text shaped like a speaker label, wherever it appears in what someone wrote.
_LABEL_LIKE = re.compile(r"\[(?=[^\[\]\n]*\]:)")
_HINT_NOISE = re.compile(r"[\[\]()<>:\s]+")
_HINT_LIMIT = 40
_CLOSING_PUNCTUATION = frozenset(".,;:!?)")
_NO_NAMES: Mapping[str, str] = MappingProxyType({})
_EMPTY_QUESTION = "(no text)"
_OPENER = "(This Slack thread starts with a message you posted.)"
_TRIM_STEPS = 8  # over budget, older messages go in steps of about 1/8 of the budget
_NO_FILES: Mapping[str, Sequence[Attachment]] = MappingProxyType({})
OVER_BUDGET = "over the context budget"  # why a file of a message that was kept was left out


@dataclass(frozen=True)
class Conversation:
    """Claude `messages` for one answer, and what the budget cost."""

    messages: list[dict[str, Any]]
    dropped_turns: int
    estimated_tokens: int
    # Files of messages that were kept, left out to fit the budget.
    files_left_out: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class _Turn:
    """One Slack message (or a synthetic note) as one text block."""

    role: Role
    label: str
    body: str
    tokens: int
    files: tuple[Attachment, ...] = ()

    @property
    def text(self) -> str:
        line = files_line(self.files)
        return self.label + (f"{self.body}\n{line}" if self.body and line else self.body or line)


def estimate_tokens(text: str) -> int:
    """Over-estimate the tokens of `text` without a tokenizer.

    ASCII counts at 3.5 characters per token; any other code point counts as a whole token,
    since CJK, emoji and other scripts take about one token (or more) per character.
    """
    if not text:
        return 0
    ascii_chars = len(text.encode("ascii", "ignore"))
    return max(1, math.ceil(ascii_chars / 3.5 + (len(text) - ascii_chars)))


def strip_bot_mention(text: str, bot_user_id: str) -> str:
    """Remove mentions of this bot (`<@UBOT>`, `<@UBOT|name>`); other mentions are context.

    Only the spaces around a removed mention are tidied, so indentation elsewhere (code) survives:
    `hey <@UBOT>, look` → `hey, look`; `<@UBOT>: do x` → `do x`.
    """
    mention = rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>"
    pattern = re.compile(rf"(?:[ \t]*{mention})+(?P<punct>[,:])?[ \t]*")

    def replace(match: re.Match[str]) -> str:
        start, end = match.start(), match.end()
        if start == 0 or text[start - 1] == "\n":
            return ""
        punct = match["punct"] or ""
        if end == len(text) or text[end] == "\n" or text[end] in _CLOSING_PUNCTUATION:
            return punct
        return punct + " "

    return pattern.sub(replace, text).strip()


def build_conversation(
    thread: Sequence[Message],
    *,
    question_ts: str,
    bot_user_id: str,
    bot_id: str,
    names: Mapping[str, str] = _NO_NAMES,
    token_budget: int | None = None,
    count_tokens: Callable[[str], int] = estimate_tokens,
    assistant_text: Callable[[Message], str] | None = None,
    skip_ts: Collection[str] = (),
    cache: bool = True,
    attachments: Mapping[str, Sequence[Attachment]] = _NO_FILES,
) -> Conversation:
    """Turn the thread up to and including `question_ts` into Claude messages.

    `thread` is the output of `conversations.replies`; it may also hold the question twice
    (the replies plus the event payload appended by the caller): the first copy is used.
    Raises ValueError when no message of the thread has `question_ts`.
    """
    answer_of = assistant_text or _visible_answer
    question_key = Decimal(question_ts)
    question: Message | None = None
    history: list[_Turn] = []
    for message in _in_order(thread):
        key = Decimal(str(message["ts"]))
        if key >= question_key:
            question = message if key == question_key else None
            break
        if str(message["ts"]) in skip_ts or not _has_content(message):
            continue
        if _is_own(message, bot_user_id, bot_id):
            if _in_flight(message):
                continue
            answer = answer_of(message).strip()
            if answer:
                history.append(_Turn("assistant", "", answer, count_tokens(answer)))
        else:
            body = _user_body(message, bot_user_id)
            files = tuple(attachments.get(str(message["ts"]), ()))
            if body or files:
                history.append(_user_turn(message, body, names, count_tokens, files))
    if question is None:
        raise ValueError(f"the thread has no message with ts {question_ts}")
    files = tuple(attachments.get(str(question["ts"]), ()))
    last = _user_turn(
        question,
        _user_body(question, bot_user_id) or ("" if files else _EMPTY_QUESTION),
        names,
        count_tokens,
        files,
    )
    if token_budget is not None:
        last = _files_within(last, token_budget, count_tokens)
    turns, dropped = _fit(history, last, token_budget, count_tokens)
    return Conversation(
        messages=_as_messages(turns, cache),
        dropped_turns=dropped,
        estimated_tokens=sum(turn.tokens for turn in turns),
        files_left_out=tuple(a for t in turns for a in t.files if a.reason == OVER_BUDGET),
    )


def _visible_answer(message: Message) -> str:
    return render.visible_answer(dict(message))


def _in_order(thread: Sequence[Message]) -> list[Message]:
    first_copies = {str(message["ts"]): message for message in reversed(thread)}
    return sorted(first_copies.values(), key=lambda message: Decimal(str(message["ts"])))


def _has_content(message: Message) -> bool:
    subtype = message.get("subtype")
    return subtype is None or subtype in _CONTENT_SUBTYPES


def _is_own(message: Message, bot_user_id: str, bot_id: str) -> bool:
    return bool(
        (bot_id and message.get("bot_id") == bot_id)
        or (bot_user_id and message.get("user") == bot_user_id)
    )


def _in_flight(message: Message) -> bool:
    """Our message still has its Stop button: the answer is being written (or awaits the
    janitor), so its partial text is not yet part of the conversation."""
    return any(
        element.get("action_id") == render.STOP_ACTION_ID
        for block in message.get("blocks") or []
        if block.get("type") == "actions"
        for element in block.get("elements") or []
    )


def _user_body(message: Message, bot_user_id: str) -> str:
    """What a participant wrote, as they see it (`_as_text`), label look-alikes escaped."""
    text = _as_text(strip_bot_mention(str(message.get("text") or ""), bot_user_id))
    return _LABEL_LIKE.sub(r"\\[", text)


def _as_text(text: str) -> str:
    """Slack's message text as its reader sees it: entities decoded unless that would make a
    Slack token of literal text; a real broadcast or user-group mention as its plain text (Claude
    may echo what it reads); user and channel mentions and links as the tokens they are."""
    out: list[str] = []
    begin = 0
    for token in _SLACK_TOKEN.finditer(text):
        out.append(_decoded(text[begin : token.start()]))
        out.append(_token_text(token[1]))
        begin = token.end()
    out.append(_decoded(text[begin:]))
    return "".join(out)


def _decoded(text: str) -> str:
    return _ENTITY_RE.sub(lambda match: _ENTITIES.get(match[0], match[0]), text)


def _token_text(inner: str) -> str:
    body, _, label = inner.partition("|")
    if not body.startswith("!"):
        return f"<{inner}>"
    if body[1:] in _BROADCASTS:
        return "@" + body[1:]
    if body.startswith("!subteam^"):
        return "@" + (label.strip().lstrip("@") or body.removeprefix("!subteam^"))
    return label or body[1:]  # a date's fallback text, or another special token's name


def _label(message: Message, names: Mapping[str, str]) -> str:
    """`[ID (hint)]: `: the ID Slack vouches for (a bot's for a bot), the name only as a hint."""
    if message.get("bot_id"):
        speaker = message.get("bot_id")
        hint = (message.get("bot_profile") or {}).get("name") or message.get("username")
    else:
        speaker = message.get("user")
        hint = names.get(str(speaker)) if speaker else message.get("username")
    ident = re.sub(r"[^A-Za-z0-9]", "", str(speaker or "")) or "unknown"
    visible = "".join(c if unicodedata.category(c)[0] != "C" else " " for c in str(hint or ""))
    shown = _HINT_NOISE.sub(" ", visible).strip()[:_HINT_LIMIT].strip()
    return f"[{ident} ({shown})]: " if shown and shown != ident else f"[{ident}]: "


def _user_turn(
    message: Message,
    body: str,
    names: Mapping[str, str],
    count_tokens: Callable[[str], int],
    files: tuple[Attachment, ...] = (),
) -> _Turn:
    return _with_files(_Turn("user", _label(message, names), body, 0), files, count_tokens)


def _with_files(
    turn: _Turn, files: tuple[Attachment, ...], count_tokens: Callable[[str], int]
) -> _Turn:
    """`turn` with these files, its tokens counted again (its text names the files)."""
    bare = _Turn(turn.role, turn.label, turn.body, 0, files)
    tokens = count_tokens(bare.text) + sum(a.tokens for a in files)
    return _Turn(turn.role, turn.label, turn.body, tokens, files)


def _without_files(turn: _Turn, count_tokens: Callable[[str], int], keep: int = 0) -> _Turn:
    """`turn` with only its first `keep` sent files; the others are named as left out."""
    if not any(a.sent for a in turn.files):
        return turn
    kept: list[Attachment] = []
    for file in turn.files:
        if file.sent and keep <= 0:
            file = file.left_out(OVER_BUDGET)
        elif file.sent:
            keep -= 1
        kept.append(file)
    return _with_files(turn, tuple(kept), count_tokens)


def _files_within(turn: _Turn, budget: int, count_tokens: Callable[[str], int]) -> _Turn:
    """A question over the budget with its files loses files, the last first, until it fits
    (its text is cut later, if it still has to be)."""
    sent = sum(a.sent for a in turn.files)
    keep = sent
    while keep > 0 and turn.tokens > budget:
        keep -= 1
        turn = _without_files(turn, count_tokens, keep)
    return turn


def _note(text: str, count_tokens: Callable[[str], int]) -> _Turn:
    return _Turn("user", "", text, count_tokens(text))


def _left_out(count: int, count_tokens: Callable[[str], int]) -> _Turn:
    noun = "message" if count == 1 else "messages"
    return _note(f"[… {count} earlier {noun} of this thread left out …]", count_tokens)


def _fit(
    history: list[_Turn],
    question: _Turn,
    budget: int | None,
    count_tokens: Callable[[str], int],
) -> tuple[list[_Turn], int]:
    """Choose the turns to send and count the Slack messages left out.

    Tries, richest first: dropping the oldest messages; then cutting the first user message in
    the middle; then dropping it; then the question alone; then the question cut.
    """
    pinned_at = next((i for i, turn in enumerate(history) if turn.role == "user"), None)
    pinned = None if pinned_at is None else history[pinned_at]
    others = [turn for i, turn in enumerate(history) if i != pinned_at]
    # Messages before the first user message are the bot's; they are the oldest, so go first.
    leading = len(others) if pinned_at is None else pinned_at

    def assemble(dropped: int, first: _Turn | None) -> list[_Turn]:
        turns = others[dropped:leading]
        if first:
            turns.append(first)
        turns += others[max(dropped, leading) :]
        if dropped:
            # The marker stands where the gap is: before everything if only bot messages
            # that opened the thread were dropped, otherwise right after the first message.
            at = 0 if dropped <= leading or not first else 1
            turns.insert(at, _left_out(dropped, count_tokens))
        if turns and turns[0].role == "assistant":
            turns.insert(0, _note(_OPENER, count_tokens))
        return [*turns, question]

    if budget is None:
        return assemble(0, pinned), 0

    fixed = question.tokens + (pinned.tokens if pinned else 0)
    everything = len(others)
    before = [0, *accumulate(turn.tokens for turn in others)]  # tokens of others[:i]
    step = max(1, budget // _TRIM_STEPS)
    cut_due = True  # the first candidate drops nothing
    for dropped in range(everything + 1):
        # Cut only where the dropped tokens pass a multiple of `step` (or drop everything).
        # These cut points depend on old messages alone, so the next few turns of a growing
        # thread pick the same one and send the same prefix: the prompt cache keeps hitting.
        passed = dropped > 0 and before[dropped] // step != before[dropped - 1] // step
        if passed or dropped == everything:
            cut_due = True
        # Never resume after the gap with an answer whose question was left out.
        if not cut_due or (leading < dropped < everything and others[dropped].role == "assistant"):
            continue
        cut_due = False
        if dropped:
            overhead = _left_out(dropped, count_tokens).tokens
        else:
            overhead = count_tokens(_OPENER) if leading else 0
        if fixed + before[-1] - before[dropped] + overhead <= budget:
            return assemble(dropped, pinned), dropped

    dropped = everything
    if pinned:
        marker = _left_out(dropped, count_tokens).tokens if dropped else 0
        bare = _without_files(pinned, count_tokens)
        if bare is not pinned and question.tokens + bare.tokens + marker <= budget:
            return assemble(dropped, bare), dropped
        shortened = _shorten(bare, budget - question.tokens - marker, count_tokens)
        if shortened:
            return assemble(dropped, shortened), dropped
        dropped += 1
        turns = assemble(dropped, None)
        if sum(turn.tokens for turn in turns) <= budget:
            return turns, dropped
    if question.tokens <= budget:
        return [question], dropped
    return [_shorten(question, budget, count_tokens) or _cut(question, 0, count_tokens)], dropped


def _cut(turn: _Turn, keep: int, count_tokens: Callable[[str], int]) -> _Turn:
    """Keep `keep` characters of the body, half from each end, and say how many went."""
    body = turn.body
    head, tail = (keep + 1) // 2, keep // 2
    marker = f"[… {len(body) - keep} characters left out …]"
    text = "\n".join(part for part in (body[:head], marker, body[len(body) - tail :]) if part)
    cut = _Turn(turn.role, turn.label, text, count_tokens(turn.label + text))
    return _with_files(cut, turn.files, count_tokens) if turn.files else cut


def _shorten(turn: _Turn, limit: int, count_tokens: Callable[[str], int]) -> _Turn | None:
    """The longest middle-cut of `turn` within `limit` tokens; None if nothing of it fits."""
    if len(turn.body) < 2 or _cut(turn, 1, count_tokens).tokens > limit:
        return None
    low, high = 1, len(turn.body) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if _cut(turn, middle, count_tokens).tokens <= limit:
            low = middle
        else:
            high = middle - 1
    return _cut(turn, low, count_tokens)


def _as_messages(turns: list[_Turn], cache: bool) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for turn in turns:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": turn.text}]
        blocks += [dict(a.block) for a in turn.files if a.block is not None]  # copies: see below
        if messages and messages[-1]["role"] == turn.role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": turn.role, "content": blocks})
    if cache and len(messages) >= 2:
        # Every block is built from one Slack message that does not change between turns, so
        # this request is a block-for-block prefix of the next one in the thread: a breakpoint
        # on the last block caches it for the next answer. The cache looks back only about 20
        # blocks from a breakpoint; a second one on the latest answer (right after the previous
        # question's breakpoint) still hits when many messages arrived in between.
        # Two here plus the caller's system-prompt breakpoint stay within Claude's limit of 4.
        for message in messages[-2:]:
            message["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return messages

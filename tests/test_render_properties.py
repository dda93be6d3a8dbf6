"""Properties of rendering and splitting over generated Markdown-ish answers."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.render import (
    MARKDOWN_LIMIT,
    TEXT_FALLBACK_LIMIT,
    Mentions,
    Usage,
    continued_payload,
    error_payload,
    final_payload,
    format_footer,
    interrupted_note,
    join_parts,
    next_cut,
    part_text,
    placeholder_payload,
    render_partial,
    split_answer,
    stop_reason_note,
    streaming_payload,
    to_slack_markdown,
    visible_answer,
)

SETTINGS = settings(max_examples=200, deadline=None)

# -- a generator of answers Claude could write ---------------------------------------------------

WORDS = st.sampled_from(
    [
        "the",
        "answer",
        "is",
        "simple",
        "Slack",
        "streams",
        "Markdown",
        "x",
        "42",
        "a<b",
        "x&y",
        "->",
        "snake_case",
        "2*3",
        "日本語",
        "東京タワー",
        "café",
        "nai\u0308ve",
        "👍",
        "🎉",
        "👨\u200d👩\u200d👧",
        "🇫🇷🇩🇪",
        "(see)",
        "end.",
        "[1]",
        "a|b",
    ]
)
INLINE = st.sampled_from(
    [
        "**bold words**",
        "*italic*",
        "_aside_",
        "~~struck out~~",
        "`co<de> && x`",
        "`a b`",
        "``tick ` inside``",
        "[a link](https://example.com/a_b)",
        "![img](https://i.io/x.png)",
        "<@U123ABC>",
        "<@U1|ana>",
        "<#C1|general>",
        "<!here>",
        "<!subteam^S1>",
        "<https://x.io/p|label with words>",
        "<https://x.io>",
    ]
)
LONG_WORD = st.text(alphabet="abcdéf", min_size=30, max_size=300)
CODE_LINE = st.one_of(
    st.sampled_from(
        [
            "if (a < b && c > d) {",
            "  return x**2;",
            "}",
            "[x](y",
            "| a | b |",
            "# not a heading",
            "<@U1>",
            "inner ``` fence",
            "~~ tilde",
            "",
            "    indented()",
        ]
    ),
    st.lists(WORDS, min_size=1, max_size=12).map(" ".join),
)


def _sentences(word: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(st.one_of(word, INLINE), min_size=1, max_size=20).map(" ".join)


def _blocks(word: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    sentence = _sentences(word)
    cell = st.lists(
        st.one_of(WORDS, st.sampled_from(["**b**", "`c`", "x\\|y"])), min_size=0, max_size=3
    ).map(" ".join)
    table = (
        st.integers(1, 4)
        .flatmap(
            lambda n: st.tuples(
                st.lists(cell, min_size=n, max_size=n),
                st.lists(st.lists(cell, min_size=max(n - 1, 1), max_size=n + 1), max_size=6),
                st.sampled_from(["---", ":--", "--:", ":-:"]),
            )
        )
        .map(
            lambda t: "\n".join(
                ["| " + " | ".join(t[0]) + " |", "|" + "|".join([t[2]] * len(t[0])) + "|"]
                + ["| " + " | ".join(row) + " |" for row in t[1]]
            )
        )
    )
    fence = st.tuples(
        st.sampled_from(["```", "~~~", "````"]),
        st.sampled_from(["", "python", "ts", "c++"]),
        st.lists(CODE_LINE, max_size=15),
    ).map(lambda t: f"{t[0]}{t[1]}\n" + "".join(line + "\n" for line in t[2]) + t[0])
    return st.one_of(
        st.lists(sentence, min_size=1, max_size=3).map("\n".join),
        st.lists(sentence, min_size=1, max_size=4).map(lambda xs: "\n".join("- " + x for x in xs)),
        st.lists(sentence, min_size=1, max_size=3).map(
            lambda xs: "\n".join(f"{i}. {x}" for i, x in enumerate(xs, 1))
        ),
        sentence.map(lambda x: "## " + x),
        sentence.map(lambda x: "> " + x),
        fence,
        table,
    )


def _answers(word: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pieces = st.lists(
        st.tuples(_blocks(word), st.sampled_from(["\n\n", "\n\n", "\n"])), min_size=1, max_size=14
    )
    return pieces.map(lambda xs: "".join(block + sep for block, sep in xs).rstrip("\n"))


ANSWERS = _answers(st.one_of(WORDS, WORDS, WORDS, LONG_WORD))
SHORT_WORD_ANSWERS = _answers(WORDS)
LIMITS = st.sampled_from([120, 300, 1_000])

# -- independent checks --------------------------------------------------------------------------

FENCE = re.compile(r"[ \t]*(`{3,}|~{3,})(.*)")
TOKEN = re.compile(
    r"<(?:[@#][A-Z0-9]+|![a-z]+|!subteam\^[A-Z0-9]+|https?://[^\s<>|]+)"
    r"(?:\|[^<>\n]*)?>"
)
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`).*?(?<!`)\1(?!`)")  # runs of equal length


def _closes(marker: str, line: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= len(marker) and stripped == marker[0] * len(stripped)


def _opens(line: str) -> str | None:
    match = FENCE.fullmatch(line)
    if match is None or (match[1][0] == "`" and "`" in match[2]):
        return None
    return match[1]


def _open_fence(text: str) -> str | None:
    """The opening line of the fence left open at the end of ``text`` (complete lines only)."""
    opener: str | None = None
    for line in text.split("\n")[:-1]:
        if opener is None:
            opener = line if _opens(line) else None
        elif _closes(_opens(opener) or "", line):
            opener = None
    return opener


def _code_masked(md: str) -> list[str]:
    """The lines of ``md`` with fenced code and code spans blanked out (offsets kept)."""
    lines, marker = [], ""
    for line in md.split("\n"):
        if marker:
            marker = "" if _closes(marker, line) else marker
            lines.append(" " * len(line))
        elif opened := _opens(line):
            marker = opened
            lines.append(" " * len(line))
        else:
            lines.append(CODE_SPAN.sub(lambda m: " " * len(m[0]), line))
    return lines


def _prose(text: str) -> list[str]:
    return [line for line in _code_masked(text) if line.strip()]


def _cuts(md: str, limit: int) -> list[int]:
    cuts, start = [], 0
    while (cut := next_cut(md, limit, start)) is not None:
        cuts.append(cut)
        start = cut
    return cuts


def _protected_spans(md: str) -> list[tuple[int, int]]:
    """Links and Slack tokens of ``md`` outside code."""
    text = "\n".join(_code_masked(md))
    link = re.compile(r"!?\[[^\[\]\n]*\]\([^()\s]*\)")
    return [(m.start(), m.end()) for pattern in (TOKEN, link) for m in pattern.finditer(text)]


def _markdown_size(payload: Any) -> int:
    return sum(len(block["text"]) for block in payload.blocks if block["type"] == "markdown")


def _block_text_size(payload: Any) -> int:
    size = 0
    for block in payload.blocks:
        if block["type"] == "markdown":
            size += len(block["text"])
        for element in block.get("elements", []):
            text = element.get("text")
            size += len(text if isinstance(text, str) else text["text"])
    return size


def _assert_within_slack_limits(payload: Any) -> None:
    assert 0 < len(payload.text) <= TEXT_FALLBACK_LIMIT < 4_000
    assert _markdown_size(payload) <= MARKDOWN_LIMIT
    assert _block_text_size(payload) <= 13_000
    assert len(payload.blocks) <= 50
    assert all(block["text"].strip() for block in payload.blocks if block["type"] == "markdown")


# -- properties ----------------------------------------------------------------------------------


@SETTINGS
@given(ANSWERS, st.data())
def test_partial_render_is_well_formed(md: str, data: st.DataObject) -> None:
    prefix = md[: data.draw(st.integers(0, len(md)))]
    shown = render_partial(prefix)
    assert _open_fence(shown + "\n") is None
    for line in _prose(shown):
        assert not re.search(r"\[[^\[\]\n]*\]\((?![^)\n]*\))", line), line  # no dangling [..](
        for lt in re.finditer("<", line):
            assert TOKEN.match(line, lt.start()), line  # no half Slack token, no raw "<"


@SETTINGS
@given(ANSWERS, LIMITS)
def test_parts_join_back_and_fit(md: str, limit: int) -> None:
    parts = split_answer(md, limit)
    assert join_parts(parts) == md
    for part in parts:
        assert len(to_slack_markdown(part)) <= limit


@SETTINGS
@given(SHORT_WORD_ANSWERS, st.sampled_from([200, 500, 1_500]))
def test_cuts_fall_between_words_and_outside_links(md: str, limit: int) -> None:
    spans = _protected_spans(md)
    for cut in _cuts(md, limit):
        assert md[cut - 1] in " \t\n", (md[cut - 20 : cut], md[cut : cut + 20])
        assert not any(start < cut < end for start, end in spans)


@SETTINGS
@given(ANSWERS, LIMITS)
def test_a_split_code_block_is_reopened_with_its_language(md: str, limit: int) -> None:
    parts = split_answer(md, limit)
    for cut, before, after in zip(_cuts(md, limit), parts, parts[1:], strict=False):
        opener = _open_fence(md[:cut])
        if opener is None:
            assert not after.startswith(("```", "~~~")) or md[cut:].startswith(after[:3])
            continue
        marker = FENCE.fullmatch(opener)[1]  # type: ignore[index]
        assert after.startswith(opener + "\n")
        assert before.rstrip(" ").endswith(
            "\n" + opener[: len(opener) - len(opener.lstrip())] + marker
        )


@SETTINGS
@given(ANSWERS, LIMITS, st.data())
def test_posted_parts_never_change_as_the_answer_grows(
    md: str, limit: int, data: st.DataObject
) -> None:
    prefix = md[: data.draw(st.integers(0, len(md)))]
    early = split_answer(prefix, limit)
    assert early[:-1] == split_answer(md, limit)[: len(early) - 1]


@SETTINGS
@given(st.text(alphabet="e\u0301\u200d👩🇫", min_size=200, max_size=600), st.integers(20, 90))
def test_hard_cuts_keep_grapheme_clusters_whole(md: str, limit: int) -> None:
    parts = split_answer(md, limit)
    assert join_parts(parts) == md
    for part in parts[1:]:
        first = part[0]
        assert unicodedata.category(first) != "Mn" and first != "\u200d"
    for part in parts[:-1]:
        assert not part.endswith("\u200d")


@SETTINGS
@given(ANSWERS, st.integers(1, 30), st.booleans())
def test_every_payload_is_within_slack_limits(md: str, copies: int, interrupted: bool) -> None:
    body = "\n\n".join([md] * copies)
    footer = format_footer(
        Usage(input_tokens=123_456, output_tokens=7_890),
        elapsed=12.3,
        model="claude-sonnet-5-5",
        cost_usd=0.1234,
        dropped_turns=3,
    )
    notes = ["_(truncated: reached the output limit)_"]
    if interrupted:
        notes.append(interrupted_note("the bot restarted"))
    payloads = [
        placeholder_payload("Thinking…", answer_id="a1"),
        streaming_payload(body, answer_id="a1"),
        final_payload(body, footer=footer, notes=notes),
        final_payload("", footer=None, notes=notes[1:]),
    ]
    parts = split_answer(body)
    payloads += [continued_payload(part) for part in parts[:-1]]
    payloads += [
        streaming_payload(parts[-1], answer_id="a1"),
        final_payload(parts[-1], footer=footer, notes=notes),
    ]
    for payload in payloads:
        _assert_within_slack_limits(payload)
    if interrupted:
        assert payloads[2].blocks[-1]["text"] == "[interrupted: the bot restarted]"


@SETTINGS
@given(
    SHORT_WORD_ANSWERS.filter(lambda md: "|---" not in md and "|:-" not in md and "|--:" not in md)
)
def test_the_history_reads_back_what_was_written(md: str) -> None:
    """Up to what was neutralised: broadcasts read back as text, tokens in code stay broken."""
    footer = format_footer(Usage(input_tokens=5, output_tokens=7))
    live = Mentions(live_users=True)
    message = final_payload(md, footer=footer, notes=[interrupted_note("x")], mentions=live)
    shown = md.replace("<!here>", "@here").replace("<!subteam^S1>", "@S1")
    assert visible_answer(message.as_kwargs()) == shown.replace("<@U1>", "<\u2060@U1>").strip()


# -- nothing Claude writes broadcasts ------------------------------------------------------------

HOSTILE = st.sampled_from(
    [
        "<!channel>",
        "<!here>",
        "<!here|here>",
        "<!everyone>",
        "<!channel|@channel>",
        "<!subteam^S0ONCALL>",
        "<!subteam^S0ONCALL|@oncall>",
        "<!CHANNEL>",
        "<@U0ALICE>",
        "<@U0ALICE|alice>",
        "<@W0BOB>",
        "&lt;!channel&gt;",
        "\\<!here>",
        "<https://evil.example|https://bank.example>",
        "[https://bank.example](https://evil.example)",
        "`<!here>`",
        "``<@U0ALICE> <!subteam^S1>``",
        "\n```sh\n<!channel> <@U0ALICE>\n",
        "\n| <!everyone> | <@W0BOB> |\n",
        "<#C1|general>",
        "<!date^1392734382^{date}|today>",
        "<",
        ">",
        "!",
        "@",
        "&",
        "|",
        "^",
        "channel",
        "here",
        "subteam^S1",
        "`",
        "```",
        "\n```\n",
        "~~~\n",
        "\n",
        "\n\n",
        " ",
        "[",
        "](",
        ")",
        "\\",
        "*",
        "_",
        "> ",
        "- ",
        "| a | b |\n|---|---|\n| ",
    ]
)
HOSTILE_TEXT = st.lists(st.one_of(HOSTILE, HOSTILE, st.text(max_size=6)), max_size=60).map("".join)
HOSTILE_NAMES = st.dictionaries(
    st.sampled_from(["U0ALICE", "W0BOB", "U1"]),
    st.one_of(st.sampled_from(["<!channel>", "x <@U0ALICE> y", "[a](https://e.io)"]), st.text()),
)
BROADCAST = re.compile(r"<!(channel|here|everyone|subteam)", re.IGNORECASE)
USER_MENTION = re.compile(r"<@[UW]", re.IGNORECASE)


def _assert_harmless(payload: Any, mentions: Mentions) -> None:
    """No string anywhere in the payload holds a live broadcast (or a live user mention, unless
    the operator allows them)."""
    dumped = json.dumps(payload.as_kwargs(), ensure_ascii=False)
    assert not BROADCAST.search(dumped), dumped
    assert mentions.live_users or not USER_MENTION.search(dumped), dumped


@SETTINGS
@given(HOSTILE_TEXT, HOSTILE_NAMES, st.booleans(), st.data())
def test_no_payload_ever_broadcasts(
    md: str, names: dict[str, str], live_users: bool, data: st.DataObject
) -> None:
    mentions = Mentions(names, live_users=live_users)
    cut = data.draw(st.integers(0, len(md)))
    start = data.draw(st.integers(0, cut))
    limit = data.draw(st.sampled_from([40, 120, 1_000]))
    footer = format_footer(Usage(input_tokens=1, output_tokens=2), model=md[:40])
    notes = [stop_reason_note("refusal", {"explanation": md}) or "", interrupted_note(md)]
    payloads = [
        streaming_payload(md[:cut], answer_id="a1", mentions=mentions),
        streaming_payload(part_text(md, start, cut), answer_id="a1", mentions=mentions),
        continued_payload(part_text(md, start, cut), mentions=mentions),
        final_payload(md, footer=footer, notes=notes, mentions=mentions),
        final_payload(part_text(md, start), footer=None, mentions=mentions),
        error_payload(md, mentions=mentions),
        placeholder_payload(md, answer_id="a1"),
    ]
    parts = split_answer(md, limit)
    payloads += [continued_payload(part, mentions=mentions) for part in parts[:-1]]
    payloads.append(final_payload(parts[-1], footer=footer, mentions=mentions))
    for payload in payloads:
        _assert_harmless(payload, mentions)
    for shown in (render_partial(md[:cut], mentions=mentions), to_slack_markdown(md)):
        assert not BROADCAST.search(shown)
    assert not BROADCAST.search(visible_answer(payloads[3].as_kwargs()))

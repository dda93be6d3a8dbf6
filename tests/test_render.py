"""What a Slack user sees of Claude's Markdown: rendering, streaming, long answers, footers."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

from bot import render
from bot.render import (
    BODY_LIMIT,
    MARKDOWN_LIMIT,
    NOTICE_BLOCK_ID,
    STOP_ACTION_ID,
    TEXT_FALLBACK_LIMIT,
    Mentions,
    Usage,
    continued_payload,
    error_payload,
    estimate_cost,
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
    thinking_payload,
    to_slack_markdown,
    visible_answer,
)

# -- to_slack_markdown ---------------------------------------------------------------------------


def test_control_characters_are_escaped_outside_code() -> None:
    assert to_slack_markdown("if a < b && c > d") == "if a &lt; b &amp;&amp; c &gt; d"


def test_channel_links_dates_and_links_keep_working() -> None:
    tokens = (
        "<#C42> <#C42|general> <!date^1392734382^{date_short}|Feb 18, 2014> "
        "<https://example.com/a?b=1|the docs> <https://example.com> <mailto:a@b.io|mail me>"
    )
    assert to_slack_markdown(f"Hi {tokens} & bye") == f"Hi {tokens} &amp; bye"


def test_broadcasts_from_claude_are_plain_text() -> None:
    md = "Hey <!channel>, <!here> and <!here|here> and <!everyone>; ping <!subteam^S77|@oncall>"
    expected = "Hey @channel, @here and @here and @everyone; ping @oncall"
    assert to_slack_markdown(md) == expected
    assert to_slack_markdown("<!subteam^S77>") == "@S77"
    live = Mentions(live_users=True)
    assert to_slack_markdown(md, mentions=live) == expected  # never live, whatever the setting


def test_user_mentions_show_the_name_without_notifying_unless_allowed() -> None:
    md = "Ask <@U0ALICE> or <@U0BOB|bobby>"
    assert to_slack_markdown(md) == "Ask @U0ALICE or @U0BOB"
    names = {"U0ALICE": "alice", "U0BOB": "Bob Builder"}
    assert to_slack_markdown(md, mentions=Mentions(names)) == "Ask @alice or @Bob Builder"
    assert to_slack_markdown(md, mentions=Mentions(names, live_users=True)) == md


def test_a_display_name_cannot_smuggle_tokens_or_markup() -> None:
    names = {"U1": "<!channel> [x](https://evil.example)\n*admin*", "U2": "x" * 200}
    shown = to_slack_markdown("<@U1> and <@U2>", mentions=Mentions(names))
    assert shown.startswith("@&lt;!channel&gt; \\[x\\](https://evil.example) \\*admin\\* and @xxx")
    assert len(shown) < 150  # a name is capped
    assert final_payload("<@U1>", footer=None, mentions=Mentions(names)).text == (
        "@&lt;!channel&gt; [x](https://evil.example) *admin*"
    )


def test_tokens_in_code_are_shown_but_never_live() -> None:
    joiner = "\u2060"
    md = "Type `<!here>` or:\n\n```\n<!channel> <@U1> <!subteam^S1>\n```\n"
    assert to_slack_markdown(md) == (
        f"Type `<{joiner}!here>` or:\n\n```\n<{joiner}!channel> <{joiner}@U1> "
        f"<{joiner}!subteam^S1>\n```\n"
    )
    table = to_slack_markdown("| a | b |\n|---|---|\n| <!here> | <@U1> |")
    assert "<!" not in table and "<@" not in table
    assert f"<{joiner}!here> | <{joiner}@U1>" in table


@pytest.mark.parametrize(
    ("md", "shown"),
    [
        (
            "<https://evil.example/login|https://bank.example/login>",
            "<https://evil.example/login>",
        ),
        (
            "[https://bank.example](https://evil.example/x)",
            "[https://evil.example/x](https://evil.example/x)",
        ),
        (
            "[www.bank.example](https://evil.example)",
            "[https://evil.example](https://evil.example)",
        ),
        (
            "[`https://bank.example`](https://evil.example)",
            "[https://evil.example](https://evil.example)",
        ),
        ("[https://a.io/docs](https://a.io/docs/v2)", "[https://a.io/docs](https://a.io/docs/v2)"),
        ("<https://a.io/x|https://a.io>", "<https://a.io/x|https://a.io>"),
        ("[main.py](https://github.com/o/r/main.py)", "[main.py](https://github.com/o/r/main.py)"),
    ],
)
def test_a_link_labelled_with_another_hosts_url_shows_where_it_goes(md: str, shown: str) -> None:
    assert to_slack_markdown(md) == shown


def test_every_payload_neutralises_what_claude_wrote() -> None:
    hostile = "<!channel> <@U1> <!subteam^S1|@all> [https://bank.example](https://evil.example)"
    payloads = [
        streaming_payload(hostile, answer_id="a"),
        final_payload(
            hostile,
            footer="Tokens: 1 in, 1 out",
            notes=[f"_Claude declined to answer._ {hostile}", interrupted_note(hostile)],
        ),
        continued_payload(hostile),
        error_payload(hostile),
    ]
    for payload in payloads:
        dumped = str(payload.as_kwargs())
        assert "<!" not in dumped and "<@" not in dumped
        assert "@channel" in dumped
        for block in payload.blocks:
            assert "bank.example" not in str(block)  # plain text of the fallback may say it


def test_code_is_never_touched() -> None:
    md = "Use `a<b && c>d` here.\n\n```cpp\nstd::vector<int> v; if (a && b) {}\n```\n"
    assert to_slack_markdown(md) == md


def test_backslash_escaped_angle_bracket_becomes_an_entity() -> None:
    assert to_slack_markdown(r"a \<b\> c") == "a &lt;b&gt; c"


def test_everything_else_is_left_as_is() -> None:
    md = (
        "# Title\n\n**bold** *it* _it_ ~~gone~~ [link](https://x.io)\n\n"
        "- one\n  - nested\n1. first\n\n> a quote\n> > nested quote\n\n"
        "emoji :tada: 🎉 👨‍👩‍👧 日本語のテキスト café\n"
    )
    assert to_slack_markdown(md) == md


def test_table_becomes_an_aligned_monospace_block() -> None:
    md = (
        "Prices:\n\n"
        "| Fruit | Price | Origin |\n"
        "|:------|------:|:------:|\n"
        "| **apple** | 1 | `NZ` |\n"
        "| kiwi | 12.50 | [Italy](https://it.example) |\n"
        "\nThat's all."
    )
    assert to_slack_markdown(md) == (
        "Prices:\n\n"
        "```\n"
        "Fruit | Price |           Origin          \n"
        "------+-------+---------------------------\n"
        "apple |     1 |             NZ            \n"
        "kiwi  | 12.50 | Italy (https://it.example)\n"
        "```\n"
        "\nThat's all."
    )


def test_table_columns_align_with_wide_characters() -> None:
    rendered = to_slack_markdown("| 名前 | n |\n|---|---|\n| 東京 | 1 |\n| Rome | 22 |")
    rows = rendered.split("\n")[1:-1]
    assert [render._width(row) for row in rows] == [9, 9, 9, 9]
    assert rows[2] == "東京 | 1 "


def test_table_cell_with_escaped_pipe_and_ragged_rows() -> None:
    rendered = to_slack_markdown("| a | b |\n|---|---|\n| x \\| y |\n| 1 | 2 | 3 |")
    assert "x | y |" in rendered
    assert "1     | 2 | 3" in rendered  # surplus cells join the last column, nothing is lost


def test_pipes_without_a_delimiter_row_are_not_a_table() -> None:
    md = "a | b\nc | d\n"
    assert to_slack_markdown(md) == md


# -- render_partial ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "shown"),
    [
        ("Here:\n```python\nprint('hi')", "Here:\n```python\nprint('hi')\n```"),
        ("```python\nprint('hi')\n", "```python\nprint('hi')\n```"),
        ("~~~~ts\nlet x = 1", "~~~~ts\nlet x = 1\n~~~~"),
        ("````md\n```js\ninner", "````md\n```js\ninner\n````"),
        ("```py\nx = 1\n``", "```py\nx = 1\n```"),  # the closing fence is still arriving
        ("Look:\n```pyth", "Look:\n"),  # the language is still arriving
        ("Look:\n```python\n", "Look:\n"),  # nothing to show in the block yet
        ("```py\nx\n```\nafter", "```py\nx\n```\nafter"),
    ],
)
def test_open_code_fences_are_closed(prefix: str, shown: str) -> None:
    assert render_partial(prefix) == shown


@pytest.mark.parametrize(
    ("prefix", "shown"),
    [
        ("See [the docs](https://exa", "See "),
        ("See [the docs]", "See "),
        ("See [the do", "See "),
        ("Ask <@U12", "Ask "),
        ("Open <https://example.com|the si", "Open "),
        ("Run `pip inst", "Run "),
        (
            "Ok [a](https://a.io) and [b](https://b.io)",
            "Ok [a](https://a.io) and [b](https://b.io)",
        ),
        ("a < b", "a &lt; b"),
        ("2 <", "2 "),
    ],
)
def test_incomplete_inline_constructs_are_held_back(prefix: str, shown: str) -> None:
    assert render_partial(prefix) == shown


@pytest.mark.parametrize(
    ("prefix", "shown"),
    [
        ("This is **very important", "This is **very important**"),
        ("This is **very important ", "This is **very important**"),
        ("An _aside", "An _aside_"),
        ("Gone: ~~old", "Gone: ~~old~~"),
        ("*outer **inner", "*outer **inner***"),
        ("Nothing yet **", "Nothing yet "),
        ("Nothing yet *", "Nothing yet "),
        ("**done**", "**done**"),
        ("snake_case_name", "snake_case_name"),
        ("- first\n- **second", "- first\n- **second**"),
        ("* bullet", "* bullet"),
    ],
)
def test_open_emphasis_is_closed(prefix: str, shown: str) -> None:
    assert render_partial(prefix) == shown


def test_partial_table_rows_are_held_back() -> None:
    header = "| a | b |\n"
    table = header + "|---|---|\n| 1 | 2 |\n"
    assert render_partial(header) == ""  # may become a table: wait for the delimiter row
    assert render_partial(header + "|--") == ""
    assert render_partial(table + "| 3 | 4") == to_slack_markdown(table)
    assert render_partial(table + "| 3 | 4 |\n") == to_slack_markdown(table + "| 3 | 4 |\n")


def test_a_line_that_is_only_a_block_marker_is_held_back() -> None:
    assert render_partial("Intro\n- ") == "Intro\n"
    assert render_partial("Intro\n--") == "Intro\n"  # would flash up as a heading underline
    assert render_partial("Intro\n12.") == "Intro\n"


def test_a_complete_answer_renders_as_it_will_in_the_end() -> None:
    md = (
        "# Plan\n\n**Step 1:** run `make <target>` & wait.\n\n| k | v |\n|---|---|\n| a | 1 |\n\n"
        "```sh\necho done\n```\n\nSee [docs](https://d.io) <@U1>.\n"
    )
    assert render_partial(md) == to_slack_markdown(md)


# -- splitting -----------------------------------------------------------------------------------


def test_short_answers_are_one_part() -> None:
    assert next_cut("hello") is None
    assert split_answer("hello") == ["hello"]
    assert split_answer("") == [""]


def test_long_answers_split_at_paragraphs_and_join_back() -> None:
    paragraph = ("All work and no play makes Jack a dull boy. " * 20).strip()
    md = "\n\n".join([paragraph] * 40)
    parts = split_answer(md)
    assert len(parts) > 1
    assert join_parts(parts) == md
    for part in parts[:-1]:
        assert part.endswith("boy.\n\n")
        assert len(to_slack_markdown(part)) <= BODY_LIMIT


def test_escaping_growth_counts_against_the_limit() -> None:
    md = "a<b " * 4_000
    parts = split_answer(md)
    assert all(len(to_slack_markdown(part)) <= BODY_LIMIT for part in parts)
    assert join_parts(parts) == md


def test_a_long_paragraph_is_cut_between_words() -> None:
    md = " ".join(f"word{i}" for i in range(5_000))
    parts = split_answer(md, 1_000)
    assert join_parts(parts) == md
    for part in parts[:-1]:
        assert part.endswith(" ")


def test_a_word_longer_than_the_limit_is_cut_anyway() -> None:
    md = "x" * 2_500
    assert [len(part) for part in split_answer(md, 1_000)] == [1_000, 1_000, 500]


def test_links_and_tokens_are_not_cut() -> None:
    link = "[a link with many words in its text](https://example.com/path)"
    md = " ".join([link] * 200)
    for part in split_answer(md, 500)[:-1]:
        assert part.endswith(") ")


def test_code_block_split_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"print({i})  # <{i}>" for i in range(1_000))
    md = f"Code:\n\n```python\n{code}\n```\n\nDone."
    parts = split_answer(md, 2_000)
    assert len(parts) > 2
    assert parts[0].endswith("\n```")
    for part in parts[1:-1]:
        assert part.startswith("```python\n")
        assert part.endswith("\n```")
    assert join_parts(parts) == md
    assert all(len(to_slack_markdown(part)) <= 2_000 for part in parts)


def test_a_single_code_line_longer_than_the_limit() -> None:
    md = "```\n" + "y" * 3_000 + "\n```"
    parts = split_answer(md, 1_000)
    assert all(len(part) <= 1_000 for part in parts)
    assert parts[1].startswith("```\n")
    assert join_parts(parts) == md


def test_incremental_cuts_match_the_whole_answer() -> None:
    md = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum " * 30 for i in range(60))
    cuts, start = [], 0
    for end in [*range(0, len(md), 97), len(md)]:  # the answer arrives bit by bit
        while (cut := next_cut(md[:end], 1_500, start)) is not None:
            cuts.append(cut)
            start = cut
    bounds = [0, *cuts, len(md)]
    streamed = [part_text(md, a, b if b < len(md) else None) for a, b in pairwise(bounds)]
    assert streamed == split_answer(md, 1_500)


def test_next_cut_on_the_remaining_text() -> None:
    md = "word " * 5_000
    cut = next_cut(md)
    assert cut is not None
    assert next_cut(md[cut:]) == next_cut(md, start=cut) - cut  # type: ignore[operator]


# -- footer, cost, notes -------------------------------------------------------------------------


def test_footer_with_thousands_separators() -> None:
    assert format_footer(Usage(input_tokens=1_234, output_tokens=567)) == (
        "Tokens: 1,234 in, 567 out"
    )


def test_footer_with_everything() -> None:
    usage = Usage(
        input_tokens=34,
        output_tokens=1_567,
        cache_creation_input_tokens=200,
        cache_read_input_tokens=1_000,
    )
    footer = format_footer(
        usage, elapsed=3.24, model="claude-sonnet-5-5", cost_usd=0.01234, dropped_turns=12
    )
    assert footer == (
        "Tokens: 1,234 in, 1,567 out · cache 1,000 read, 200 written · 3.2 s · "
        "claude-sonnet-5-5 · ~$0.0123 · 12 earlier messages left out"
    )
    assert usage.total_input == 1_234
    assert format_footer(Usage(), dropped_turns=1).endswith("1 earlier message left out")


@pytest.mark.parametrize(
    ("model", "usage", "dollars"),
    [
        ("claude-sonnet-5-5", Usage(input_tokens=1_000_000), 2.0),
        ("claude-sonnet-5-5", Usage(output_tokens=1_000_000), 10.0),
        ("claude-opus-5-5", Usage(input_tokens=500_000, output_tokens=100_000), 4.0),
        ("claude-haiku-4-5-20251001", Usage(input_tokens=1_000_000, output_tokens=1_000_000), 6.0),
        ("claude-opus-4-7", Usage(cache_creation_input_tokens=1_000_000), 6.25),
        ("claude-opus-4-7", Usage(cache_read_input_tokens=1_000_000), 0.5),
        ("claude-fable-5-1", Usage(input_tokens=1_000, output_tokens=1_000), 0.06),
        ("claude-sonnet-4-6", Usage(input_tokens=1_000_000), 3.0),
        ("claude-haiku-5-5", Usage(input_tokens=100_000, output_tokens=100_000), 0.06),
        ("claude-haiku-5-5", Usage(input_tokens=200_000, output_tokens=100_000), 0.35),
    ],
)
def test_estimate_cost(model: str, usage: Usage, dollars: float) -> None:
    assert estimate_cost(usage, model) == pytest.approx(dollars)


def test_unknown_models_have_no_price() -> None:
    assert estimate_cost(Usage(input_tokens=10), "gpt-9") is None
    assert estimate_cost(Usage(input_tokens=10), "claude-opus-4-60") is None


def test_tiny_costs_are_not_shown_as_zero() -> None:
    assert format_footer(Usage(), cost_usd=0.00001).endswith("<$0.0001")


def test_interrupted_note() -> None:
    assert interrupted_note(None) == "[interrupted]"
    assert interrupted_note("") == "[interrupted]"
    assert interrupted_note("the bot\nrestarted") == "[interrupted: the bot restarted]"


@pytest.mark.parametrize(
    ("reason", "details", "note"),
    [
        ("end_turn", None, None),
        ("stop_sequence", None, None),
        (None, None, None),
        ("max_tokens", None, "_(truncated: reached the output limit)_"),
        ("model_context_window_exceeded", None, "_(truncated: the conversation is too long)_"),
        ("refusal", {"type": "refusal", "explanation": None}, "_Claude declined to answer._"),
        (
            "refusal",
            {"type": "refusal", "category": "cyber", "explanation": "It could\ncause harm."},
            "_Claude declined to answer._ It could cause harm.",
        ),
        ("tool_use", None, "_(stopped: Claude asked to use a tool, which this bot does not run)_"),
        (
            "pause_turn",
            None,
            "_(paused by Claude before finishing: its lookups took too many rounds)_",
        ),
        ("brand_new_reason", None, "_(stopped: brand_new_reason)_"),
    ],
)
def test_stop_reason_notes(
    reason: str | None, details: dict[str, Any] | None, note: str | None
) -> None:
    assert stop_reason_note(reason, details) == note


# -- payloads ------------------------------------------------------------------------------------


def _types(payload: render.SlackPayload) -> list[str]:
    return [block["type"] for block in payload.blocks]


def _stop_buttons(payload: render.SlackPayload) -> list[dict[str, Any]]:
    return [
        element
        for block in payload.blocks
        if block["type"] == "actions"
        for element in block["elements"]
        if element.get("action_id") == STOP_ACTION_ID
    ]


def test_placeholder_has_the_text_and_a_stop_button() -> None:
    payload = placeholder_payload("Thinking…", answer_id="ans-1")
    assert payload.text == "Thinking…"
    assert payload.blocks[0] == {"type": "markdown", "text": "Thinking…"}
    [button] = _stop_buttons(payload)
    assert button["value"] == "ans-1"
    assert button["style"] == "danger"
    assert button["text"]["text"] == "Stop"
    assert _stop_buttons(placeholder_payload("Thinking…", answer_id=None)) == []
    assert payload.as_kwargs() == {"text": payload.text, "blocks": payload.blocks}


def test_thinking_payload_never_shows_thinking() -> None:
    payload = thinking_payload(answer_id="a")
    assert payload.blocks[0]["text"] == "Thinking…"
    assert _types(payload) == ["markdown", "actions"]


def test_streaming_payload_shows_the_safe_prefix_with_stop() -> None:
    payload = streaming_payload("Sure! Here is **the plan", answer_id="a")
    assert payload.blocks[0]["text"] == "Sure! Here is **the plan**"
    assert len(_stop_buttons(payload)) == 1
    assert payload.text == "Sure! Here is the plan"
    empty = streaming_payload("", answer_id="a")
    assert empty.blocks[0]["text"].strip()  # Slack refuses an empty markdown block


def test_final_payload_has_body_notes_footer_and_no_stop() -> None:
    footer = format_footer(Usage(input_tokens=1_234, output_tokens=567))
    note = stop_reason_note("max_tokens", None)
    assert note is not None
    payload = final_payload("The answer is **42** & more", footer=footer, notes=[note])
    assert _types(payload) == ["markdown", "context"]
    assert payload.blocks[0]["text"] == (
        "The answer is **42** &amp; more\n\n_(truncated: reached the output limit)_"
    )
    assert payload.blocks[1]["elements"][0] == {"type": "mrkdwn", "text": footer}
    assert _stop_buttons(payload) == []
    assert payload.text.endswith("Tokens: 1,234 in, 567 out")


def test_a_note_is_escaped_once_in_the_text_fallback() -> None:
    payload = final_payload("x", footer=None, notes=["_Claude declined to answer._ a & b"])
    assert payload.text == "x\n\n_Claude declined to answer._ a &amp; b"


def test_interrupted_is_the_last_line_after_the_footer() -> None:
    footer = format_footer(Usage(input_tokens=10, output_tokens=5))
    payload = final_payload(
        "Partial answ",
        footer=footer,
        notes=[interrupted_note("stopped by <@U1>")],
        mentions=Mentions({"U1": "ana"}),
    )
    assert _types(payload) == ["markdown", "context", "markdown"]
    assert payload.blocks[-1]["text"] == "[interrupted: stopped by @ana]"
    assert payload.text.splitlines()[-1] == "[interrupted: stopped by @ana]"
    assert payload.text.splitlines()[-2] == footer


def test_interruption_before_any_text() -> None:
    payload = final_payload("", footer=None, notes=[interrupted_note("replica lost")])
    assert _types(payload) == ["markdown"]
    assert payload.blocks[0]["text"] == "[interrupted: replica lost]"
    assert payload.text == "[interrupted: replica lost]"


def test_empty_body_with_footer_still_has_a_markdown_block() -> None:
    payload = final_payload("  ", footer="Tokens: 1 in, 0 out")
    assert _types(payload) == ["markdown", "context"]
    assert all(block["text"] for block in payload.blocks if block["type"] == "markdown")


def test_final_payload_stays_within_slack_limits_even_when_given_too_much() -> None:
    payload = final_payload(
        "<b> " * 10_000,
        footer="Tokens: 1 in, 1 out",
        notes=["_(truncated: reached the output limit)_", interrupted_note("x")],
    )
    markdown = sum(len(block["text"]) for block in payload.blocks if block["type"] == "markdown")
    assert markdown <= MARKDOWN_LIMIT
    assert len(payload.text) <= TEXT_FALLBACK_LIMIT
    assert "_(answer cut short: too long for one Slack message)_" in payload.blocks[0]["text"]
    assert payload.blocks[-1]["text"] == "[interrupted: x]"


def test_continued_payload_closes_an_open_fence_and_hints() -> None:
    payload = continued_payload("```py\nx = 1\n")
    assert payload.blocks[0]["text"] == "```py\nx = 1\n```"
    assert payload.blocks[1]["type"] == "context"
    assert "continued below" in payload.blocks[1]["elements"][0]["text"]
    assert _stop_buttons(payload) == []


def test_error_payload_is_one_clear_line() -> None:
    line = ":warning: Claude is overloaded right now. Please try again in a minute."
    payload = error_payload(line)
    assert payload.text == line
    assert payload.blocks == [
        {
            "type": "section",
            "block_id": NOTICE_BLOCK_ID,
            "text": {"type": "mrkdwn", "text": line},
        }
    ]
    # A notice is not an answer: it never becomes an assistant turn in a later conversation.
    assert visible_answer({"text": line, "blocks": payload.blocks}) == ""


def test_text_fallback_is_short_plain_and_cut_on_a_word() -> None:
    body = "## Heading\n\n**Bold** [link text](https://x.io) " + "lorem ipsum " * 1_000
    text = streaming_payload(body, answer_id=None).text
    assert len(text) <= TEXT_FALLBACK_LIMIT
    assert text.startswith("Heading\n\nBold link text lorem")
    assert text.endswith("ipsum…") or text.endswith("lorem…")


# -- visible_answer ------------------------------------------------------------------------------


def _as_message(payload: render.SlackPayload) -> dict[str, Any]:
    return {"type": "message", "bot_id": "B1", **payload.as_kwargs()}


def test_visible_answer_round_trips_the_final_message() -> None:
    body = "Use `a<b` & **care**: x > y.\n\n- one\n- two <@U1>\n\n```\nif (a && b) {}\n```"
    footer = format_footer(Usage(input_tokens=9, output_tokens=9), model="claude-sonnet-5-5")
    live = Mentions(live_users=True)
    for notes in (
        [],
        ["_(truncated: reached the output limit)_"],
        ["_Claude declined to answer._ Because.", interrupted_note("shutdown")],
    ):
        message = _as_message(final_payload(body, footer=footer, notes=notes, mentions=live))
        assert visible_answer(message) == body
    shown = _as_message(final_payload(body, footer=footer, mentions=Mentions({"U1": "ana"})))
    assert visible_answer(shown) == body.replace("<@U1>", "@ana")


def test_visible_answer_never_reads_back_a_live_broadcast() -> None:
    """What Claude reads in the history it may write again: broadcasts come back as text."""
    message = {"text": "&lt;!channel&gt; <!here> <!subteam^S1|@oncall> <!subteam^S2>"}
    assert visible_answer(message) == "@channel @here @oncall @S2"
    markdown = {"blocks": [{"type": "markdown", "text": "a &lt;!everyone&gt; b"}]}
    assert visible_answer(markdown) == "a @everyone b"
    rich = {
        "blocks": [
            {
                "type": "rich_text",
                "elements": [
                    {
                        "type": "rich_text_section",
                        "elements": [
                            {"type": "broadcast", "range": "channel"},
                            {"type": "text", "text": " and "},
                            {"type": "usergroup", "usergroup_id": "S1"},
                        ],
                    }
                ],
            }
        ]
    }
    assert visible_answer(rich) == "@channel and @S1"


def test_visible_answer_of_an_interrupted_empty_answer_is_empty() -> None:
    message = _as_message(final_payload("", footer=None, notes=[interrupted_note(None)]))
    assert visible_answer(message) == ""


def test_visible_answer_falls_back_to_text() -> None:
    message = {"text": "x &lt; y &amp; z\n\nTokens: 12 in, 3 out · 1.0 s\n[interrupted: gone]"}
    assert visible_answer(message) == "x < y & z"


INTERRUPTED_FORMS = [
    "[interrupted]",
    "[interrupted: the connection dropped]",
    "[interrupted] the connection dropped",
    "_[interrupted]_",
    "_[interrupted]_ (the connection dropped)",
]


@pytest.mark.parametrize("note", INTERRUPTED_FORMS)
def test_visible_answer_drops_the_interrupted_note_in_every_wording(note: str) -> None:
    """The bot writes `[interrupted: reason]`; reading back it knows every form the operating
    contract allows as a message's last line: after a footer, in its own block, or alone."""
    assert visible_answer({"text": f"x &lt; y\n\nTokens: 12 in, 3 out · 1.0 s\n{note}"}) == "x < y"
    blocks = [{"type": "markdown", "text": "x &lt; y"}, {"type": "markdown", "text": note}]
    assert visible_answer({"blocks": blocks}) == "x < y"
    assert visible_answer({"text": note}) == ""


@pytest.mark.parametrize("reason", ["", " (stopped by @ana)"])
def test_visible_answer_drops_an_italic_interrupted_note_read_as_rich_text(reason: str) -> None:
    note = [{"type": "text", "text": "[interrupted]", "style": {"italic": True}}]
    if reason:
        note.append({"type": "text", "text": reason})
    sections = [[{"type": "text", "text": "Half an answer\n"}], note]
    elements = [{"type": "rich_text_section", "elements": section} for section in sections]
    message = {"blocks": [{"type": "rich_text", "elements": elements}]}
    assert visible_answer(message) == "Half an answer"


def test_visible_answer_keeps_text_that_only_looks_like_an_interrupted_note() -> None:
    for body in (
        "The job was [interrupted] twice.",
        "[interrupted]: a label of Claude's",
        "_[interrupted]",
        "[interrupted]\nand then it went on",
    ):
        assert visible_answer({"text": body}) == body


def test_visible_answer_reads_rich_text_blocks() -> None:
    message = {
        "text": "fallback",
        "blocks": [
            {
                "type": "rich_text",
                "elements": [
                    {
                        "type": "rich_text_section",
                        "elements": [
                            {"type": "text", "text": "Hi "},
                            {"type": "text", "text": "there", "style": {"bold": True}},
                            {"type": "text", "text": " "},
                            {"type": "user", "user_id": "U1"},
                            {"type": "text", "text": " see "},
                            {"type": "link", "url": "https://x.io", "text": "docs"},
                            {"type": "text", "text": "\n"},
                        ],
                    },
                    {
                        "type": "rich_text_list",
                        "style": "bullet",
                        "elements": [
                            {
                                "type": "rich_text_section",
                                "elements": [{"type": "text", "text": "a"}],
                            },
                            {
                                "type": "rich_text_section",
                                "elements": [{"type": "text", "text": "b"}],
                            },
                        ],
                    },
                    {
                        "type": "rich_text_preformatted",
                        "elements": [
                            {"type": "text", "text": "x = 1 < 2"},
                        ],
                    },
                ],
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "Tokens: 1 in, 1 out"}]},
        ],
    }
    assert visible_answer(message) == (
        "Hi **there** <@U1> see [docs](https://x.io)\n- a\n- b\n```\nx = 1 < 2\n```"
    )

"""What one Claude answer used, in tokens, and what that cost.

Pure data and arithmetic: the fold of Claude's stream fills a `Usage`, the footer shows it and
`estimate_cost` prices it. Kept apart from rendering so that a price change touches no Slack code.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Usage:
    """Claude's token counts for one answer, as its stream reports them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    # Claude's server tools, as billed (`usage.server_tool_use` of the stream's message_delta).
    web_search_requests: int = 0
    web_fetch_requests: int = 0

    def __add__(self, other: Usage) -> Usage:
        """Two requests' usage together: an answer continued after `pause_turn` is several."""
        summed = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        return Usage(**summed)

    @property
    def server_tool_calls(self) -> int:
        """Billed server tool calls: the usage ledger counts them per model."""
        return self.web_search_requests + self.web_fetch_requests

    @property
    def total_input(self) -> int:
        """Everything the prompt cost in tokens: uncached input, cache writes and cache reads."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


# Characters of answer text taken as one output token when Claude has not said how many it wrote
# (about right for English prose; code and most other languages need more tokens per character).
CHARS_PER_TOKEN = 4


def cut_short(usage: Usage, text: str) -> Usage:
    """The usage of an answer whose stream was cut short (its replica died), for the counters.

    Claude reports a request's input at its start (`message_start`) but its output only at its
    end (`message_delta`): a stream cut short knows its input and the output of any request
    that ended, little more. Output tokens are therefore taken as the larger of what was
    reported and one token per `CHARS_PER_TOKEN` characters of the text written so far (an
    estimate, usually on the low side: thinking and tool calls are output too)."""
    written = -(-len(text) // CHARS_PER_TOKEN)
    return usage if usage.output_tokens >= written else replace(usage, output_tokens=written)


# $ per million tokens, input / output (platform.claude.com pricing, late 2026).
_PRICES: dict[str, tuple[float, float]] = {
    "claude-fable-5-1": (10.0, 50.0),
    "claude-opus-5-5": (4.0, 20.0),
    "claude-sonnet-5-5": (2.0, 10.0),
    "claude-haiku-5-5": (0.10, 0.50),
    "claude-opus-4-8": (5.0, 25.0),
    "claude-opus-4-7": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
}
# Haiku 5.5 costs more once the prompt passes 100K tokens.
_LONG_PROMPT_PRICES: dict[str, tuple[int, float, float]] = {
    "claude-haiku-5-5": (100_000, 0.50, 2.50),
}
_CACHE_WRITE, _CACHE_READ = 1.25, 0.1
# Web search is billed per search ($10 per 1,000); web fetch costs only the tokens it adds.
_PER_WEB_SEARCH = 10.0 / 1000


def estimate_cost(usage: Usage, model: str) -> float | None:
    """Approximate $ cost of one answer; None for a model not in the price table. Dated ids
    (``claude-haiku-4-5-20251001``) match their base id."""
    base = next((key for key in _PRICES if model == key or model.startswith(key + "-")), None)
    if base is None:
        return None
    price_in, price_out = _PRICES[base]
    threshold, long_in, long_out = _LONG_PROMPT_PRICES.get(base, (0, price_in, price_out))
    if threshold and usage.total_input > threshold:
        price_in, price_out = long_in, long_out
    dollars = (
        usage.input_tokens * price_in
        + usage.cache_creation_input_tokens * price_in * _CACHE_WRITE
        + usage.cache_read_input_tokens * price_in * _CACHE_READ
        + usage.output_tokens * price_out
    )
    return dollars / 1_000_000 + usage.web_search_requests * _PER_WEB_SEARCH

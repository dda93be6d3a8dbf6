"""Prometheus metrics, one registry per bot instance.

A registry per instance (rather than the global default) lets tests and the benchmark run
several bots in one process without collectors colliding.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bot.lifecycle import Outcome

OUTCOMES = tuple(str(outcome) for outcome in Outcome)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
_DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2)


class Metrics:
    """All collectors of the bot; attribute names match the exported metric names."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ns = "slackstream"
        self.answers_started = Counter(
            "answers_started", "Answers begun (placeholder posted)", namespace=ns, registry=r
        )
        self.answers_finished = Counter(
            "answers_finished",
            "Answers finished, by outcome",
            ["outcome"],
            namespace=ns,
            registry=r,
        )
        self.answers_in_flight = Gauge(
            "answers_in_flight", "Answers streaming in this replica", namespace=ns, registry=r
        )
        self.time_to_first_text = Histogram(
            "time_to_first_text_seconds",
            "From the event to the first answer text shown",
            namespace=ns,
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.answer_duration = Histogram(
            "answer_duration_seconds",
            "From the event to the final edit",
            namespace=ns,
            registry=r,
            buckets=_DURATION_BUCKETS,
        )
        self.edits = Counter(
            "edits", "chat.update edits sent, by kind", ["kind"], namespace=ns, registry=r
        )
        self.edits_skipped = Counter(
            "edits_skipped",
            "Intermediate edits skipped, by reason",
            ["reason"],
            namespace=ns,
            registry=r,
        )
        self.slack_calls = Counter(
            "slack_calls", "Slack Web API calls", ["method"], namespace=ns, registry=r
        )
        self.slack_errors = Counter(
            "slack_errors",
            "Slack Web API errors by method and error name",
            ["method", "error"],
            namespace=ns,
            registry=r,
        )
        self.slack_rate_limit_pauses = Counter(
            "slack_rate_limit_pauses",
            "Workspace-wide chat.update pauses after a 429",
            namespace=ns,
            registry=r,
        )
        self.slack_rate_limit_pause_seconds = Counter(
            "slack_rate_limit_pause_seconds",
            "Seconds of workspace-wide chat.update pauses ordered by 429s (their Retry-After)",
            namespace=ns,
            registry=r,
        )
        self.claude_errors = Counter(
            "claude_errors", "Claude failures by type", ["type"], namespace=ns, registry=r
        )
        self.tokens = Counter(
            "tokens",
            "Claude tokens, in (all input incl. cache) and out",
            ["direction"],
            namespace=ns,
            registry=r,
        )
        self.store_latency = Histogram(
            "store_latency_seconds",
            "Store call latency by operation",
            ["op"],
            namespace=ns,
            registry=r,
            buckets=_STORE_BUCKETS,
        )
        self.store_errors = Counter(
            "store_errors", "Store failures by operation", ["op"], namespace=ns, registry=r
        )
        self.store_degraded = Gauge(
            "store_degraded", "1 while the shared store is unreachable", namespace=ns, registry=r
        )
        self.records_reregistered = Counter(
            "records_reregistered",
            "Answers registered again after the store lost their record (an empty restart)",
            namespace=ns,
            registry=r,
        )
        self.janitor_recoveries = Counter(
            "janitor_recoveries",
            "Orphaned answers finished by the janitor",
            namespace=ns,
            registry=r,
        )
        self.events = Counter(
            "events", "Slack events received, by type", ["type"], namespace=ns, registry=r
        )
        self.events_deduped = Counter(
            "events_deduped", "Slack events dropped as duplicates", namespace=ns, registry=r
        )
        # -- running for a company: usage, budgets, feedback (never per person or channel:
        # label values stay few, the store keeps the per-person and per-channel counters) --
        self.usage_answers = Counter(
            "usage_answers",
            "Answers whose usage was counted, by model and outcome",
            ["model", "outcome"],
            namespace=ns,
            registry=r,
        )
        self.usage_tokens = Counter(
            "usage_tokens",
            "Claude tokens of counted answers, by model, outcome and kind (input, output, "
            "cache_read, cache_write)",
            ["model", "outcome", "kind"],
            namespace=ns,
            registry=r,
        )
        self.usage_cost = Counter(
            "usage_cost_usd",
            "Estimated cost in US dollars of counted answers, by model and outcome",
            ["model", "outcome"],
            namespace=ns,
            registry=r,
        )
        self.server_tool_calls = Counter(
            "server_tool_calls",
            "Server tool requests (web search, web fetch) of counted answers, by model",
            ["model"],
            namespace=ns,
            registry=r,
        )
        self.budget_refusals = Counter(
            "budget_refusals",
            "Questions refused because a budget was used up, by budget",
            ["budget"],
            namespace=ns,
            registry=r,
        )
        self.feedback = Counter(
            "feedback",
            "Feedback votes recorded (a changed vote counts its new value), by value",
            ["value"],
            namespace=ns,
            registry=r,
        )

    def render(self) -> bytes:
        """The registry in Prometheus text format, for GET /metrics."""
        return generate_latest(self.registry)

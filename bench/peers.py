"""Other bots' pacing policies, the pacing benchmark's baselines: each is a `PacingPolicy` the
bot's own pipeline runs, without the shared workspace budget the bot paces by."""

from __future__ import annotations

from bot.pacing import PacingPolicy


def every_20_deltas() -> PacingPolicy:
    """Edit every 20 stream chunks, no shared budget; the SDK's one 429 retry, then give up."""
    return PacingPolicy(
        "every-20-chunks", 0.0, every_deltas=20, shared_budget=False, final_attempts=2
    )


def one_per_second() -> PacingPolicy:
    """One edit per second per message, no shared budget; one 429 retry, then give up."""
    return PacingPolicy("1-per-second", 1.0, shared_budget=False, final_attempts=2)

"""What replicas agree on: answers in flight (leases, checkpoints, tombstones), dedupe, Stop
requests, the workspace edit budget and the thread cache; and, for running the bot for a
company, the usage ledger (usage, budgets' spend, feedback, channel overrides) and the file cache.

`MemoryStore` serves a lone replica; `RedisStore` lets replicas share one Redis. The contract,
the records and the clock are in `contract.py` (the ledger's records in `ledger.py`); key shapes
in `keys.py`; the atomic steps in `lua.py` (the ledger's in `lua_ledger.py`);
`InstrumentedStore` measures every call, whoever makes it.

Each store is built from parts, one concept each, in modules of their own: the answers' life
(`memory`, `redis_store`), Stop (`*_cancels`), copies of what was read from Slack (`*_caches`)
and the usage ledger (`*_ledger`); the Redis parts share a client (`redis_base`). The parts are
mixins of the store rather than objects it delegates to: callers hold one `Store`; each method
is written once, in the part that owns it, not again as a delegating copy of its signature;
and the parts share the store's clock (and client) without handing them around.
"""

from bot.store.contract import (
    AnswerRecord,
    Checkpoint,
    EditGrant,
    EventClaim,
    LeaseReport,
    LeaseState,
    Registration,
    Store,
    StoreError,
    thread_order,
)
from bot.store.instrumented import InstrumentedStore
from bot.store.keys import DEFAULT_PREFIX
from bot.store.ledger import (
    AdmissionView,
    ChannelOverride,
    FeedbackVote,
    Spend,
    SpendView,
    Thresholds,
    UsageCell,
    UsageEntry,
    UsageKeep,
    UsageTotals,
    VoteResult,
)
from bot.store.memory import MemoryStore
from bot.store.redis_store import RedisStore

__all__ = [
    "DEFAULT_PREFIX",
    "AnswerRecord",
    "Checkpoint",
    "EditGrant",
    "EventClaim",
    "InstrumentedStore",
    "LeaseReport",
    "LeaseState",
    "MemoryStore",
    "RedisStore",
    "Registration",
    "Store",
    "StoreError",
    "thread_order",
]
# Running for a company (`ledger.py`).
__all__ += [
    "AdmissionView",
    "ChannelOverride",
    "FeedbackVote",
    "Spend",
    "SpendView",
    "Thresholds",
    "UsageCell",
    "UsageEntry",
    "UsageKeep",
    "UsageTotals",
    "VoteResult",
]

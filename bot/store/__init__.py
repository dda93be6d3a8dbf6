"""What replicas agree on: answers in flight (leases, checkpoints, tombstones), dedupe, Stop
requests, the workspace edit budget and the thread cache.

`MemoryStore` serves a lone replica; `RedisStore` lets replicas share one Redis. The contract,
the records and the clock are in `contract.py`; key shapes in `keys.py`; the atomic steps in
`lua.py`; `InstrumentedStore` measures every call, whoever makes it.
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

"""The store contract (`bot/store/contract.py`), run against MemoryStore and RedisStore alike,
then what only Redis can show: its failure modes, stalls, costs and key expiries.

Every store of a test shares its `store_clock`, a `ManualClock` (see conftest.py): leases,
buckets and the memory store's expiries move only when the test moves that clock. Redis expires
keys (event claims, cancel flags, cached threads) on its own clock, which no test can move:
those tests use short ttls and poll (`expired`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bot.lifecycle import Outcome, Phase
from bot.pacing import COMPETING_WINDOW_SECONDS, LINE_GRACE_SECONDS, TokenBucket
from bot.sim.redis import RedisServer, free_port
from bot.store import (
    AnswerRecord,
    ChannelOverride,
    Checkpoint,
    EventClaim,
    FeedbackVote,
    LeaseReport,
    LeaseState,
    MemoryStore,
    RedisStore,
    Registration,
    Spend,
    SpendView,
    Store,
    StoreError,
    Thresholds,
    UsageEntry,
    UsageKeep,
    VoteResult,
)
from bot.store.memory import TOMBSTONE_SECONDS
from bot.store.redis_store import TEXT_KEEP_SECONDS
from bot.usage import Usage
from tests.conftest import T0, ManualClock

# ============================================================================================
# Helpers
# ============================================================================================

LEASE = 15.0
DEDUPE_TTL = 6 * 3600.0  # the bot's: well past Slack's retries
THREAD_TS = "1700000000.000100"
COMPLETED = str(Outcome.COMPLETED)
PREFIX = "slackstream:"  # the default key prefix, for tests that read Redis directly


def answer(
    answer_id: str, *, owner: str = "r1", incarnation: str = "i1", **fields: Any
) -> AnswerRecord:
    """An answer as a replica first registers it; `fields` override any other field. The
    token is derived from the id, owner and incarnation, so two builders of the same answer
    agree on it; a first registration is its own origin."""
    token = f"tok:{answer_id}:{owner}:{incarnation}"
    values: dict[str, Any] = {
        "answer_id": answer_id,
        "team_id": "T1",
        "channel": "C1",
        "thread_ts": THREAD_TS,
        "question_ts": "1700000000.000150",
        "asker": "U1",
        "owner": owner,
        "incarnation": incarnation,
        "token": token,
        "origin": token,
        "started_at": T0 - 2.5,
        "text": "Hello *world* — ünïcode ✓",
        "model": "claude-sonnet-5-5",
    }
    values.update(fields)
    return AnswerRecord(**values)


def asked(answer_id: str, team: str, user: str, **fields: Any) -> AnswerRecord:
    """An answer to `user`'s question in workspace `team` (for the caps)."""
    return answer(answer_id, team_id=team, asker=user, **fields)


def stored(record: AnswerRecord, *, at: float = T0, lease: float = LEASE) -> AnswerRecord:
    """What the store holds after registering `record` at `at` on its clock."""
    return replace(record, lease_until=at + lease)


def tombstone(record: AnswerRecord, outcome: str = COMPLETED) -> AnswerRecord:
    """What a finished answer reads back as: final, with its outcome and without its text."""
    return replace(record, phase=Phase.FINISHED, outcome=outcome, text="")


async def register(
    store: Store,
    record: AnswerRecord,
    *,
    lease_seconds: float = LEASE,
    take_back: bool = False,
    dedupe_ttl_seconds: float = DEDUPE_TTL,
) -> Registration:
    return await store.register(
        record,
        lease_seconds=lease_seconds,
        take_back=take_back,
        dedupe_ttl_seconds=dedupe_ttl_seconds,
    )


async def registered(store: Store, *records: AnswerRecord, lease_seconds: float = LEASE) -> None:
    """Register each record, which must be new."""
    for record in records:
        assert await register(store, record, lease_seconds=lease_seconds) == Registration(True)


async def renew(
    store: Store, record: AnswerRecord, checkpoint: Checkpoint | None = None
) -> LeaseReport:
    """Renew `record`'s lease with its token (which may have lost it since)."""
    return await store.renew(
        record.answer_id, record.token, lease_seconds=LEASE, checkpoint=checkpoint
    )


async def finish(store: Store, record: AnswerRecord, outcome: str = COMPLETED) -> LeaseState:
    return await store.finish(record.answer_id, record.token, outcome=outcome)


async def text_of(store: Store, answer_id: str) -> str:
    record = await store.get(answer_id)
    assert record is not None, f"{answer_id} has no record"
    return record.text


def appended(text: str, after: str) -> Checkpoint:
    """A checkpoint that appends `text` to a stored text that is `after` so far."""
    return Checkpoint(text=text, text_at=len(after.encode()))


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> bool:
    """Poll `check` until it holds or the deadline passes (for Redis-side expiry and
    reconnection, which no event announces)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def expired(
    store: Store, clock: ManualClock, at: float, check: Callable[[], Awaitable[bool]]
) -> bool:
    """Move the clock to `at`, past an expiry, and say whether `check` then holds. That is the
    memory store's whole story; Redis expires keys on its own clock, so its ttls are short and
    `check` is polled until Redis has let the key go."""
    clock.now = at
    if isinstance(store, MemoryStore):
        return await check()
    return await eventually(check)


async def listening(store: Store, url: str | None, subscribers: int = 1) -> None:
    """Wait until `subscribers` cancel listeners are subscribed (Redis subscribes lazily)."""
    if not isinstance(store, RedisStore):
        return
    assert url is not None
    client = redis.asyncio.Redis.from_url(url)
    try:

        async def subscribed() -> bool:
            counts = await client.pubsub_numsub(PREFIX + "cancel")
            return bool(counts[0][1] >= subscribers)

        assert await eventually(subscribed), "cancel listener never subscribed"
    finally:
        await client.aclose()


def url_of(store: Store, request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if isinstance(store, RedisStore) else None


async def wait_for_token(store: Store, team_id: str, **kw: Any) -> float:
    """The budget's answer as a number: 0.0 when a token was taken, else the wait."""
    return (await store.take_edit_token(team_id, **kw)).wait


async def commands_run(
    client: redis.asyncio.Redis, action: Callable[[], Awaitable[None]], *, round_trips: int
) -> int:
    """Commands Redis executed for `action` (inside scripts included), after checking that it
    sent `round_trips` scripts: one round trip each."""
    await client.config_resetstat()
    await action()
    stats = await client.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == round_trips
    return sum(
        int(entry["calls"])
        for name, entry in stats.items()
        if name not in ("cmdstat_config|resetstat", "cmdstat_info")
    )


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client, to look at what the store left in Redis."""
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


# ============================================================================================
# Event claims (dedupe)
# ============================================================================================


async def test_an_event_is_claimed_only_once(store: Store) -> None:
    assert (await store.claim_event("Ev1", 60, "t1")).first
    assert not (await store.claim_event("Ev1", 60, "t2")).first
    assert (await store.claim_event("C1:1700000000.000100", 60, "t3")).first


async def test_a_retried_claim_with_the_same_token_is_still_first(store: Store) -> None:
    """A client that lost the reply re-sends the claim: it must not read as someone else's."""
    assert (await store.claim_event("Ev1", 60, "t1")).first
    assert (await store.claim_event("Ev1", 60, "t1")).first
    assert not (await store.claim_event("Ev1", 60, "t2")).first


async def test_an_event_can_be_claimed_again_after_its_ttl(
    store: Store, store_clock: ManualClock
) -> None:
    assert (await store.claim_event("Ev1", 1.0, "t1")).first
    store_clock.now = T0 + 0.99
    assert not (await store.claim_event("Ev1", 1.0, "t2")).first

    async def claimable() -> bool:
        return (await store.claim_event("Ev1", 60, "t3")).first

    assert await expired(store, store_clock, T0 + 1.0, claimable)


async def test_the_age_of_the_data_grows_with_the_clock(
    store: Store, store_clock: ManualClock
) -> None:
    """`data_age` tells a store that lost its data (young again: claims may be missing) from
    one that did not: while the data is there, it ages with the clock. A memory store's data
    lives exactly as long as the process, so it is never suspect (as old as can be)."""
    claim = await store.claim_event("Ev1", 3600, "t1")
    store_clock.advance(100.0)
    later = await store.claim_event("Ev1", 3600, "t2")

    assert (claim.first, later.first) == (True, False)
    assert later.data_age >= claim.data_age + 100.0
    if isinstance(store, MemoryStore):
        assert claim.data_age == math.inf


# ============================================================================================
# Registration
# ============================================================================================


async def test_a_registered_answer_reads_back_exactly(store: Store) -> None:
    full = answer(
        "a-1",
        origin="tok:a-1:r0:i0",  # registered again: it descends from an earlier registration
        phase=Phase.STREAMING,  # registered again after the store lost it, mid-answer
        message_ts="1700000000.000200",
        part=2,
        offset=3_000,
        text="Hello *world* — ünïcode ✓ 日本語 🎉\n\nsecond line with `code`",
        footer="_claude-sonnet · 3.2 s · ⚠ shortened_",
        notes=("Ünïcode note ✓", 'quotes " and \\ backslash'),
        dedupe_keys=("Ev1", "C1:1700000000.000150"),
    )
    other = answer("a-22", owner="r2", text="", notes=(), dedupe_keys=())
    await registered(store, other, full)

    assert await store.get("a-1") == stored(full)
    assert await store.get("a-22") == stored(other)
    assert await store.get("missing") is None


async def test_an_answer_without_a_start_time_starts_on_the_store_clock(
    store: Store, store_clock: ManualClock
) -> None:
    store_clock.now = T0 + 7.25
    await registered(store, answer("a-1", started_at=0.0))

    record = await store.get("a-1")
    assert record is not None
    assert (record.started_at, record.lease_until) == (T0 + 7.25, T0 + 7.25 + LEASE)


async def test_another_registration_of_an_answer_is_refused_and_shown_the_first(
    store: Store,
) -> None:
    first = answer("a-1", owner="r1")
    second = answer("a-1", owner="r2", text="another answer to the same question")
    await registered(store, first)

    refused = await register(store, second)

    assert refused == Registration(False, stored(first))
    assert await store.get("a-1") == stored(first)


async def test_a_retried_registration_with_the_same_token_is_accepted(
    store: Store, store_clock: ManualClock
) -> None:
    record = answer("a-1")
    await registered(store, record)
    store_clock.advance(1.0)

    assert await register(store, record) == Registration(True)
    assert await store.get("a-1") == stored(record, at=T0 + 1.0)
    assert await store.count_in_flight("T1", "U1") == (1, 1)


async def test_taking_back_wins_over_an_unfinished_registration(store: Store) -> None:
    """A replica whose record the store lost registers again, while a retried event made a
    newer registration of the same question: the older answer, already in Slack, wins."""
    newer = answer("a-1", owner="r2", text="")
    older = answer("a-1", owner="r1", text="the answer as far as readers saw it")
    await registered(store, newer)

    assert await register(store, older, take_back=True) == Registration(True)

    assert await store.get("a-1") == stored(older)
    lost = await renew(store, newer)
    assert lost == LeaseReport(LeaseState.LOST, holder=stored(older))
    assert await store.count_in_flight("T1", "U1") == (1, 1)


async def test_taking_back_never_wins_over_a_finished_answer(store: Store) -> None:
    finished = answer("a-1", owner="r2")
    await registered(store, finished)
    assert await finish(store, finished) is LeaseState.HELD

    refused = await register(store, answer("a-1", owner="r1"), take_back=True)

    assert refused == Registration(False, tombstone(stored(finished)))
    assert await store.get("a-1") == tombstone(stored(finished))
    assert await store.count_in_flight("T1", "U1") == (0, 0)


@pytest.mark.parametrize("take_back", [False, True], ids=["again", "take-back"])
async def test_not_even_its_own_registration_brings_a_finished_answer_back(
    store: Store, take_back: bool
) -> None:
    """A tombstone is final whoever registers: the answer's own token included (a late
    retry, or a replica that missed its own finish), or a finished answer is streamed again."""
    record = answer("a-1")
    await registered(store, record)
    assert await finish(store, record) is LeaseState.HELD

    again = await register(store, record, take_back=take_back)

    assert again == Registration(False, tombstone(stored(record)))
    assert await store.get("a-1") == tombstone(stored(record))
    assert await store.count_in_flight("T1", "U1") == (0, 0)


async def test_registering_claims_the_answers_dedupe_keys(store: Store) -> None:
    """The record carries its dedupe keys so that registering it again (after a Redis that
    restarted empty) claims them again: a retried event is then not a new question."""
    await registered(store, answer("a-1", dedupe_keys=("Ev1", "C1:1700000000.000150")))

    assert not (await store.claim_event("Ev1", 60, "a-retry")).first
    assert not (await store.claim_event("C1:1700000000.000150", 60, "a-retry")).first
    assert (await store.claim_event("Ev2", 60, "a-retry")).first


async def test_dedupe_keys_expire_but_the_answers_text_does_not(
    store: Store, store_clock: ManualClock
) -> None:
    """The dedupe ttl is the dedupe keys' only: an answer's text is kept as long as the answer
    is in flight, however short the dedupe ttl."""
    record = answer("a-1", dedupe_keys=("Ev1",))
    assert await register(store, record, dedupe_ttl_seconds=1.0) == Registration(True)

    async def claimable() -> bool:
        return (await store.claim_event("Ev1", 60, "a-retry")).first

    assert await expired(store, store_clock, T0 + 1.0, claimable)
    assert await text_of(store, "a-1") == record.text


# ============================================================================================
# Renewal and checkpoints
# ============================================================================================


async def test_renew_moves_the_lease_with_the_store_clock(
    store: Store, store_clock: ManualClock
) -> None:
    record = answer("a-1")
    await registered(store, record)
    store_clock.now = T0 + 5.0

    assert await renew(store, record) == LeaseReport(LeaseState.HELD)

    assert await store.get("a-1") == stored(record, at=T0 + 5.0)


async def test_renew_appends_the_checkpoints_text(store: Store) -> None:
    record = answer("a-1", text="Hello")
    await registered(store, record)

    assert await renew(store, record, appended(" wörld", "Hello")) == LeaseReport(LeaseState.HELD)
    assert await renew(store, record, appended(" ✓ 日本", "Hello wörld")) == LeaseReport(
        LeaseState.HELD
    )

    assert await text_of(store, "a-1") == "Hello wörld ✓ 日本"


async def test_an_append_counts_utf8_bytes_not_characters(store: Store) -> None:
    text = "ünï 🎉"  # 5 characters, 10 bytes
    record = answer("a-1", text=text)
    await registered(store, record)

    by_chars = await renew(store, record, Checkpoint(text="!", text_at=len(text)))
    by_bytes = await renew(store, record, Checkpoint(text="?", text_at=len(text.encode())))

    assert by_chars == LeaseReport(LeaseState.HELD, text_rejected=True)
    assert by_bytes == LeaseReport(LeaseState.HELD)
    assert await text_of(store, "a-1") == text + "?"


async def test_an_append_that_does_not_line_up_is_rejected_and_changes_no_text(
    store: Store,
) -> None:
    """A retried or racing append must never duplicate or tear the text: the store refuses
    it and the caller sends the whole text next time."""
    record = answer("a-1", text="Hello")
    await registered(store, record)
    assert await renew(store, record, appended(" world", "Hello")) == LeaseReport(LeaseState.HELD)

    retried = await renew(store, record, appended(" world", "Hello"))  # the same append again
    behind = await renew(store, record, Checkpoint(text="x", text_at=0))
    beyond = await renew(store, record, Checkpoint(text="x", text_at=1_000))

    rejected = LeaseReport(LeaseState.HELD, text_rejected=True)
    assert (retried, behind, beyond) == (rejected, rejected, rejected)
    assert await text_of(store, "a-1") == "Hello world"


async def test_a_checkpoint_without_an_offset_replaces_the_text(store: Store) -> None:
    record = answer("a-1", text="Hello")
    await registered(store, record)

    assert await renew(store, record, Checkpoint(text="Bonjour ✓")) == LeaseReport(LeaseState.HELD)
    assert await text_of(store, "a-1") == "Bonjour ✓"
    assert await renew(store, record, appended(" à tous", "Bonjour ✓")) == LeaseReport(
        LeaseState.HELD
    )
    assert await text_of(store, "a-1") == "Bonjour ✓ à tous"
    assert await renew(store, record, Checkpoint(text="")) == LeaseReport(LeaseState.HELD)
    assert await text_of(store, "a-1") == ""


async def test_a_checkpoint_records_where_the_answer_got_and_leaves_the_rest(
    store: Store,
) -> None:
    record = answer("a-1")
    await registered(store, record)

    posted = Checkpoint(message_ts="1700000000.000300", phase=Phase.POSTED)
    assert await renew(store, record, posted) == LeaseReport(LeaseState.HELD)
    continued = Checkpoint(message_ts="1700000000.000400", part=1, offset=2_950)
    assert await renew(store, record, continued) == LeaseReport(LeaseState.HELD)
    finishing = Checkpoint(phase=Phase.FINISHING, footer="_3.2 s · ✓_", notes=("ünï", "two"))
    assert await renew(store, record, finishing) == LeaseReport(LeaseState.HELD)
    assert await renew(store, record, Checkpoint()) == LeaseReport(LeaseState.HELD)

    assert await store.get("a-1") == replace(
        stored(record),
        message_ts="1700000000.000400",
        part=1,
        offset=2_950,
        phase=Phase.FINISHING,
        footer="_3.2 s · ✓_",
        notes=("ünï", "two"),
    )


async def test_renew_says_who_pressed_stop(store: Store) -> None:
    record, other = answer("a-1"), answer("a-2")
    await registered(store, record, other)
    assert await renew(store, record) == LeaseReport(LeaseState.HELD)

    await store.request_cancel("a-1", "U7")

    assert await renew(store, record) == LeaseReport(LeaseState.HELD, stop_by="U7")
    assert await renew(store, other) == LeaseReport(LeaseState.HELD)


async def test_a_stop_flag_outlives_the_signal_and_then_expires(
    store: Store, store_clock: ManualClock
) -> None:
    """Nobody listened when Stop was pressed: the flag still reaches the owner's next renewal,
    until the flag's own ttl."""
    record = answer("a-1")
    await registered(store, record)
    await store.request_cancel("a-1", "U7", ttl_seconds=1.0)

    assert await renew(store, record) == LeaseReport(LeaseState.HELD, stop_by="U7")

    async def forgotten() -> bool:
        return await renew(store, record) == LeaseReport(LeaseState.HELD)

    assert await expired(store, store_clock, T0 + 1.0, forgotten)


async def test_a_lost_lease_is_reported_with_its_holder_and_changes_nothing(
    store: Store, store_clock: ManualClock
) -> None:
    record = answer("a-1", text="Hello")
    await registered(store, record)
    store_clock.now = T0 + LEASE + 1
    [taken] = await store.claim_lapsed(new_owner="r9", incarnation="i9", lease_seconds=LEASE)

    report = await renew(
        store, record, Checkpoint(text="hijack", text_at=5, message_ts="9.9", phase=Phase.POSTED)
    )

    assert report == LeaseReport(LeaseState.LOST, holder=taken)  # r9's record, new token
    assert await store.get("a-1") == taken  # no checkpoint, no lease for the old token


async def test_renewing_an_answer_the_store_does_not_have_reports_it_missing(store: Store) -> None:
    assert await renew(store, answer("missing")) == LeaseReport(LeaseState.MISSING)
    assert await store.get("missing") is None


# ============================================================================================
# Finishing and tombstones
# ============================================================================================


async def test_only_the_token_holder_finishes_an_answer(store: Store) -> None:
    record = answer("a-1")
    await registered(store, record)

    assert await store.finish("a-1", "someone-else", outcome=COMPLETED) is LeaseState.LOST
    assert await store.get("a-1") == stored(record)
    assert await store.finish("missing", record.token, outcome=COMPLETED) is LeaseState.MISSING

    assert await finish(store, record) is LeaseState.HELD
    assert await store.get("a-1") == tombstone(stored(record))


async def test_finishing_is_idempotent_and_keeps_the_first_outcome(store: Store) -> None:
    record = answer("a-1")
    await registered(store, record)

    assert await finish(store, record, str(Outcome.STOPPED)) is LeaseState.HELD
    assert await finish(store, record, str(Outcome.STOPPED)) is LeaseState.HELD  # a retry
    assert await finish(store, record, COMPLETED) is LeaseState.HELD

    assert await store.get("a-1") == tombstone(stored(record), str(Outcome.STOPPED))
    assert await store.finish("a-1", "someone-else", outcome=COMPLETED) is LeaseState.LOST


async def test_a_finished_answer_is_final_and_not_counted(store: Store) -> None:
    record = answer("a-1", question_ts="1700000000.000150")
    await registered(store, record)
    await store.request_cancel("a-1", "U7")
    assert await finish(store, record) is LeaseState.HELD

    finished = await store.get("a-1")
    assert finished is not None
    assert (finished.phase, finished.outcome, finished.text) == (Phase.FINISHED, COMPLETED, "")
    # Not "missing": a finished answer is never mistaken for one the store lost.
    assert await renew(store, record) == LeaseReport(LeaseState.LOST, holder=finished)
    assert await store.count_in_flight("T1", "U1") == (0, 0)
    assert await store.earlier_in_thread("C1", THREAD_TS, "1700000009.000000") == 0


# ============================================================================================
# Counts for the caps, and thread order
# ============================================================================================


async def test_answers_in_flight_are_counted_per_asker_and_per_workspace(store: Store) -> None:
    first = asked("a-1", "T1", "U1")
    await registered(
        store,
        first,
        asked("a-2", "T1", "U1"),
        asked("a-3", "T1", "U2"),
        asked("b-1", "T2", "U1"),  # the same user id in another workspace is another person
    )

    assert await store.count_in_flight("T1", "U1") == (2, 3)
    assert await store.count_in_flight("T1", "U2") == (1, 3)
    assert await store.count_in_flight("T2", "U1") == (1, 1)
    assert await store.count_in_flight("T9", "U1") == (0, 0)

    assert await store.finish("a-1", "someone-else", outcome=COMPLETED) is LeaseState.LOST
    assert await store.count_in_flight("T1", "U1") == (2, 3)  # not the holder: still in flight
    assert await finish(store, first) is LeaseState.HELD
    assert await store.count_in_flight("T1", "U1") == (1, 2)
    assert await finish(store, first) is LeaseState.HELD  # finishing twice counts once
    assert await store.count_in_flight("T1", "U1") == (1, 2)


async def test_counts_follow_an_answer_through_registering_again_and_take_over(
    store: Store, store_clock: ManualClock
) -> None:
    record = asked("a-1", "T1", "U1", question_ts="1700000000.000300")
    await registered(store, record)
    assert await register(store, record) == Registration(True)
    assert await store.count_in_flight("T1", "U1") == (1, 1)  # registered twice, counted once

    # Registered again with other fields (never done by the bot, but the store must stay exact).
    moved = replace(record, team_id="T2", asker="U2", channel="C2")
    assert await register(store, moved) == Registration(True)
    assert await store.count_in_flight("T1", "U1") == (0, 0)
    assert await store.count_in_flight("T2", "U2") == (1, 1)
    assert await store.earlier_in_thread("C1", THREAD_TS, "1700000001.000000") == 0
    assert await store.earlier_in_thread("C2", THREAD_TS, "1700000001.000000") == 1

    # A take-over changes the holder, not what is in flight; the new holder's finish counts.
    store_clock.advance(100.0)
    claimed = await store.claim_lapsed(new_owner="r9", incarnation="i9", lease_seconds=LEASE)
    assert [r.answer_id for r in claimed] == ["a-1"]
    assert await store.count_in_flight("T2", "U2") == (1, 1)
    assert await finish(store, moved) is LeaseState.LOST  # the old token no longer finishes it
    assert await finish(store, claimed[0]) is LeaseState.HELD
    assert await store.count_in_flight("T2", "U2") == (0, 0)
    assert await store.earlier_in_thread("C2", THREAD_TS, "1700000001.000000") == 0


async def test_earlier_in_thread_counts_answers_to_earlier_questions_of_that_thread(
    store: Store,
) -> None:
    def in_thread(answer_id: str, question_ts: str, **fields: Any) -> AnswerRecord:
        return asked(answer_id, "T1", "U1", question_ts=question_ts, **fields)

    first = in_thread("first", "1700000000.000200")
    await registered(
        store,
        first,
        in_thread("third", "1700000001.000000"),
        in_thread("elsewhere", "1700000000.000150", channel="C2"),
        in_thread("other-thread", "1", thread_ts="1700000000.000900"),
        in_thread("old-record", ""),  # no question ts: orders nothing
    )

    async def earlier(question_ts: str) -> int:
        return await store.earlier_in_thread("C1", THREAD_TS, question_ts)

    assert await earlier("1700000000.000200") == 0  # the first question: nothing before it
    assert await earlier("1700000000.000201") == 1  # a microsecond later
    assert await earlier("1700000000.999999") == 1
    assert await earlier("1700000001.000000") == 1  # "third" never counts itself
    assert await earlier("1700000001.000001") == 2
    assert await earlier("not a ts") == 0
    assert await store.earlier_in_thread("C2", THREAD_TS, "1700000009.000000") == 1
    assert await store.earlier_in_thread("C1", "1700000000.000900", "2") == 1

    assert await finish(store, first) is LeaseState.HELD
    assert await earlier("1700000001.000000") == 0
    assert await earlier("1700000001.000001") == 1


async def test_counts_stay_exact_when_replicas_register_and_finish_at_once(
    store: Store, store_factory: Callable[[], Store]
) -> None:
    replicas = [store_factory() for _ in range(20)]
    records = [
        asked(f"a-{n}", "T1", f"U{n % 2}", question_ts=f"1700000000.{n:06d}") for n in range(20)
    ]

    results = await asyncio.gather(
        *(register(replica, r) for replica, r in zip(replicas, records, strict=True))
    )
    assert all(result.registered for result in results)
    assert await store.count_in_flight("T1", "U0") == (10, 20)
    await asyncio.gather(
        *(
            finish(replica, r)
            for replica, r in zip(replicas, records, strict=True)
            if r.asker == "U0"
        )
    )

    assert await store.count_in_flight("T1", "U0") == (0, 10)
    assert await store.count_in_flight("T1", "U1") == (10, 10)
    assert await store.earlier_in_thread("C1", THREAD_TS, "1700000001.000000") == 10


async def test_no_index_outlives_the_answers_it_counts(
    store: Store, request: pytest.FixtureRequest
) -> None:
    records = [
        asked(f"a-{n}", f"T{n}", "U1", thread_ts=f"1.{n}", question_ts=f"2.{n}") for n in range(3)
    ]
    await registered(store, *records)
    for record in records:
        assert await finish(store, record) is LeaseState.HELD

    if isinstance(store, MemoryStore):
        assert (store._by_team, store._by_user, store._by_thread) == ({}, {}, {})
    else:
        client = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_url"))
        try:
            # Only the tombstones are left (they expire on their own).
            keys = sorted(key.decode() for key in await client.keys(PREFIX + "*"))
            assert keys == [f"{PREFIX}answer:a-{n}" for n in range(3)]
        finally:
            await client.aclose()


# ============================================================================================
# Take-over
# ============================================================================================


async def test_claim_lapsed_takes_only_answers_whose_lease_ran_out(
    store: Store, store_clock: ManualClock
) -> None:
    leases = {"lapsed-1": 5.0, "lapsed-2": 19.999, "live": 21.0, "edge": 20.0}
    records = {answer_id: answer(answer_id, owner="r2") for answer_id in leases}
    for answer_id, lease in leases.items():
        await registered(store, records[answer_id], lease_seconds=lease)
    store_clock.now = T0 + 20.0  # "edge" lapses strictly after its lease_until

    claimed = await store.claim_lapsed(new_owner="r9", incarnation="i9", lease_seconds=LEASE)

    assert sorted(r.answer_id for r in claimed) == ["lapsed-1", "lapsed-2"]
    for record in claimed:
        before = records[record.answer_id]
        assert record.token not in ("", before.token)  # a new lease
        assert record.origin == before.token  # of the same registration
        assert record == replace(
            before, owner="r9", incarnation="i9", token=record.token, lease_until=T0 + 20 + LEASE
        )
        assert await store.get(record.answer_id) == record
    assert await store.get("live") == stored(records["live"], lease=21.0)
    assert await store.get("edge") == stored(records["edge"], lease=20.0)
    assert await store.claim_lapsed(new_owner="r8", incarnation="i8", lease_seconds=LEASE) == []


async def test_claimed_answers_carry_their_text_and_checkpoint(
    store: Store, store_clock: ManualClock
) -> None:
    record = answer("a-1", text="Hello")
    await registered(store, record)
    checkpoint = Checkpoint(
        text=" wörld ✓", text_at=5, message_ts="1700000000.000300", phase=Phase.STREAMING
    )
    assert await renew(store, record, checkpoint) == LeaseReport(LeaseState.HELD)
    store_clock.now = T0 + LEASE + 1

    [claimed] = await store.claim_lapsed(new_owner="r9", incarnation="i9", lease_seconds=LEASE)

    assert (claimed.text, claimed.message_ts, claimed.phase) == (
        "Hello wörld ✓",
        "1700000000.000300",
        Phase.STREAMING,
    )
    # The new holder renews and appends with its own token.
    assert await renew(store, claimed, appended("!", "Hello wörld ✓")) == LeaseReport(
        LeaseState.HELD
    )
    assert await text_of(store, "a-1") == "Hello wörld ✓!"


async def test_claim_lapsed_respects_its_limit(store: Store, store_clock: ManualClock) -> None:
    await registered(store, *(answer(f"a-{i}") for i in range(5)))
    store_clock.advance(LEASE + 1)

    sizes = [
        len(
            await store.claim_lapsed(new_owner="r9", incarnation="i9", lease_seconds=LEASE, limit=2)
        )
        for _ in range(4)
    ]

    assert sizes == [2, 2, 1, 0]


async def test_each_lapsed_answer_has_exactly_one_winner_among_racing_replicas(
    store: Store, store_factory: Callable[[], Store], store_clock: ManualClock
) -> None:
    ids = {f"a-{i}" for i in range(10)}
    await registered(store, *(answer(answer_id) for answer_id in ids))
    replicas = [store_factory() for _ in range(20)]
    store_clock.advance(LEASE + 1)

    results = await asyncio.gather(
        *(
            replica.claim_lapsed(new_owner=f"r{n}", incarnation=f"i{n}", lease_seconds=LEASE)
            for n, replica in enumerate(replicas)
        )
    )

    won = [(record, n) for n, records in enumerate(results) for record in records]
    assert sorted(record.answer_id for record, _ in won) == sorted(ids)  # each once, none lost
    for record, n in won:
        assert await store.get(record.answer_id) == record
        assert record.owner == f"r{n}"
    assert len({record.token for record, _ in won}) == len(ids)


async def test_a_restarted_replica_recovers_its_earlier_incarnations_answers_at_once(
    store: Store, store_clock: ManualClock
) -> None:
    """Replica r1 restarted (incarnation i2): it takes what r1's i1 held without waiting for
    the leases to lapse, but never what its own i2 holds, nor another replica's answers, even
    lapsed ones (those are for the janitor's ordinary pass)."""
    earlier = [answer("mine-1", owner="r1", incarnation="i1"), answer("mine-2", incarnation="i0")]
    current = answer("current", owner="r1", incarnation="i2")
    theirs = answer("theirs", owner="r2")
    lapsed = answer("lapsed", owner="r3")
    await registered(store, *earlier, current, theirs)
    await registered(store, lapsed, lease_seconds=1.0)
    store_clock.advance(2.0)

    claimed = await store.claim_lapsed(
        new_owner="r1", incarnation="i2", lease_seconds=LEASE, previous_owner="r1"
    )

    assert sorted(r.answer_id for r in claimed) == ["mine-1", "mine-2"]
    for record, before in zip(sorted(claimed, key=lambda r: r.answer_id), earlier, strict=True):
        assert record.token != before.token
        assert record == replace(
            before, incarnation="i2", token=record.token, lease_until=T0 + 2 + LEASE
        )
    assert await store.get("current") == stored(current)
    assert await store.get("theirs") == stored(theirs)
    assert await store.get("lapsed") == stored(lapsed, lease=1.0)
    # Once recovered they are the current incarnation's: a second pass takes nothing.
    again = await store.claim_lapsed(
        new_owner="r1", incarnation="i2", lease_seconds=LEASE, previous_owner="r1"
    )
    assert again == []
    # Even once the current incarnation's leases lapse, its own recovery never takes them.
    store_clock.advance(LEASE + 1)
    again = await store.claim_lapsed(
        new_owner="r1", incarnation="i2", lease_seconds=LEASE, previous_owner="r1"
    )
    assert again == []


# ============================================================================================
# Cancel signals
# ============================================================================================


async def test_cancel_signals_reach_every_replica(
    store: Store, store_factory: Callable[[], Store], request: pytest.FixtureRequest
) -> None:
    other = store_factory()
    mine, theirs = store.cancel_signals(), other.cancel_signals()
    got_mine = asyncio.ensure_future(anext(mine))
    got_theirs = asyncio.ensure_future(anext(theirs))
    await listening(store, url_of(store, request), subscribers=2)

    await store_factory().request_cancel("a-1", "U7")

    assert await asyncio.wait_for(got_mine, 5) == ("a-1", "U7")
    assert await asyncio.wait_for(got_theirs, 5) == ("a-1", "U7")


async def test_closing_the_store_ends_cancel_signals(
    store: Store, request: pytest.FixtureRequest
) -> None:
    signals = store.cancel_signals()
    received: list[tuple[str, str]] = []
    first = asyncio.Event()

    async def consume() -> None:
        async for signal in signals:
            received.append(signal)
            first.set()

    consumer = asyncio.ensure_future(consume())
    await listening(store, url_of(store, request))
    await store.request_cancel("a-1", "U7")
    await asyncio.wait_for(first.wait(), 5)

    await store.close()

    await asyncio.wait_for(consumer, 5)
    assert received == [("a-1", "U7")]


# ============================================================================================
# The workspace edit budget
# ============================================================================================


async def test_edit_tokens_run_out_after_the_burst_and_refill_over_time(
    store: Store, store_clock: ManualClock
) -> None:
    budget = {"per_minute": 60.0, "burst": 3.0}  # one token a second

    assert [await wait_for_token(store, "T1", **budget) for _ in range(3)] == [0.0] * 3
    assert await wait_for_token(store, "T1", **budget) == pytest.approx(1.0)
    store_clock.now = T0 + 0.25
    assert await wait_for_token(store, "T1", **budget) == pytest.approx(0.75)
    store_clock.now = T0 + 1
    assert await wait_for_token(store, "T1", **budget) == 0.0
    assert await wait_for_token(store, "T1", **budget) > 0
    # Another workspace has its own budget.
    assert await wait_for_token(store, "T2", **budget) == 0.0
    # A long idle time refills no more than the burst.
    store_clock.now = T0 + 1000
    takes = [await wait_for_token(store, "T1", **budget) for _ in range(4)]
    assert takes[:3] == [0.0] * 3 and takes[3] > 0


async def test_a_reserve_keeps_tokens_for_priority_callers(store: Store) -> None:
    budget = {"per_minute": 60.0, "burst": 5.0}

    ordinary = [await wait_for_token(store, "T1", reserve=2, **budget) for _ in range(4)]
    priority = [await wait_for_token(store, "T1", **budget) for _ in range(3)]

    assert ordinary[:3] == [0.0] * 3 and ordinary[3] == pytest.approx(1.0)
    assert priority[:2] == [0.0] * 2 and priority[2] == pytest.approx(1.0)


async def test_a_pause_holds_every_edit_until_it_ends(
    store: Store, store_clock: ManualClock
) -> None:
    budget = {"per_minute": 60.0, "burst": 5.0}

    await store.pause_edits("T1", 10)
    await store.pause_edits("T1", 4)  # an earlier end does not shorten the pause

    assert await wait_for_token(store, "T1", **budget) == pytest.approx(10.0)
    store_clock.now = T0 + 9
    assert await wait_for_token(store, "T1", **budget) == pytest.approx(1.0)
    store_clock.now = T0 + 10
    assert await wait_for_token(store, "T1", **budget) == 0.0
    assert await wait_for_token(store, "T2", **budget) == 0.0  # another workspace's budget


async def test_a_pause_counts_from_when_it_is_asked_and_the_later_end_wins(
    store: Store, store_clock: ManualClock
) -> None:
    budget = {"per_minute": 60.0, "burst": 5.0}
    await store.pause_edits("T1", 10)  # until T0 + 10
    store_clock.now = T0 + 5
    await store.pause_edits("T1", 8)  # until T0 + 13: later, so it wins

    assert await wait_for_token(store, "T1", **budget) == pytest.approx(8.0)
    store_clock.now = T0 + 13
    # The bucket refilled meanwhile, never beyond the burst: all of it is there again.
    takes = [await wait_for_token(store, "T1", **budget) for _ in range(6)]
    assert takes[:5] == [0.0] * 5 and takes[5] == pytest.approx(1.0)


async def test_a_pause_and_an_empty_bucket_wait_for_the_later_of_the_two(store: Store) -> None:
    budget = {"per_minute": 6.0, "burst": 1.0}  # a token every 10 s
    assert await wait_for_token(store, "T1", **budget) == 0.0

    await store.pause_edits("T1", 2)

    assert await wait_for_token(store, "T1", **budget) == pytest.approx(10.0)


async def test_final_edits_waiting_for_tokens_are_served_in_the_order_they_began_waiting(
    store: Store, store_clock: ManualClock
) -> None:
    budget = {"per_minute": 60.0, "burst": 1.0}  # a token a second
    assert await wait_for_token(store, "T1", **budget) == 0.0  # the bucket is now empty

    async def final(answer_id: str, waited: float) -> float:
        return await wait_for_token(
            store, "T1", answer_id=answer_id, waits=True, waited=waited, **budget
        )

    # Three final edits line up; each is told to come back once the ones ahead were served.
    assert [await final(a, 0.0) for a in ("a-1", "a-2", "a-3")] == [
        pytest.approx(1.0),
        pytest.approx(2.0),
        pytest.approx(3.0),
    ]
    store_clock.now = T0 + 1
    assert await final("a-3", 1.0) == pytest.approx(2.0)  # too early: two are still ahead
    assert await final("a-1", 1.0) == 0.0
    store_clock.now = T0 + 2
    assert await final("a-2", 2.0) == 0.0
    store_clock.now = T0 + 3
    assert await final("a-3", 3.0) == 0.0


async def test_a_place_in_the_line_lapses_when_its_edit_stops_asking(
    store: Store, store_clock: ManualClock
) -> None:
    """A final edit that gives up (its answer was stopped, its replica died) holds up the
    others only until a little after it was due back."""
    budget = {"per_minute": 60.0, "burst": 1.0}
    await wait_for_token(store, "T1", **budget)
    lined = {"waits": True, **budget}
    assert await wait_for_token(store, "T1", answer_id="gone", **lined) == pytest.approx(1.0)
    assert await wait_for_token(store, "T1", answer_id="next", **lined) == pytest.approx(2.0)

    store_clock.now = T0 + 2  # "gone" never came back; "next" still waits for it
    assert await wait_for_token(store, "T1", answer_id="next", waited=2, **lined) > 0
    store_clock.now = T0 + 1 + LINE_GRACE_SECONDS + 0.1  # its place has lapsed
    assert await wait_for_token(store, "T1", answer_id="next", waited=3.1, **lined) == 0.0


async def test_a_reserve_as_large_as_the_burst_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="reserve"):
        await store.take_edit_token("T1", per_minute=60, burst=3, reserve=3)
    with pytest.raises(ValueError, match="reserve"):
        await store.take_edit_token("T1", per_minute=60, burst=3, reserve=-1)


async def test_the_budget_counts_the_answers_sharing_it(
    store: Store, store_clock: ManualClock
) -> None:
    budget = {"per_minute": 60.0, "burst": 5.0}

    first = await store.take_edit_token("T1", answer_id="a-1", **budget)
    store_clock.now = T0 + 1
    again = await store.take_edit_token("T1", answer_id="a-1", **budget)
    store_clock.now = T0 + 2
    second = await store.take_edit_token("T1", answer_id="a-2", **budget)
    elsewhere = await store.take_edit_token("T2", answer_id="a-3", **budget)
    anonymous = await store.take_edit_token("T1", **budget)

    assert (first.competing, again.competing, second.competing) == (1, 1, 2)
    assert elsewhere.competing == 1  # another workspace shares another budget
    assert anonymous.competing == 2  # a caller without an answer id is not counted
    assert anonymous.lease is None  # nor asked about a lease


async def test_a_refused_edit_still_counts_its_answer_as_competing(store: Store) -> None:
    budget = {"per_minute": 6.0, "burst": 1.0}
    assert (await store.take_edit_token("T1", answer_id="a-1", **budget)).granted

    refused = await store.take_edit_token("T1", answer_id="a-2", **budget)

    assert not refused.granted and refused.competing == 2


async def test_an_answer_stops_competing_once_it_has_not_asked_for_the_window(
    store: Store, store_clock: ManualClock
) -> None:
    budget = {"per_minute": 600.0, "burst": 10.0}
    for answer_id in ("a-1", "a-2", "a-3"):
        await store.take_edit_token("T1", answer_id=answer_id, **budget)
    # a-2 keeps asking; the others have not asked for longer than the window (finished, say,
    # or their replica died).
    store_clock.now = T0 + COMPETING_WINDOW_SECONDS / 2
    await store.take_edit_token("T1", answer_id="a-2", **budget)
    store_clock.now = T0 + COMPETING_WINDOW_SECONDS + 0.5

    kept = await store.take_edit_token("T1", answer_id="a-2", **budget)

    assert kept.competing == 1


# ============================================================================================
# Edit grants that carry a lease
# ============================================================================================

ONE_A_MINUTE = {"per_minute": 1.0, "burst": 2.0}  # two tokens, then a minute's wait


async def test_a_granted_edit_records_its_checkpoint_in_the_same_step(store: Store) -> None:
    record = answer("a-1", text="Hello")
    await registered(store, record)
    checkpoint = Checkpoint(text=" wörld", text_at=5, message_ts="1700000000.000300", part=0)

    grant = await store.take_edit_token(
        "T1", answer_id="a-1", token=record.token, checkpoint=checkpoint, **ONE_A_MINUTE
    )

    assert (grant.granted, grant.lease, grant.text_rejected) == (True, LeaseState.HELD, False)
    stored_now = await store.get("a-1")
    assert stored_now is not None
    assert (stored_now.text, stored_now.message_ts) == ("Hello wörld", "1700000000.000300")


async def test_a_refused_edit_records_no_checkpoint(store: Store) -> None:
    """The checkpoint is what the edit is about to show: no edit, nothing to record."""
    record = answer("a-1", text="Hello")
    await registered(store, record)
    for _ in range(2):
        assert (await store.take_edit_token("T1", **ONE_A_MINUTE)).granted

    grant = await store.take_edit_token(
        "T1",
        answer_id="a-1",
        token=record.token,
        checkpoint=Checkpoint(text=" wörld", text_at=5, message_ts="9.9"),
        **ONE_A_MINUTE,
    )

    assert not grant.granted and grant.lease is LeaseState.HELD
    assert await store.get("a-1") == stored(record)


async def test_a_granted_edit_whose_text_does_not_line_up_is_told_so(store: Store) -> None:
    record = answer("a-1", text="Hello")
    await registered(store, record)

    grant = await store.take_edit_token(
        "T1",
        answer_id="a-1",
        token=record.token,
        checkpoint=Checkpoint(text="!", text_at=4),
        **ONE_A_MINUTE,
    )

    assert (grant.granted, grant.lease, grant.text_rejected) == (True, LeaseState.HELD, True)
    assert await text_of(store, "a-1") == "Hello"


async def test_an_edit_grant_reports_a_lost_or_missing_lease_and_records_nothing(
    store: Store, store_clock: ManualClock
) -> None:
    record = answer("a-1", text="Hello")
    finished = answer("a-2", text="Bye")
    await registered(store, record, finished)
    assert await finish(store, finished) is LeaseState.HELD
    hijack = Checkpoint(text="hijack", text_at=5, message_ts="9.9")

    async def grant(answer_id: str, token: str) -> tuple[bool, LeaseState | None]:
        result = await store.take_edit_token(
            "T1", answer_id=answer_id, token=token, checkpoint=hijack, per_minute=60, burst=10
        )
        return result.granted, result.lease

    assert await grant("a-1", "someone-else") == (True, LeaseState.LOST)
    assert await grant("a-2", finished.token) == (True, LeaseState.LOST)
    assert await grant("missing", "tok") == (True, LeaseState.MISSING)
    assert await store.get("a-1") == stored(record)
    assert await store.get("a-2") == tombstone(stored(finished))
    assert await store.get("missing") is None


# ============================================================================================
# Thread cache
# ============================================================================================


async def test_thread_cache_round_trips_and_is_a_copy(store: Store) -> None:
    messages = [{"ts": "1.000100", "user": "U1", "text": "héllo <@U2> 日本"}, {"ts": "1.000200"}]
    assert await store.get_thread("C1:1.000100") is None
    await store.put_thread("C1:1.000100", messages, 60)
    cached = await store.get_thread("C1:1.000100")
    assert cached == messages
    assert cached is not None
    cached.append({"ts": "9"})  # the caller's copy, not the cache
    assert await store.get_thread("C1:1.000100") == messages


async def test_a_cached_thread_expires_with_the_ttl_of_its_first_write(
    store: Store, store_clock: ManualClock
) -> None:
    """Later writes replace the messages but never extend the ttl: a busy thread is still
    read whole from Slack again in time (an edited or deleted message shows)."""
    await store.put_thread("k", [{"ts": "1"}], 1.0)
    store_clock.now = T0 + 0.5
    await store.put_thread("k", [{"ts": "1"}, {"ts": "2"}], 1.0)
    store_clock.now = T0 + 0.99
    assert await store.get_thread("k") == [{"ts": "1"}, {"ts": "2"}]

    async def gone() -> bool:
        return await store.get_thread("k") is None

    assert await expired(store, store_clock, T0 + 1.0, gone)
    # Once expired, the next write starts a new ttl.
    await store.put_thread("k", [{"ts": "3"}], 60)
    assert await store.get_thread("k") == [{"ts": "3"}]


# ============================================================================================
# One bucket: pacing.TokenBucket, the memory store and the Redis Lua agree
# ============================================================================================

# Clock steps, a few backwards: Redis `TIME` can step back, and a bucket must then add nothing.
STEPS = st.one_of(
    st.sampled_from([0.0, 0.001, 0.25, 1.0, 9.999, 60.0, 3600.0, -0.5]),
    st.floats(min_value=-1.0, max_value=120.0, allow_nan=False, allow_infinity=False),
)
BUDGET_OPS = st.lists(
    st.tuples(
        STEPS,
        st.one_of(
            st.tuples(st.just("take"), st.floats(min_value=0.0, max_value=1.0), st.just("")),
            st.tuples(  # a final edit of one of three answers, standing in the waiting line
                st.just("take"),
                st.floats(min_value=0.0, max_value=1.0),
                st.sampled_from(["a-1", "a-2", "a-3"]),
            ),
            st.tuples(st.just("pause"), st.floats(min_value=0.0, max_value=30.0), st.just("")),
        ),
    ),
    min_size=1,
    max_size=40,
)


async def waits_through_every_bucket(
    url: str, per_minute: float, burst: float, ops: list[tuple[float, tuple[str, float, str]]]
) -> tuple[list[float], list[float], list[float]]:
    """The waits each take gets, through TokenBucket itself, the memory store and Redis, as
    the same clock steps, reserves (a fraction of what the burst allows), waiting final edits
    and pauses go by."""
    clock = ManualClock()
    memory = MemoryStore(clock=clock)
    shared = RedisStore.from_url(url, clock=clock)
    team = f"T-{uuid.uuid4().hex}"  # examples share the database, never a bucket
    bucket: TokenBucket | None = None  # a bucket nobody used yet is full
    model: list[float] = []
    in_memory: list[float] = []
    in_redis: list[float] = []
    try:
        began: dict[str, float] = {}
        for step, (op, value, waiter) in ops:
            now = clock.advance(step)
            if bucket is None:
                bucket = TokenBucket.full(burst, now)
            if op == "pause":
                bucket.pause(now + value)
                await memory.pause_edits(team, value)
                await shared.pause_edits(team, value)
                continue
            budget = {"per_minute": per_minute, "burst": burst, "reserve": value * (burst - 1)}
            waited = now - began.setdefault(waiter, now) if waiter else 0.0
            model.append(bucket.take(now, waiter=waiter, waited=waited, **budget))
            lined = {"answer_id": waiter, "waits": bool(waiter), "waited": waited, **budget}
            in_memory.append(await wait_for_token(memory, team, **lined))
            in_redis.append(await wait_for_token(shared, team, **lined))
            if model[-1] == 0.0:
                began.pop(waiter, None)  # served: its next edit is a new request
    finally:
        await memory.close()
        await shared.close()
    return model, in_memory, in_redis


@settings(
    max_examples=60,
    deadline=None,
    database=None,  # nothing written to the work tree
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one Redis, unique buckets
)
@given(
    per_minute=st.sampled_from([1.0, 6.0, 45.0, 50.0, 60.0, 600.0]),
    burst=st.integers(min_value=1, max_value=10).map(float),
    ops=BUDGET_OPS,
)
def test_token_bucket_memory_and_redis_give_identical_waits(
    redis_url: str, per_minute: float, burst: float, ops: list[tuple[float, tuple[str, float, str]]]
) -> None:
    """`pacing.TokenBucket` is the one definition of the bucket; the Lua copies it line for
    line. Driven through the same sequence, every wait must be the same to the last bit."""
    model, in_memory, in_redis = asyncio.run(
        waits_through_every_bucket(redis_url, per_minute, burst, ops)
    )
    assert in_memory == model
    assert in_redis == model


# ============================================================================================
# The memory store only
# ============================================================================================


async def test_a_lone_replica_forgets_finished_answers_once_their_tombstones_expire(
    store_clock: ManualClock,
) -> None:
    """The memory store promises to keep only bounded state: a tombstone must go once it
    expires, even if nobody ever reads that answer again."""
    store = MemoryStore(clock=store_clock)
    for n in range(50):
        record = answer(f"old-{n}")
        await registered(store, record)
        assert await finish(store, record) is LeaseState.HELD
    store_clock.advance(TOMBSTONE_SECONDS + 1)

    # The ordinary life of a replica goes on: answers come and go, the janitor scans.
    fresh = answer("fresh")
    await registered(store, fresh)
    assert await finish(store, fresh) is LeaseState.HELD
    await store.claim_lapsed(new_owner="r1", incarnation="i1", lease_seconds=LEASE)

    assert set(store._answers) == {"fresh"}
    await store.close()


# ============================================================================================
# Redis only: keys expire when they should
# ============================================================================================


async def test_the_data_age_is_small_again_after_a_restart_that_lost_the_data(
    redis_store: RedisStore, redis_server: RedisServer, store_clock: ManualClock
) -> None:
    """Replicas learn from `data_age` that a Redis came back empty, so dedupe claims may have
    been lost (and a question already answered may come again)."""
    assert (await redis_store.claim_event("Ev1", 60, "t1")).data_age == 0.0
    store_clock.advance(3600.0)
    assert (await redis_store.claim_event("Ev2", 60, "t1")).data_age == 3600.0

    redis_server.restart()

    assert await redis_store.claim_event("Ev1", 60, "t2") == EventClaim(first=True, data_age=0.0)
    store_clock.advance(5.0)
    assert (await redis_store.claim_event("Ev3", 60, "t2")).data_age == 5.0


async def test_a_second_write_of_a_cached_thread_does_not_extend_its_ttl(
    redis_store: RedisStore, redis_client: redis.asyncio.Redis
) -> None:
    await redis_store.put_thread("C1:1.1", [{"ts": "1"}], 60)
    first = await redis_client.pttl(PREFIX + "thread:C1:1.1")

    await redis_store.put_thread("C1:1.1", [{"ts": "1"}, {"ts": "2"}], 3600)

    second = await redis_client.pttl(PREFIX + "thread:C1:1.1")
    assert 0 < second <= first <= 60_000
    assert await redis_store.get_thread("C1:1.1") == [{"ts": "1"}, {"ts": "2"}]


async def test_an_answers_text_is_kept_as_long_as_an_unfinished_answers_text(
    redis_store: RedisStore, redis_client: redis.asyncio.Redis
) -> None:
    """Registering keeps the text as long as a checkpoint would (`TEXT_KEEP_SECONDS`), not for
    the dedupe ttl, which is the dedupe keys' alone."""
    record = answer("a-1", dedupe_keys=("Ev1",))
    await register(redis_store, record, dedupe_ttl_seconds=60)

    assert await redis_client.pttl(PREFIX + "text:a-1") > (TEXT_KEEP_SECONDS - 60) * 1000
    assert 0 < await redis_client.pttl(PREFIX + "event:Ev1") <= 60_000


async def test_an_idle_edit_budget_expires_from_redis(
    redis_store: RedisStore, redis_client: redis.asyncio.Redis
) -> None:
    await redis_store.take_edit_token("T1", per_minute=60, burst=10, answer_id="a-1")
    ttl = await redis_client.pttl(PREFIX + "bucket:T1")
    # Full again after 10 s; the key lives that long plus a grace period, not forever.
    assert 10_000 < ttl <= 75_000
    # Who shares the budget is forgotten once nobody has asked for the window and a grace.
    competing_ttl = await redis_client.pttl(PREFIX + "bucket:T1:competing")
    assert 0 < competing_ttl <= 1000 * (COMPETING_WINDOW_SECONDS + 60)


async def test_a_record_lost_behind_the_store_is_not_counted(
    redis_store: RedisStore, redis_client: redis.asyncio.Redis
) -> None:
    """A record that vanished without finish() (deleted by hand, evicted) must not hold a cap
    or a thread forever: the queries drop what has no record."""
    await registered(
        redis_store,
        *(asked(f"a-{n}", "T1", "U1", question_ts=f"1700000000.00010{n}") for n in range(2)),
    )
    await redis_client.delete(PREFIX + "answer:a-0")

    assert await redis_store.count_in_flight("T1", "U1") == (1, 1)
    assert await redis_store.earlier_in_thread("C1", THREAD_TS, "1700000009.0") == 1
    assert await redis_client.scard(PREFIX + "inflight:team:T1") == 1


# ============================================================================================
# Redis only: failure modes
# ============================================================================================

OPERATIONS: dict[str, Callable[[Store], Awaitable[object]]] = {
    "ping": lambda s: s.ping(),
    "claim_event": lambda s: s.claim_event("Ev1", 60, "t1"),
    "get_thread": lambda s: s.get_thread("C1:1.1"),
    "put_thread": lambda s: s.put_thread("C1:1.1", [{"ts": "1"}], 60),
    "register": lambda s: register(s, answer("a-1")),
    "renew": lambda s: renew(s, answer("a-1"), Checkpoint(text="x", text_at=0)),
    "finish": lambda s: finish(s, answer("a-1")),
    "get": lambda s: s.get("a-1"),
    "count_in_flight": lambda s: s.count_in_flight("T1", "U1"),
    "earlier_in_thread": lambda s: s.earlier_in_thread("C1", "1.000100", "1.000200"),
    "claim_lapsed": lambda s: s.claim_lapsed(new_owner="r1", incarnation="i1", lease_seconds=LEASE),
    "request_cancel": lambda s: s.request_cancel("a-1", "U1"),
    "take_edit_token": lambda s: s.take_edit_token(
        "T1", per_minute=45, burst=5, answer_id="a-1", token="t", checkpoint=Checkpoint(text="x")
    ),
    "pause_edits": lambda s: s.pause_edits("T1", 5),
}


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_every_operation_raises_store_error_when_redis_is_unreachable(
    operation: str,
) -> None:
    no_retries = Retry(NoBackoff(), retries=0)
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", retry=no_retries)
    try:
        with pytest.raises(StoreError, match="unreachable"):
            await OPERATIONS[operation](store)
    finally:
        await store.close()


async def test_a_redis_that_is_down_is_reported_within_seconds() -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    try:
        with pytest.raises(StoreError, match="unreachable"):
            await store.ping()
    finally:
        await store.close()
    assert time.monotonic() - started < 3.0


async def test_a_call_during_a_redis_blip_succeeds(
    redis_url: str, redis_server: RedisServer
) -> None:
    store = RedisStore.from_url(redis_url)
    try:
        await store.ping()
        redis_server.stop()
        call = asyncio.ensure_future(store.claim_event("Ev1", 60, "t1"))
        await asyncio.to_thread(redis_server.start)

        assert (await asyncio.wait_for(call, 5)).first
    finally:
        await store.close()


async def test_a_redis_restart_needs_no_new_store(
    redis_store: RedisStore, redis_server: RedisServer
) -> None:
    record = answer("a-1", dedupe_keys=("Ev1",))
    await registered(redis_store, record)
    assert await renew(redis_store, record) == LeaseReport(LeaseState.HELD)

    redis_server.restart()

    # Without persistence the answer is gone; the scripts are loaded again on demand.
    assert await renew(redis_store, record) == LeaseReport(LeaseState.MISSING)
    assert (await redis_store.take_edit_token("T1", per_minute=45, burst=5)).granted
    # The owner registers it again, and with it its dedupe keys: Slack's retry is no question.
    assert await register(redis_store, record, take_back=True) == Registration(True)
    assert await renew(redis_store, record) == LeaseReport(LeaseState.HELD)
    assert not (await redis_store.claim_event("Ev1", 60, "slack-retry")).first


STALL_SECONDS = 3.0  # longer than the client's 2 s socket timeout: it gives up and re-sends


async def test_a_claim_re_sent_after_a_redis_stall_is_still_first(
    redis_url: str, redis_server: RedisServer, redis_client: redis.asyncio.Redis
) -> None:
    """Redis stalls with the claim in its socket; the client times out and re-sends it. When
    Redis runs again it executes both: the re-sent claim must not read as another's."""
    if not redis_server.managed:
        pytest.skip("cannot freeze the external Redis at TEST_REDIS_URL")
    store = RedisStore.from_url(redis_url)  # the production client: retries, 2 s timeout
    try:
        await store.claim_event("Warm-up", 60, "w")  # the script loaded, a connection open
        await redis_client.config_resetstat()
        # Frozen first, so the claim surely arrives while Redis is stalled.
        redis_server.freeze()
        try:
            claim = asyncio.ensure_future(store.claim_event("Ev1", 60, "token-1"))
            await asyncio.sleep(STALL_SECONDS)  # the stall itself
        finally:
            redis_server.thaw()

        assert (await asyncio.wait_for(claim, 10)).first
        assert not (await store.claim_event("Ev1", 60, "token-2")).first
        stats = await redis_client.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 3  # the claim twice, then token-2's
    finally:
        await store.close()


@pytest.mark.parametrize("client_retries", [True, False], ids=["client-retries", "no-retries"])
async def test_cancel_signals_resume_after_a_redis_restart(
    redis_url: str, redis_server: RedisServer, client_retries: bool
) -> None:
    # Without client retries the outage reaches the store, which must resubscribe itself.
    listener = (
        RedisStore.from_url(redis_url)
        if client_retries
        else RedisStore.from_url(redis_url, retry=Retry(NoBackoff(), retries=0))
    )
    sender = RedisStore.from_url(redis_url)
    try:
        signals = listener.cancel_signals()
        first = asyncio.ensure_future(anext(signals))
        await listening(listener, redis_url)

        redis_server.kill()
        redis_server.start()

        # Signals published while the listener resubscribes are lost (the flag is the record),
        # and the count of subscribers can briefly include the old connection: publish until
        # the listener hears one.
        async def heard() -> bool:
            await sender.request_cancel("a-1", "U7")
            return first.done()

        assert await eventually(heard)
        assert first.result() == ("a-1", "U7")
    finally:
        await listener.close()
        await sender.close()


IDLE_SECONDS = 5.0  # more than two socket timeouts (2 s) of silence


async def test_an_idle_cancel_subscription_does_not_resubscribe(
    redis_store: RedisStore,
    redis_url: str,
    redis_client: redis.asyncio.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Most of the time nobody presses Stop: an idle subscription must stay put, not time out
    and subscribe again every few seconds (each time losing the signals sent meanwhile)."""
    signals = redis_store.cancel_signals()
    received = asyncio.ensure_future(anext(signals))
    await listening(redis_store, redis_url)
    await redis_client.config_resetstat()

    with caplog.at_level(logging.WARNING, logger="bot.store.redis_cancels"):
        await asyncio.sleep(IDLE_SECONDS)  # the idleness under test

    stats = await redis_client.info("commandstats")
    assert "cmdstat_subscribe" not in stats
    assert "resubscribing" not in caplog.text
    await redis_client.publish(PREFIX + "cancel", '{"answer_id": "a-1", "by_user": "U7"}')
    assert await asyncio.wait_for(received, 5) == ("a-1", "U7")


# ============================================================================================
# Redis only: what each call costs
# ============================================================================================


async def test_a_renew_costs_the_same_however_many_answers_and_however_long_the_text(
    redis_store: RedisStore, redis_client: redis.asyncio.Redis
) -> None:
    """Renewals run every few seconds for every answer in flight: their cost must follow
    neither the roster nor the answer's length (the text grows by appends, never resent)."""
    record = answer("a-0", text="")
    text = ""

    async def renewals(chunk: str) -> None:
        nonlocal text
        for _ in range(10):
            report = await renew(redis_store, record, appended(chunk, text))
            assert report == LeaseReport(LeaseState.HELD)
            text += chunk

    async def commands_per_renewal(chunk: str) -> int:
        return await commands_run(redis_client, lambda: renewals(chunk), round_trips=10)

    await registered(redis_store, record)
    await renew(redis_store, record)  # loads the script (a restarted Redis has none)
    few_short = await commands_per_renewal("y" * 30)
    few_long = await commands_per_renewal("ü" * 3_000)
    await registered(redis_store, *(answer(f"a-{i}") for i in range(1, 200)))
    many_short = await commands_per_renewal("y" * 30)
    many_long = await commands_per_renewal("x" * 3_000)

    assert few_short == few_long == many_short == many_long
    assert await text_of(redis_store, "a-0") == text


async def test_the_caps_and_thread_order_cost_the_same_however_many_answers_are_in_flight(
    redis_store: RedisStore, redis_client: redis.asyncio.Redis
) -> None:
    """One round trip each, and work that follows the asker's workspace and thread, not the
    roster: they run for every question."""

    async def questions() -> None:
        for _ in range(10):
            assert await redis_store.count_in_flight("T1", "U1") == (1, 1)
            assert await redis_store.earlier_in_thread("C1", THREAD_TS, "1800000000.0") == 1

    async def commands_per_question() -> int:
        return await commands_run(redis_client, questions, round_trips=20)

    await registered(redis_store, asked("a-0", "T1", "U1", question_ts="1700000000.000200"))
    await questions()  # loads the scripts (a restarted Redis has none)
    few = await commands_per_question()
    await registered(
        redis_store,
        *(
            asked(f"a-{i}", f"T{1 + i}", "U1", thread_ts=f"1.{i}", question_ts="2.0")
            for i in range(1, 300)  # other workspaces, other threads
        ),
    )
    many = await commands_per_question()
    assert few == many


# ============================================================================================
# Running for a company: usage counters, budgets' spend, feedback, channel overrides
# ============================================================================================

DAY, MONTH = "2026-05-14", "2026-05"
KEEP = UsageKeep(day_seconds=90 * 86400.0, month_seconds=120 * 86400.0, oldest_day="2026-02-13")


def used(
    user: str = "U1",
    *,
    channel: str = "C1",
    model: str = "claude-sonnet-5-5",
    day: str = DAY,
    team: str = "T1",
    cost: int | None = 1_000,
    answer_id: str = "",
    **counts: int,
) -> UsageEntry:
    values = {"input_tokens": 100, "output_tokens": 50, **counts}
    return UsageEntry(
        team_id=team,
        user=user,
        channel=channel,
        model=model,
        day=day,
        month=day[:7],
        cost_micros=cost,
        answer_id=answer_id,
        **values,
    )


NO_THRESHOLDS = Thresholds()


async def add(store: Store, *entries: UsageEntry, thresholds: Thresholds = NO_THRESHOLDS) -> None:
    for entry in entries:
        await store.record_usage(entry, thresholds=thresholds, keep=KEEP)


def vote(voter: str, value: str, *, answer_id: str = "a-1", asker: str = "U1") -> FeedbackVote:
    return FeedbackVote(
        answer_id=answer_id,
        team_id="T1",
        voter=voter,
        value=value,
        day=DAY,
        channel="C1",
        model="claude-sonnet-5-5",
        asker=asker,
    )


async def test_the_admission_view_counts_like_count_in_flight_and_reads_the_spend(
    store: Store,
) -> None:
    await registered(store, asked("a-1", "T1", "U1"), asked("a-2", "T1", "U2"))
    view = await store.admission_view("T1", "U1", "C1", day=DAY, month=MONTH)
    assert (view.mine, view.workspace) == await store.count_in_flight("T1", "U1") == (1, 2)
    assert view.spend == SpendView() and view.override is None

    await add(store, used("U1"), used("U1", day="2026-05-01", cost=None), used("U2"))
    view = await store.admission_view("T1", "U1", "C1", day=DAY, month=MONTH)
    assert view.spend.user_day == Spend(answers=1, tokens=150, cost_micros=1_000)
    assert view.spend.user_month == Spend(answers=2, tokens=300, cost_micros=1_000)
    assert view.spend.workspace_month == Spend(answers=3, tokens=450, cost_micros=2_000)
    assert await store.usage_spend("T1", "U1", day=DAY, month=MONTH) == view.spend


async def test_usage_lands_in_one_cell_per_person_channel_and_model(store: Store) -> None:
    await add(
        store,
        used("U1", cache_read_tokens=1_000, cache_write_tokens=10, server_tool_calls=2),
        used("U1"),
        used("U1", model="claude-opus-5"),
        used("U2", channel="C2", cost=None),
        used("U1", day="2026-05-15"),
        used("U1", team="T2"),
    )
    cells = await store.usage_cells(since=DAY, until=DAY, team_id="T1")
    by_key = {(c.user, c.channel, c.model): dict(c.counts) for c in cells}
    assert by_key == {
        ("U1", "C1", "claude-opus-5"): {
            "answers": 1,
            "input_tokens": 100,
            "output_tokens": 50,
            "cost_micros": 1_000,
        },
        ("U1", "C1", "claude-sonnet-5-5"): {
            "answers": 2,
            "input_tokens": 200,
            "output_tokens": 100,
            "cache_read_tokens": 1_000,
            "cache_write_tokens": 10,
            "server_tool_calls": 2,
            "cost_micros": 2_000,
        },
        ("U2", "C2", "claude-sonnet-5-5"): {
            "answers": 1,
            "input_tokens": 100,
            "output_tokens": 50,
            "unpriced_answers": 1,
        },
    }
    everywhere = await store.usage_cells(since="2026-05-01", until="2026-05-31")
    assert [(c.day, c.team_id) for c in everywhere] == [
        (DAY, "T1"),
        (DAY, "T1"),
        (DAY, "T1"),
        (DAY, "T2"),
        ("2026-05-15", "T1"),
    ]


async def test_replicas_adding_usage_at_once_lose_nothing(
    store: Store, store_factory: Callable[[], Store]
) -> None:
    replicas = [store, store_factory(), store_factory()]
    await asyncio.gather(
        *(
            r.record_usage(used(f"U{i % 3}"), thresholds=Thresholds(), keep=KEEP)
            for i in range(60)
            for r in [replicas[i % 3]]
        )
    )
    view = await store.usage_spend("T1", "U0", day=DAY, month=MONTH)
    assert view.user_day == Spend(answers=20, tokens=20 * 150, cost_micros=20_000)
    assert view.workspace_month == Spend(answers=60, tokens=60 * 150, cost_micros=60_000)
    cells = await store.usage_cells(since=DAY, until=DAY)
    assert sum(c.counts["answers"] for c in cells) == 60


async def test_checkpoints_carry_an_answers_usage_to_the_janitor_that_claims_it(
    store: Store, store_clock: ManualClock
) -> None:
    """What a janitor counts for an answer whose replica died: the usage its last lease call
    carried, renewal or edit alike, read back whole and given to the claim."""
    started = Usage(input_tokens=1_234, cache_read_input_tokens=50, output_tokens=1)
    record = answer("a-1", usage=started)
    await registered(store, record)
    assert await store.get("a-1") == stored(record)  # a registration carries it too
    grown = replace(started, input_tokens=2_000, output_tokens=77, web_search_requests=2)

    renewed = await renew(store, record, Checkpoint(usage=Usage(input_tokens=5)))
    assert renewed.state is LeaseState.HELD
    edit = Checkpoint(usage=grown)
    grant = await store.take_edit_token(
        "T1", answer_id="a-1", token=record.token, checkpoint=edit, **ONE_A_MINUTE
    )
    assert grant.granted
    store_clock.now = T0 + LEASE + 1
    [claimed] = await store.claim_lapsed(new_owner="r9", incarnation="i9", lease_seconds=LEASE)

    assert claimed.usage == grown and not claimed.usage_counted
    assert await store.get("a-1") == claimed


async def test_an_answers_usage_is_counted_once_however_many_replicas_try(
    store: Store, store_factory: Callable[[], Store]
) -> None:
    """Its owner (just before dying) and the janitor finishing it may both count an answer:
    the first marks its record in the same step, and the others add nothing. Entries of no
    answer, and of an answer without a record, are counted each time."""
    record = answer("a-1")
    await registered(store, record)
    entry = used("U1", answer_id="a-1")
    replicas = [store, store_factory(), store_factory()]
    totals = await asyncio.gather(
        *(r.record_usage(entry, thresholds=NO_THRESHOLDS, keep=KEEP) for r in replicas * 3)
    )
    assert sorted(t.counted for t in totals) == [False] * 8 + [True]
    one = Spend(answers=1, tokens=150, cost_micros=1_000)
    assert {t.spend.user_day for t in totals} == {one}  # those not counted: the spend as it is
    counted = await store.get("a-1")
    assert counted is not None and counted.usage_counted

    assert await finish(store, record) == LeaseState.HELD  # the tombstone keeps the mark
    again = await store.record_usage(entry, thresholds=NO_THRESHOLDS, keep=KEEP)
    assert not again.counted and again.spend.user_day == one
    await add(
        store, used("U1"), used("U1", answer_id="no-record"), used("U1", answer_id="no-record")
    )
    view = await store.usage_spend("T1", "U1", day=DAY, month=MONTH)
    assert view.user_day.answers == view.workspace_month.answers == 4
    [cell] = await store.usage_cells(since=DAY, until=DAY)
    assert cell.counts["answers"] == 4


async def test_each_threshold_is_crossed_by_exactly_one_answer(
    store: Store, store_factory: Callable[[], Store]
) -> None:
    """Nine answers of 150 tokens and 1,000 micro-dollars: the day's 1,000-token level is
    crossed by the 7th, the month's 5,000 micro-dollars by the 5th, whichever replica adds it."""
    thresholds = Thresholds(user_day_tokens=1_000, user_month_cost=5_000, workspace_month_cost=0)
    replicas = [store, store_factory()]
    totals = await asyncio.gather(
        *(
            replicas[i % 2].record_usage(used("U1"), thresholds=thresholds, keep=KEEP)
            for i in range(9)
        )
    )
    crossed = [name for t in totals for name in t.crossed]
    assert sorted(crossed) == ["user_day_tokens", "user_month_cost"]
    by_answers = {t.spend.user_day.answers: t.crossed for t in totals if t.crossed}
    assert by_answers == {5: ("user_month_cost",), 7: ("user_day_tokens",)}


async def test_a_vote_counts_once_per_person_and_a_new_mind_replaces_it(store: Store) -> None:
    keep = dict(keep_seconds=KEEP.day_seconds, cell_keep_seconds=KEEP.day_seconds)
    await add(store, used("U1"))
    assert await store.record_feedback(vote("U2", "positive"), **keep) == VoteResult(True, None)
    assert await store.record_feedback(vote("U2", "positive"), **keep) == VoteResult(
        False, "positive"
    )
    assert await store.record_feedback(vote("U3", "positive"), **keep) == VoteResult(True, None)
    assert await store.record_feedback(vote("U2", "negative"), **keep) == VoteResult(
        True, "positive"
    )
    assert (await store.record_feedback(vote("U2", "positive", answer_id="a-2"), **keep)).counted
    [cell] = await store.usage_cells(since=DAY, until=DAY)
    assert cell.counts["feedback_positive"] == 2  # U3 on a-1, U2 on a-2
    assert cell.counts["feedback_negative"] == 1  # U2 changed their mind on a-1
    assert cell.counts["answers"] == 1


async def test_a_vote_past_the_cells_retention_is_remembered_but_not_counted(
    store: Store,
) -> None:
    result = await store.record_feedback(
        vote("U2", "positive"), keep_seconds=60.0, cell_keep_seconds=0.0
    )
    assert result.counted
    assert await store.usage_cells(since=DAY, until=DAY) == []
    again = await store.record_feedback(
        vote("U2", "positive"), keep_seconds=60.0, cell_keep_seconds=0.0
    )
    assert not again.counted


async def test_channel_overrides_are_set_listed_read_and_removed(store: Store) -> None:
    payments = ChannelOverride(system_prompt="You are on call.", model="m1", by="U0ADMIN", at=T0)
    await store.set_channel_override("T1", "C1", payments)
    await store.set_channel_override("T1", "C2", ChannelOverride(model="m2", by="U0ADMIN"))
    await store.set_channel_override("T2", "C1", ChannelOverride(model="m3"))
    assert await store.channel_overrides("T1") == {
        "C1": payments,
        "C2": ChannelOverride(model="m2", by="U0ADMIN"),
    }
    view = await store.admission_view("T1", "U1", "C1", day=DAY, month=MONTH)
    assert view.override == payments
    await store.set_channel_override("T1", "C1", None)
    assert set(await store.channel_overrides("T1")) == {"C2"}
    view = await store.admission_view("T1", "U1", "C1", day=DAY, month=MONTH)
    assert view.override is None


async def test_usage_is_kept_as_long_as_asked_and_then_forgotten(
    store: Store, store_clock: ManualClock
) -> None:
    keep = UsageKeep(day_seconds=1.0, month_seconds=1.0, oldest_day="2026-02-13")
    await store.record_usage(used("U1"), thresholds=Thresholds(), keep=keep)
    assert await store.usage_cells(since=DAY, until=DAY)

    async def gone() -> bool:
        spend = await store.usage_spend("T1", "U1", day=DAY, month=MONTH)
        return spend == SpendView() and await store.usage_cells(since=DAY, until=DAY) == []

    assert await expired(store, store_clock, T0 + 120, gone)


async def test_days_older_than_the_retention_leave_the_index(redis_store: RedisStore) -> None:
    await add(redis_store, used("U1", day="2026-01-01"))
    await add(redis_store, used("U1"))  # KEEP's oldest day is 2026-02-13
    assert [c.day for c in await redis_store.usage_cells(since="2025-01-01", until=DAY)] == [DAY]


async def test_an_answers_usage_costs_one_round_trip(
    redis_store: RedisStore, redis_client: redis.asyncio.Redis
) -> None:
    async def one_answer() -> None:
        await redis_store.record_usage(used("U1"), thresholds=Thresholds(1, 1, 1), keep=KEEP)

    async def one_question() -> None:
        await redis_store.admission_view("T1", "U1", "C1", day=DAY, month=MONTH)

    await one_answer()  # loads the scripts
    await one_question()
    await commands_run(redis_client, one_answer, round_trips=1)
    await commands_run(redis_client, one_question, round_trips=1)


# Files in threads: prepared files kept for a thread's follow-up questions
# ============================================================================================

PREPARED = {
    "kind": "image",
    "block": {"type": "image", "source": {"type": "base64", "media_type": "image/png"}},
    "tokens": 1234,
    "name": "ünïcode ✓.png",
}


async def test_a_prepared_file_round_trips_and_is_a_copy(store: Store) -> None:
    assert await store.get_file("T1:F1") is None
    await store.put_file("T1:F1", PREPARED, 60)
    cached = await store.get_file("T1:F1")
    assert cached == PREPARED
    assert cached is not None
    cached["tokens"] = 0  # the caller's copy, not the cache
    assert await store.get_file("T1:F1") == PREPARED
    assert await store.get_file("T1:F2") is None


async def test_a_prepared_file_expires_with_the_ttl_of_its_latest_write(
    store: Store, store_clock: ManualClock
) -> None:
    await store.put_file("T1:F1", PREPARED, 60)
    await store.put_file("T1:F1", {**PREPARED, "tokens": 1}, 1.0)  # a write starts a new ttl
    store_clock.now = T0 + 0.99
    assert await store.get_file("T1:F1") == {**PREPARED, "tokens": 1}

    async def gone() -> bool:
        return await store.get_file("T1:F1") is None

    assert await expired(store, store_clock, T0 + 1.0, gone)


async def test_the_memory_store_keeps_a_bounded_number_and_size_of_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot.store import memory_caches

    monkeypatch.setattr(memory_caches, "MAX_FILES", 3)
    monkeypatch.setattr(memory_caches, "MAX_FILE_CHARS", 1_000)
    store = MemoryStore()
    for n in range(5):
        await store.put_file(f"F{n}", {"n": n}, 60)
    await store.get_file("F2")  # used lately: kept over F3
    await store.put_file("F5", {"n": 5}, 60)
    assert [n for n in range(6) if await store.get_file(f"F{n}") is not None] == [2, 4, 5]
    await store.put_file("big", {"data": "x" * 600}, 60)
    await store.put_file("bigger", {"data": "y" * 600}, 60)  # the two do not fit together
    assert await store.get_file("big") is None
    assert await store.get_file("bigger") == {"data": "y" * 600}
    await store.put_file("huge", {"data": "z" * 2_000}, 60)  # never fits: not kept at all
    assert await store.get_file("huge") is None
    assert await store.get_file("bigger") == {"data": "y" * 600}
    assert store._file_chars == sum(len(v[1]) for v in store._files.values())


async def test_a_prepared_file_lives_under_the_prefix_with_redis_expiring_it(
    redis_store: RedisStore, redis_client: redis.asyncio.Redis
) -> None:
    await redis_store.put_file("T1:F1", PREPARED, 3600)
    ttl = await redis_client.pttl(PREFIX + "file:T1:F1")
    assert 3_500_000 < ttl <= 3_600_000


@pytest.mark.parametrize("operation", ["get_file", "put_file"])
async def test_file_operations_raise_store_error_when_redis_is_unreachable(
    operation: str,
) -> None:
    no_retries = Retry(NoBackoff(), retries=0)
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", retry=no_retries)
    calls = {"get_file": store.get_file("F1"), "put_file": store.put_file("F1", {}, 60)}
    try:
        with pytest.raises(StoreError, match="unreachable"):
            await calls.pop(operation)
    finally:
        for unused in calls.values():
            unused.close()
        await store.close()

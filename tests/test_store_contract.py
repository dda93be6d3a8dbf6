"""The store contract, run against MemoryStore and RedisStore alike, plus Redis's failure modes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bot.pacing import COMPETING_WINDOW_SECONDS
from bot.store import AnswerRecord, MemoryStore, RedisStore, Store, StoreError
from tests.redis_server import RedisServer, free_port

T0 = 1_700_000_000.0  # a wall-clock-sized "now", so float precision is exercised
LEASE = 15.0


def answer(answer_id: str, *, owner: str = "r1", lease_until: float = T0 + LEASE) -> AnswerRecord:
    return AnswerRecord(
        answer_id=answer_id,
        team_id="T1",
        channel="C1",
        thread_ts="1700000000.000100",
        message_ts="1700000000.000200",
        asker="U1",
        owner=owner,
        started_at=T0 + len(answer_id) * 0.001,
        heartbeat_at=T0,
        lease_until=lease_until,
        shown_text="Hello *world* — ünïcode ✓\nsecond line",
        model="claude-sonnet-5-5",
    )


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> bool:
    """Poll `check` until it holds or the deadline passes (for Redis-side expiry and
    reconnection, which no event announces)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def listening(store: Store, url: str | None, subscribers: int = 1) -> None:
    """Wait until `subscribers` cancel listeners are subscribed (Redis subscribes lazily)."""
    if not isinstance(store, RedisStore):
        return
    assert url is not None
    client = redis.asyncio.Redis.from_url(url)
    try:

        async def subscribed() -> bool:
            counts = await client.pubsub_numsub("slackstream:cancel")
            return bool(counts[0][1] >= subscribers)

        assert await eventually(subscribed), "cancel listener never subscribed"
    finally:
        await client.aclose()


def url_of(store: Store, request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if isinstance(store, RedisStore) else None


# --- dedupe ------------------------------------------------------------------------------------


async def test_an_event_is_claimed_only_once(store: Store) -> None:
    assert await store.claim_event("Ev1", 60)
    assert not await store.claim_event("Ev1", 60)
    assert await store.claim_event("C1:1700000000.000100", 60)


async def test_an_event_can_be_claimed_again_after_its_ttl(store: Store) -> None:
    if store.kind == "memory":
        clock = ManualClock()
        memory = MemoryStore(clock=clock)
        assert await memory.claim_event("Ev1", 10)
        clock.now = 9.9
        assert not await memory.claim_event("Ev1", 10)
        clock.now = 10.0
        assert await memory.claim_event("Ev1", 10)
    else:
        assert await store.claim_event("Ev1", 0.2)
        assert not await store.claim_event("Ev1", 0.2)
        assert await eventually(lambda: store.claim_event("Ev1", 0.2))


# --- answers in flight ---------------------------------------------------------------------------


async def test_a_registered_answer_reads_back_exactly(store: Store) -> None:
    first, second = answer("a-1"), answer("a-22", owner="r2")
    await store.register(second)
    await store.register(first)

    assert await store.get("a-1") == first
    assert await store.get("a-22") == second
    assert await store.get("missing") is None


async def test_heartbeat_renews_the_lease_and_saves_the_checkpoint(store: Store) -> None:
    await store.register(answer("a-1"))

    assert await store.heartbeat("a-1", "r1", now=T0 + 5, lease_seconds=LEASE)
    renewed = await store.get("a-1")
    assert renewed == replace(answer("a-1"), heartbeat_at=T0 + 5, lease_until=T0 + 5 + LEASE)

    assert await store.heartbeat(
        "a-1", "r1", now=T0 + 6, lease_seconds=LEASE, shown_text="more", message_ts="99.1"
    )
    checkpoint = await store.get("a-1")
    assert checkpoint is not None
    assert (checkpoint.shown_text, checkpoint.message_ts) == ("more", "99.1")

    assert await store.heartbeat("a-1", "r1", now=T0 + 7, lease_seconds=LEASE, shown_text="")
    emptied = await store.get("a-1")
    assert emptied is not None
    assert (emptied.shown_text, emptied.message_ts) == ("", "99.1")


async def test_heartbeat_of_another_owner_changes_nothing(store: Store) -> None:
    await store.register(answer("a-1"))

    assert not await store.heartbeat(
        "a-1", "r2", now=T0 + 5, lease_seconds=LEASE, shown_text="hijack"
    )
    assert not await store.heartbeat("missing", "r1", now=T0 + 5, lease_seconds=LEASE)
    assert await store.get("a-1") == answer("a-1")


async def test_only_the_owner_finishes_an_answer(store: Store) -> None:
    await store.register(answer("a-1"))

    assert not await store.finish("a-1", "r2")
    assert await store.get("a-1") is not None

    assert await store.finish("a-1", "r1")
    assert await store.get("a-1") is None
    assert await store.count_in_flight("T1", "U1") == (0, 0)
    assert not await store.finish("a-1", "r1")
    assert not await store.heartbeat("a-1", "r1", now=T0 + 1, lease_seconds=LEASE)


# --- counts for the caps and thread order -------------------------------------------------------


def asked(answer_id: str, team: str, user: str, **fields: str) -> AnswerRecord:
    return replace(answer(answer_id), team_id=team, asker=user, **fields)  # type: ignore[arg-type]


async def test_answers_in_flight_are_counted_per_asker_and_per_workspace(store: Store) -> None:
    for record in (
        asked("a-1", "T1", "U1"),
        asked("a-2", "T1", "U1"),
        asked("a-3", "T1", "U2"),
        asked("b-1", "T2", "U1"),  # the same user id in another workspace is another person
    ):
        await store.register(record)

    assert await store.count_in_flight("T1", "U1") == (2, 3)
    assert await store.count_in_flight("T1", "U2") == (1, 3)
    assert await store.count_in_flight("T2", "U1") == (1, 1)
    assert await store.count_in_flight("T9", "U1") == (0, 0)

    assert not await store.finish("a-1", "r2")  # not the owner: still in flight
    assert await store.count_in_flight("T1", "U1") == (2, 3)
    assert await store.finish("a-1", "r1")
    assert await store.count_in_flight("T1", "U1") == (1, 2)
    assert not await store.finish("a-1", "r1")  # finishing twice counts once
    assert await store.count_in_flight("T1", "U1") == (1, 2)


async def test_counts_follow_an_answer_through_registering_again_and_take_over(
    store: Store,
) -> None:
    await store.register(asked("a-1", "T1", "U1", question_ts="1700000000.000300"))
    await store.register(asked("a-1", "T1", "U1", question_ts="1700000000.000300"))
    assert await store.count_in_flight("T1", "U1") == (1, 1)  # registered twice, counted once

    # Registered again with other fields (never done by the bot, but the store must stay exact).
    await store.register(asked("a-1", "T2", "U2", channel="C2"))
    assert await store.count_in_flight("T1", "U1") == (0, 0)
    assert await store.count_in_flight("T2", "U2") == (1, 1)
    assert await store.earlier_in_thread("C1", "1700000000.000100", "1700000001.000000") == 0

    # A take-over changes the owner, not what is in flight; the new owner's finish counts.
    claimed = await store.claim_lapsed(now=T0 + 100, new_owner="r9", lease_seconds=LEASE)
    assert [r.answer_id for r in claimed] == ["a-1"]
    assert await store.count_in_flight("T2", "U2") == (1, 1)
    assert await store.finish("a-1", "r9")
    assert await store.count_in_flight("T2", "U2") == (0, 0)


async def test_earlier_in_thread_counts_answers_to_earlier_questions_of_that_thread(
    store: Store,
) -> None:
    thread = "1700000000.000100"

    def in_thread(answer_id: str, question_ts: str, **fields: str) -> AnswerRecord:
        return asked(
            answer_id, "T1", "U1", **{"thread_ts": thread, **fields, "question_ts": question_ts}
        )

    await store.register(in_thread("first", "1700000000.000200"))
    await store.register(in_thread("third", "1700000001.000000"))
    await store.register(in_thread("elsewhere", "1700000000.000150", channel="C2"))
    await store.register(in_thread("other-thread", "1", thread_ts="1700000000.000900"))
    await store.register(in_thread("old-record", ""))  # no question ts: orders nothing

    async def earlier(question_ts: str) -> int:
        return await store.earlier_in_thread("C1", thread, question_ts)

    assert await earlier("1700000000.000200") == 0  # the first question: nothing before it
    assert await earlier("1700000000.000201") == 1  # a microsecond later
    assert await earlier("1700000000.999999") == 1
    assert await earlier("1700000001.000000") == 1  # "third" never counts itself
    assert await earlier("1700000001.000001") == 2
    assert await earlier("not a ts") == 0
    assert await store.earlier_in_thread("C2", thread, "1700000009.000000") == 1
    assert await store.earlier_in_thread("C1", "1700000000.000900", "2") == 1

    assert await store.finish("first", "r1")
    assert await earlier("1700000001.000000") == 0
    assert await earlier("1700000001.000001") == 1


async def test_counts_stay_exact_when_replicas_register_and_finish_at_once(
    store: Store, store_factory: Callable[[], Store]
) -> None:
    replicas = [store_factory() for _ in range(20)]
    records = [
        asked(f"a-{n}", "T1", f"U{n % 2}", question_ts=f"1700000000.{n:06d}") for n in range(20)
    ]

    await asyncio.gather(
        *(replica.register(r) for replica, r in zip(replicas, records, strict=True))
    )
    assert await store.count_in_flight("T1", "U0") == (10, 20)
    await asyncio.gather(
        *(
            replica.finish(r.answer_id, "r1")
            for replica, r in zip(replicas, records, strict=True)
            if r.asker == "U0"
        )
    )

    assert await store.count_in_flight("T1", "U0") == (0, 10)
    assert await store.count_in_flight("T1", "U1") == (10, 10)
    assert await store.earlier_in_thread("C1", records[0].thread_ts, "1700000001.000000") == 10


async def test_no_index_outlives_the_answers_it_counts(
    store: Store, request: pytest.FixtureRequest
) -> None:
    for n in range(3):
        await store.register(
            asked(f"a-{n}", f"T{n}", "U1", thread_ts=f"1.{n}", question_ts=f"2.{n}")
        )
    for n in range(3):
        assert await store.finish(f"a-{n}", "r1")

    if isinstance(store, MemoryStore):
        assert (store._by_team, store._by_user, store._by_thread) == ({}, {}, {})
    else:
        client = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_url"))
        try:
            assert await client.keys("slackstream:*") == []
        finally:
            await client.aclose()


# --- take-over -----------------------------------------------------------------------------------


async def test_claim_lapsed_takes_only_answers_whose_lease_ran_out(store: Store) -> None:
    now = T0 + 20
    await store.register(answer("lapsed-1", lease_until=now - 5))
    await store.register(answer("lapsed-2", owner="r2", lease_until=now - 0.001))
    await store.register(answer("live", lease_until=now + 1))
    await store.register(answer("edge", lease_until=now))  # lapses strictly after lease_until

    claimed = await store.claim_lapsed(now=now, new_owner="r9", lease_seconds=LEASE)

    assert sorted(r.answer_id for r in claimed) == ["lapsed-1", "lapsed-2"]
    for record in claimed:
        assert (record.owner, record.lease_until, record.heartbeat_at) == ("r9", now + LEASE, now)
        assert record.shown_text == answer("x").shown_text  # the checkpoint comes along
        assert await store.get(record.answer_id) == record
    assert await store.get("live") == answer("live", lease_until=now + 1)
    assert await store.claim_lapsed(now=now, new_owner="r8", lease_seconds=LEASE) == []
    # The replica that lost its answers learns it at its next heartbeat.
    assert not await store.heartbeat("lapsed-1", "r1", now=now, lease_seconds=LEASE)
    assert await store.heartbeat("lapsed-1", "r9", now=now, lease_seconds=LEASE)


async def test_a_restarted_replica_recovers_its_answers_before_their_lease_lapses(
    store: Store,
) -> None:
    await store.register(answer("mine-1", owner="r1"))
    await store.register(answer("mine-2", owner="r1"))
    await store.register(answer("theirs", owner="r2"))

    claimed = await store.claim_lapsed(
        now=T0 + 1, new_owner="r1", lease_seconds=LEASE, previous_owner="r1"
    )

    assert sorted(r.answer_id for r in claimed) == ["mine-1", "mine-2"]
    assert all(r.lease_until == T0 + 1 + LEASE for r in claimed)
    assert await store.get("theirs") == answer("theirs", owner="r2")


async def test_claim_lapsed_respects_its_limit(store: Store) -> None:
    for i in range(5):
        await store.register(answer(f"a-{i}", lease_until=T0))

    sizes = [
        len(await store.claim_lapsed(now=T0 + 1, new_owner="r9", lease_seconds=LEASE, limit=2))
        for _ in range(4)
    ]

    assert sizes == [2, 2, 1, 0]


async def test_each_lapsed_answer_has_exactly_one_winner_among_racing_replicas(
    store: Store, store_factory: Callable[[], Store]
) -> None:
    ids = {f"a-{i}" for i in range(10)}
    for answer_id in ids:
        await store.register(answer(answer_id, lease_until=T0))
    replicas = [store_factory() for _ in range(20)]

    results = await asyncio.gather(
        *(
            replica.claim_lapsed(now=T0 + 1, new_owner=f"r{n}", lease_seconds=LEASE)
            for n, replica in enumerate(replicas)
        )
    )

    won = [(record.answer_id, n) for n, records in enumerate(results) for record in records]
    assert sorted(answer_id for answer_id, _ in won) == sorted(ids)  # each once, none lost
    for answer_id, n in won:
        stored = await store.get(answer_id)
        assert stored is not None and stored.owner == f"r{n}"


# --- cancel --------------------------------------------------------------------------------------


async def test_a_cancel_request_is_remembered(store: Store) -> None:
    await store.register(answer("a-1"))
    assert await store.cancel_requested("a-1") is None

    await store.request_cancel("a-1", "U7")

    assert await store.cancel_requested("a-1") == "U7"
    assert await store.cancel_requested("a-2") is None


async def test_a_cancel_flag_expires(store: Store) -> None:
    if store.kind == "memory":
        clock = ManualClock()
        memory = MemoryStore(clock=clock)
        await memory.request_cancel("a-1", "U7", ttl_seconds=30)
        clock.now = 30
        assert await memory.cancel_requested("a-1") is None
    else:
        await store.request_cancel("a-1", "U7", ttl_seconds=0.2)

        async def gone() -> bool:
            return await store.cancel_requested("a-1") is None

        assert await eventually(gone)


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


# --- workspace edit budget -----------------------------------------------------------------------


async def wait_for_token(store: Store, team_id: str, **kw: Any) -> float:
    """The budget's answer as a number: 0.0 when a token was taken, else the wait."""
    return (await store.take_edit_token(team_id, **kw)).wait


async def test_edit_tokens_run_out_after_the_burst_and_refill_over_time(store: Store) -> None:
    budget = {"per_minute": 60.0, "burst": 3.0}  # one token a second

    assert [await wait_for_token(store, "T1", now=T0, **budget) for _ in range(3)] == [0.0] * 3
    assert await wait_for_token(store, "T1", now=T0, **budget) == pytest.approx(1.0)
    assert await wait_for_token(store, "T1", now=T0 + 0.25, **budget) == pytest.approx(0.75)
    assert await wait_for_token(store, "T1", now=T0 + 1, **budget) == 0.0
    assert await wait_for_token(store, "T1", now=T0 + 1, **budget) > 0
    # Another workspace has its own budget.
    assert await wait_for_token(store, "T2", now=T0 + 1, **budget) == 0.0
    # A long idle time refills no more than the burst.
    takes = [await wait_for_token(store, "T1", now=T0 + 1000, **budget) for _ in range(4)]
    assert takes[:3] == [0.0] * 3 and takes[3] > 0


async def test_a_reserve_keeps_tokens_for_priority_callers(store: Store) -> None:
    budget = {"per_minute": 60.0, "burst": 5.0}

    ordinary = [await wait_for_token(store, "T1", now=T0, reserve=2, **budget) for _ in range(4)]
    priority = [await wait_for_token(store, "T1", now=T0, **budget) for _ in range(3)]

    assert ordinary[:3] == [0.0] * 3 and ordinary[3] == pytest.approx(1.0)
    assert priority[:2] == [0.0] * 2 and priority[2] == pytest.approx(1.0)


async def test_a_pause_holds_every_edit_until_it_ends(store: Store) -> None:
    budget = {"per_minute": 60.0, "burst": 5.0}
    assert await store.edit_pause_until("T1") == 0.0

    await store.pause_edits("T1", T0 + 10)
    await store.pause_edits("T1", T0 + 4)  # an earlier end does not shorten the pause

    assert await store.edit_pause_until("T1") == T0 + 10
    assert await wait_for_token(store, "T1", now=T0, **budget) == pytest.approx(10.0)
    assert await wait_for_token(store, "T1", now=T0 + 9, **budget) == pytest.approx(1.0)
    assert await wait_for_token(store, "T1", now=T0 + 10, **budget) == 0.0
    assert await wait_for_token(store, "T2", now=T0, **budget) == 0.0


async def test_a_pause_and_an_empty_bucket_wait_for_the_later_of_the_two(store: Store) -> None:
    budget = {"per_minute": 6.0, "burst": 1.0}  # a token every 10 s
    assert await wait_for_token(store, "T1", now=T0, **budget) == 0.0

    await store.pause_edits("T1", T0 + 2)

    assert await wait_for_token(store, "T1", now=T0, **budget) == pytest.approx(10.0)


async def test_a_reserve_as_large_as_the_burst_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="reserve"):
        await store.take_edit_token("T1", now=T0, per_minute=60, burst=3, reserve=3)


async def test_the_budget_counts_the_answers_sharing_it(store: Store) -> None:
    budget = {"per_minute": 60.0, "burst": 5.0}

    first = await store.take_edit_token("T1", now=T0, answer_id="a-1", **budget)
    again = await store.take_edit_token("T1", now=T0 + 1, answer_id="a-1", **budget)
    second = await store.take_edit_token("T1", now=T0 + 2, answer_id="a-2", **budget)
    elsewhere = await store.take_edit_token("T2", now=T0 + 2, answer_id="a-3", **budget)
    anonymous = await store.take_edit_token("T1", now=T0 + 2, **budget)

    assert (first.competing, again.competing, second.competing) == (1, 1, 2)
    assert elsewhere.competing == 1  # another workspace shares another budget
    assert anonymous.competing == 2  # a caller without an answer id is not counted


async def test_a_refused_edit_still_counts_its_answer_as_competing(store: Store) -> None:
    budget = {"per_minute": 6.0, "burst": 1.0}
    assert (await store.take_edit_token("T1", now=T0, answer_id="a-1", **budget)).granted

    refused = await store.take_edit_token("T1", now=T0, answer_id="a-2", **budget)

    assert not refused.granted and refused.competing == 2


async def test_an_answer_stops_competing_once_it_has_not_asked_for_the_window(
    store: Store,
) -> None:
    budget = {"per_minute": 600.0, "burst": 10.0}
    for answer_id in ("a-1", "a-2", "a-3"):
        await store.take_edit_token("T1", now=T0, answer_id=answer_id, **budget)
    # a-2 keeps asking; the others have not asked for longer than the window (finished, say,
    # or their replica died).
    await store.take_edit_token(
        "T1", now=T0 + COMPETING_WINDOW_SECONDS / 2, answer_id="a-2", **budget
    )
    later = T0 + COMPETING_WINDOW_SECONDS + 0.5

    kept = await store.take_edit_token("T1", now=later, answer_id="a-2", **budget)

    assert kept.competing == 1


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


# --- Redis only: failure modes and costs ---------------------------------------------------------

OPERATIONS: dict[str, Callable[[Store], Awaitable[object]]] = {
    "ping": lambda s: s.ping(),
    "claim_event": lambda s: s.claim_event("Ev1", 60),
    "register": lambda s: s.register(answer("a-1")),
    "heartbeat": lambda s: s.heartbeat("a-1", "r1", now=T0, lease_seconds=LEASE),
    "finish": lambda s: s.finish("a-1", "r1"),
    "get": lambda s: s.get("a-1"),
    "count_in_flight": lambda s: s.count_in_flight("T1", "U1"),
    "earlier_in_thread": lambda s: s.earlier_in_thread("C1", "1.000100", "1.000200"),
    "claim_lapsed": lambda s: s.claim_lapsed(now=T0, new_owner="r1", lease_seconds=LEASE),
    "request_cancel": lambda s: s.request_cancel("a-1", "U1"),
    "cancel_requested": lambda s: s.cancel_requested("a-1"),
    "take_edit_token": lambda s: s.take_edit_token("T1", now=T0, per_minute=45, burst=5),
    "pause_edits": lambda s: s.pause_edits("T1", T0),
    "edit_pause_until": lambda s: s.edit_pause_until("T1"),
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
        call = asyncio.ensure_future(store.claim_event("Ev1", 60))
        await asyncio.to_thread(redis_server.start)

        assert await asyncio.wait_for(call, 5)
    finally:
        await store.close()


async def test_a_redis_restart_needs_no_new_store(
    redis_url: str, redis_server: RedisServer
) -> None:
    store = RedisStore.from_url(redis_url)
    try:
        await store.register(answer("a-1"))
        assert await store.heartbeat("a-1", "r1", now=T0, lease_seconds=LEASE)

        redis_server.restart()

        # Without persistence the answer is gone; the scripts are loaded again on demand.
        assert not await store.heartbeat("a-1", "r1", now=T0, lease_seconds=LEASE)
        assert (await store.take_edit_token("T1", now=T0, per_minute=45, burst=5)).granted
        await store.register(answer("a-1"))
        assert await store.heartbeat("a-1", "r1", now=T0, lease_seconds=LEASE)
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


async def test_an_idle_edit_budget_expires_from_redis(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await store.take_edit_token("T1", now=time.time(), per_minute=60, burst=10, answer_id="a-1")
        ttl = await client.pttl("slackstream:bucket:T1")
        # Full again after 10 s; the key lives that long plus a grace period, not forever.
        assert 10_000 < ttl <= 75_000
        # Who shares the budget is forgotten once nobody has asked for the window and a grace.
        competing_ttl = await client.pttl("slackstream:bucket:T1:competing")
        assert 0 < competing_ttl <= 1000 * (COMPETING_WINDOW_SECONDS + 60)
    finally:
        await client.aclose()
        await store.close()


async def test_a_heartbeat_costs_the_same_however_many_answers_are_in_flight(
    redis_url: str,
) -> None:
    store = RedisStore.from_url(redis_url)
    client = redis.asyncio.Redis.from_url(redis_url)

    async def heartbeats() -> None:
        for _ in range(10):
            assert await store.heartbeat(
                "a-0", "r1", now=T0, lease_seconds=LEASE, shown_text="x" * 3000
            )

    async def commands_per_heartbeat() -> int:
        return await commands_run(client, heartbeats, round_trips=10)

    try:
        await store.register(answer("a-0"))
        await store.heartbeat("a-0", "r1", now=T0, lease_seconds=LEASE)  # loads the script
        few = await commands_per_heartbeat()
        for i in range(1, 200):
            await store.register(answer(f"a-{i}"))
        many = await commands_per_heartbeat()
        assert few == many
    finally:
        await client.aclose()
        await store.close()


async def test_a_record_lost_behind_the_store_is_not_counted(redis_url: str) -> None:
    """A record that vanished without finish() (deleted by hand, evicted) must not hold a cap
    or a thread forever: the queries drop what has no record."""
    store = RedisStore.from_url(redis_url)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        for n in range(2):
            await store.register(asked(f"a-{n}", "T1", "U1", question_ts=f"1700000000.00010{n}"))
        await client.delete("slackstream:answer:a-0")

        assert await store.count_in_flight("T1", "U1") == (1, 1)
        assert await store.earlier_in_thread("C1", answer("x").thread_ts, "1700000009.0") == 1
        assert await client.scard("slackstream:inflight:team:T1") == 1
    finally:
        await client.aclose()
        await store.close()


async def test_the_caps_and_thread_order_cost_the_same_however_many_answers_are_in_flight(
    redis_url: str,
) -> None:
    """One round trip each, and work that follows the asker's workspace and thread, not the
    roster: they run for every question."""
    store = RedisStore.from_url(redis_url)
    client = redis.asyncio.Redis.from_url(redis_url)

    async def questions() -> None:
        for _ in range(10):
            assert await store.count_in_flight("T1", "U1") == (1, 1)
            assert await store.earlier_in_thread("C1", answer("x").thread_ts, "1800000000.0") == 1

    async def commands_per_question() -> int:
        return await commands_run(client, questions, round_trips=20)

    try:
        await store.register(asked("a-0", "T1", "U1", question_ts="1700000000.000200"))
        await commands_per_question()  # loads the scripts
        few = await commands_per_question()
        for i in range(1, 300):  # other workspaces, other threads
            await store.register(
                asked(f"a-{i}", f"T{1 + i}", "U1", thread_ts=f"1.{i}", question_ts="2.0")
            )
        many = await commands_per_question()
        assert few == many
    finally:
        await client.aclose()
        await store.close()


# ------------------------------------------------------------------------------------------
# Thread cache


async def test_thread_cache_round_trips_and_is_a_copy(store: Store) -> None:
    messages = [{"ts": "1.000100", "user": "U1", "text": "héllo <@U2> 日本"}, {"ts": "1.000200"}]
    assert await store.get_thread("C1:1.000100") is None
    await store.put_thread("C1:1.000100", messages, 60)
    cached = await store.get_thread("C1:1.000100")
    assert cached == messages
    assert cached is not None
    cached.append({"ts": "9"})  # the caller's copy, not the cache
    assert await store.get_thread("C1:1.000100") == messages


async def test_thread_cache_expires() -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    await store.put_thread("k", [{"ts": "1"}], 10)
    now[0] = 9.9
    assert await store.get_thread("k") == [{"ts": "1"}]
    now[0] = 10.0
    assert await store.get_thread("k") is None

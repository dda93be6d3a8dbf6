"""One answer's side of its workspace's `chat.update` budget: asking for a token the way
`pacing.budget_claim` says, carrying the lease's checkpoint with that request, and pausing
every replica when Slack answers 429 anyway."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable

from bot.config import Settings
from bot.lease import Lease, Outbox
from bot.logs import ContextLog
from bot.metrics import Metrics
from bot.pacing import BudgetClaim, EditKind, PacingPolicy, budget_claim
from bot.store import LeaseState, Store, StoreError

Clock = Callable[[], float]

NOT_NOW = math.inf  # the answer's lease is gone: no edit is wanted any more
WANTED_CHECK_SECONDS = 1.0  # how often a long wait for a token looks whether it is still wanted


class EditBudget:
    """See the module docstring. `lease` is None for edits made without one (none today)."""

    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        policy: PacingPolicy,
        team_id: str,
        answer_id: str,
        lease: Lease | None,
        clock: Clock,
        log: ContextLog,
        hurry: asyncio.Event | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.policy = policy
        self.team_id = team_id
        self.answer_id = answer_id
        self.lease = lease
        self.clock = clock
        self.log = log
        # Set when the process is going away: edits that must land stop waiting for tokens.
        self.hurry = hurry or asyncio.Event()
        self.competing = 1  # answers sharing the workspace budget, as the store last counted

    async def take(
        self,
        kind: EditKind,
        *,
        unshown_since: float | None = None,
        asked_at: float | None = None,
        wanted: Callable[[], bool] = lambda: True,
        woken: asyncio.Event | None = None,
    ) -> float:
        """0.0 when this edit may go out now (a token was taken and the checkpoint recorded),
        else the seconds before it is worth asking again (the edit is skipped).

        Edits that must wait (final, continuation, a fresh first text) ask again until they
        get a token, keeping their place by `asked_at` (finals and continuations in the
        budget's waiting line, see `pacing`); the others are skipped. A waiting edit
        stops waiting once `wanted()` is false, and its waits end early when `woken` is set
        (a first text is not worth a token once the stream has ended: the final edit shows it).
        """
        if not self.policy.shared_budget:
            await self._checkpoint_alone()
            return 0.0
        asked_at = self.clock() if asked_at is None else asked_at
        while True:
            if not wanted():
                self.metrics.edits_skipped.labels("not_wanted").inc()
                return NOT_NOW
            now = self.clock()
            claim = budget_claim(
                kind,
                staleness=now - unshown_since if unshown_since is not None else 0.0,
                waited=now - asked_at,
                interval=self.policy.interval or 1.0,
                competing=self.competing,
                per_minute=self.settings.workspace_edits_per_minute,
                burst=self.settings.workspace_edit_burst,
            )
            try:
                grant_wait, lease_state = await self._request(claim, waited=now - asked_at)
            except StoreError:
                # Unreachable, or too slow (a stalled Redis): the edit goes out unbudgeted, and
                # per-message pacing still holds.
                return 0.0
            if lease_state is not None and lease_state is not LeaseState.HELD and self.lease:
                await self.lease.heard(lease_state)
                if not self.lease.held:
                    return NOT_NOW
            if grant_wait <= 0:
                return 0.0
            if not claim.waits:
                self.metrics.edits_skipped.labels("budget").inc()
                return grant_wait
            if self.hurry.is_set():
                return 0.0  # shutting down: a final edit goes out rather than wait its turn
            await self._wait_turn(grant_wait, wanted, woken or self.hurry)

    async def _wait_turn(
        self, seconds: float, wanted: Callable[[], bool], wake: asyncio.Event
    ) -> None:
        """Until the budget said to ask again: a place in the waiting line can be a minute
        away, so the wait ends early when `wake` is set, and `wanted()` is looked at every
        WANTED_CHECK_SECONDS (a stopped answer or a lost lease does not keep a task waiting)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while (left := until - loop.time()) > 0 and not wake.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, WANTED_CHECK_SECONDS)):
                    await wake.wait()
            if not wanted():
                return

    async def _request(
        self, claim: BudgetClaim, *, waited: float
    ) -> tuple[float, LeaseState | None]:
        """One token request, with the lease's pending checkpoint when there is a lease."""
        sending = self.lease.sending() if self.lease else _no_lease()
        async with sending as outbox:
            grant = await self.store.take_edit_token(
                self.team_id,
                per_minute=self.settings.workspace_edits_per_minute,
                burst=self.settings.workspace_edit_burst,
                reserve=claim.reserve,
                answer_id=self.answer_id,
                token=self.lease.token if self.lease and self.lease.registered else "",
                checkpoint=outbox.checkpoint,
                waits=claim.lines_up,
                waited=waited,
            )
            outbox.applied = (
                grant.granted and grant.lease is LeaseState.HELD and not grant.text_rejected
            )
            outbox.rejected = grant.text_rejected
        self.competing = max(1, grant.competing)
        return grant.wait, grant.lease

    async def _checkpoint_alone(self) -> None:
        """Without the shared budget (the benchmark's peer policies) the checkpoint still has
        to reach the store before the edit: one renewal."""
        if self.lease is not None:
            await self.lease.renew()

    async def rate_limited(self, retry_after: float | None) -> None:
        """Slack answered 429 to an edit: pause the whole workspace's edits, on every replica."""
        if not self.policy.shared_budget:
            return
        pause = retry_after or 1.0
        self.metrics.slack_rate_limit_pauses.inc()
        self.metrics.slack_rate_limit_pause_seconds.inc(pause)
        self.log.warning(
            "chat.update rate limited: pausing the workspace's edits", extra={"retry_after": pause}
        )
        with contextlib.suppress(StoreError):
            await self.store.pause_edits(self.team_id, pause)


@contextlib.asynccontextmanager
async def _no_lease() -> AsyncIterator[Outbox]:
    yield Outbox(None)

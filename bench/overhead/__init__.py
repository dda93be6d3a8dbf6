"""What running the bot costs: CPU per streamed delta, Redis commands, memory, concurrency.

Every figure is taken from a real `python -m bot serve` process (started as the fault tests start
theirs), talking over loopback to the simulated Slack and Claude and to a throwaway redis-server:

- CPU per delta: the bot's CPU time (utime + stime from /proc) for M answers of D small deltas,
  against *bare loop* processes that stream the same scripts through the SDK and do nothing
  else. The ratio that counts (target at most 1.3) is against the bare loop making the bot's
  own request: raw events from `messages.create(stream=True)` over the SDK's aiohttp transport,
  the client `bot.app.build_claude` makes. A second bare loop, the SDK's `messages.stream()`
  helper over its default httpx2 transport, is kept as a reference column.
- Redis commands per answer, from INFO commandstats, for answers of different lengths and rates:
  they should follow an answer's duration (heartbeats, paced edits), not its length.
- Memory per in-flight answer: the bot's RSS with K answers held open mid-stream, over its RSS
  before them, divided by K.
- Concurrency: answers streaming at 30 deltas a second arrive at a steady rate so that about N are
  in flight; the acknowledgement time of each event POST is measured while they stream. The
  largest N with p99 under 250 ms is reported (target at least 300).
- py-spy profiles of the bot under the delta-heavy workload and at the concurrency target,
  reduced to their top frames.

The simulators run in a helper process of their own (`--sims`) so that their CPU is not counted
as the bot's, and the bare loop in another (`--bare`). Both are this package, re-invoked
(`python -m bench.overhead`, `__main__.py`).

One module per concept. The rig every phase shares: `workload` (what a question asks the
simulated Claude for), `sims` (the simulators' process), `bare` (the bare loops' process), `rig`
(redis, one bot process, the event poster, /proc readings). One module per phase: `cpu`,
`profiles`, `redis_commands`, `memory`, `concurrency`. Then `run` (the plans and the order the
phases run in) and `report` (the Markdown of overhead.md).

The names below are what `bench.tools` and `bench.ab` import; `bench.ab` runs another commit's
tree with that tree's own `bench.overhead`, so `Rig`, `Workload` and `cpu_seconds` stay here.
"""

from bench.overhead.bare import BOT_LOOP
from bench.overhead.cpu import cpu_case
from bench.overhead.rig import Rig, _log, _require_completed, cpu_seconds
from bench.overhead.workload import Workload

__all__ = ["BOT_LOOP", "Rig", "Workload", "_log", "_require_completed", "cpu_case", "cpu_seconds"]

"""Every Redis key the store uses, named once. All live under one prefix (`slackstream:` by
default; the demo uses its own):

  answer:{id}          hash: an AnswerRecord's fields (a tombstone once finished, for a while)
  text:{id}            string: the answer's text so far, grown by APPEND
  inflight             sorted set: ids of unfinished answers by lease end (the janitor's scan)
  inflight:team:{team}, inflight:user:{team}:{user}
                       sets: unfinished answers per workspace and per asker (the caps)
  inflight:thread:{channel}:{thread_ts}
                       sorted set: unfinished answers of a thread by question ts (thread order)
  event:{key}          string: a dedupe claim (its value is the claimer's token)
  epoch                string: when the store's data began (store clock); an empty restart
                       makes it new, which tells replicas that dedupe claims were lost
  cancel:{id}          string: who pressed Stop; the `cancel` channel carries the signal
  bucket:{team}        hash: the workspace's edit budget (tokens, last, pause_until)
  bucket:{team}:competing
                       sorted set: answers sharing that budget, by when they last asked
  bucket:{team}:line, bucket:{team}:line:lapses
                       sorted sets: the budget's waiting line (edits that wait for a token), by
                       when each began asking and by when its place lapses
  thread:{channel}:{thread_ts}
                       string: the thread's messages as last read from Slack (JSON)
  usage:{team}:{day}   hash: the day's usage cells, field `{user}|{channel}|{model}|{counter}`
  usage:{team}:{period}:user:{user}, usage:{team}:{month}:team
                       hashes: spend roll-ups (answers, tokens, cost_micros) of a person's day
                       and month, and of the workspace's month (the budgets)
  usage-days           sorted set: `{team}|{day}` of every day with usage, by day number
  feedback:{answer_id} hash: each voter's vote on the answer
  channels:{team}      hash: channel -> the override an admin set from Slack (JSON)
  file:{team}:{file_id}
                       string: a Slack file as prepared for Claude (JSON: its content block)

The index key shapes are also built inside the Lua scripts (`lua.INDEX_KEYS`), from the same
names below passed in as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "slackstream:"

ANSWER = "answer:"
TEXT = "text:"
INFLIGHT = "inflight"
EVENT = "event:"
EPOCH = "epoch"
CANCEL = "cancel:"
CANCEL_CHANNEL = "cancel"
BUCKET = "bucket:"
COMPETING_SUFFIX = ":competing"
LINE_SUFFIX = ":line"
LAPSES_SUFFIX = ":lapses"
THREAD = "thread:"
FILE = "file:"


@dataclass(frozen=True)
class Keys:
    """The keys of one store, under its prefix."""

    prefix: str = DEFAULT_PREFIX

    @property
    def inflight(self) -> str:
        return self.prefix + INFLIGHT

    @property
    def epoch(self) -> str:
        return self.prefix + EPOCH

    @property
    def cancel_channel(self) -> str:
        return self.prefix + CANCEL_CHANNEL

    def answer(self, answer_id: str) -> str:
        return self.prefix + ANSWER + answer_id

    def text(self, answer_id: str) -> str:
        return self.prefix + TEXT + answer_id

    def event(self, key: str) -> str:
        return self.prefix + EVENT + key

    def cancel(self, answer_id: str) -> str:
        return self.prefix + CANCEL + answer_id

    def bucket(self, team_id: str) -> str:
        return self.prefix + BUCKET + team_id

    def competing(self, team_id: str) -> str:
        return self.bucket(team_id) + COMPETING_SUFFIX

    def line(self, team_id: str) -> str:
        return self.bucket(team_id) + LINE_SUFFIX

    def line_lapses(self, team_id: str) -> str:
        return self.line(team_id) + LAPSES_SUFFIX

    def thread(self, key: str) -> str:
        return self.prefix + THREAD + key

    def user_index(self, team_id: str, user: str) -> str:
        return f"{self.prefix}{INFLIGHT}:user:{team_id}:{user}"

    def team_index(self, team_id: str) -> str:
        return f"{self.prefix}{INFLIGHT}:team:{team_id}"

    def thread_index(self, channel: str, thread_ts: str) -> str:
        return f"{self.prefix}{INFLIGHT}:thread:{channel}:{thread_ts}"

    def file(self, key: str) -> str:
        return self.prefix + FILE + key


# -- running for a company: usage, budgets, feedback, channel overrides (`ledger.py`) --------

USAGE = "usage:"
USAGE_DAYS = "usage-days"
FEEDBACK = "feedback:"
CHANNELS = "channels:"


@dataclass(frozen=True)
class LedgerKeys:
    """The usage, feedback and channel keys of one store, under its prefix."""

    prefix: str = DEFAULT_PREFIX

    @property
    def usage_days(self) -> str:
        return self.prefix + USAGE_DAYS

    def usage_day(self, team_id: str, day: str) -> str:
        return f"{self.prefix}{USAGE}{team_id}:{day}"

    def user_spend(self, team_id: str, period: str, user: str) -> str:
        return f"{self.prefix}{USAGE}{team_id}:{period}:user:{user}"

    def team_spend(self, team_id: str, month: str) -> str:
        return f"{self.prefix}{USAGE}{team_id}:{month}:team"

    def feedback(self, answer_id: str) -> str:
        return self.prefix + FEEDBACK + answer_id

    def channels(self, team_id: str) -> str:
        return self.prefix + CHANNELS + team_id

"""The Redis ledger's atomic steps (running for a company: usage, budgets, feedback, channel
overrides; records in `ledger.py`), one Lua script each, written as `lua.py`'s are (KEYS and
ARGV named in locals at the top). Apart from the answers' scripts because they change for other
reasons: a new budget or report, not a new way an answer can live or end."""

from __future__ import annotations

from bot.store.lua import LIVE

# A spend roll-up's answers, tokens and cost_micros, appended to `reply`.
SPEND = """
local function add_spend(reply, key)
  local spend = redis.call('HMGET', key, 'answers', 'tokens', 'cost_micros')
  for i = 1, 3 do reply[#reply + 1] = tonumber(spend[i] or '0') or 0 end
end
"""

# KEYS: the asker's in-flight set, the workspace's in-flight set, the asker's day spend, the
# asker's month spend, the workspace's month spend, the workspace's channel overrides.
# ARGV: answer key prefix, channel ('' for none).
# Returns {mine, workspace, then answers/tokens/cost_micros of each spend, override JSON or ''}:
# the caps (as COUNT), the budgets and the channel's override, for one round trip a question.
ADMISSION_VIEW = (
    """
local user_set, team_set = KEYS[1], KEYS[2]
local user_day, user_month, team_month, overrides = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local answer_prefix, channel = ARGV[1], ARGV[2]
"""
    + LIVE
    + SPEND
    + """
local reply = {live(user_set), live(team_set)}
for _, key in ipairs({user_day, user_month, team_month}) do add_spend(reply, key) end
local override = ''
if channel ~= '' then override = redis.call('HGET', overrides, channel) or '' end
reply[#reply + 1] = override
return reply
"""
)

# KEYS: the day's cells, the asker's day spend, the asker's month spend, the workspace's month
# spend, the index of days, the answer's record.
# ARGV: the cell's field prefix ('{user}|{channel}|{model}|'), the cell's increments (JSON
# object of integers), tokens, cost_micros, day keep ms, month keep ms, index member, index
# score (day number), oldest score kept, then the three thresholds (0: none) in the order of
# ledger.BUDGETS, then '1' to mark the answer's record counted ('' for no answer).
# Returns the three spends after (answers, tokens, cost_micros each), then 1/0 for each
# threshold this addition crossed, then 1 if counted now. A record marked `usage_counted`
# already (its owner and a janitor may both try) adds nothing: the spends as they are, 0s.
RECORD_USAGE = (
    SPEND
    + """
local cells, user_day, user_month, team_month, days = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local answer_key = KEYS[6]
local prefix, increments = ARGV[1], cjson.decode(ARGV[2])
local tokens, cost = tonumber(ARGV[3]), tonumber(ARGV[4])
local day_keep_ms, month_keep_ms = ARGV[5], ARGV[6]
local member, score, oldest = ARGV[7], ARGV[8], ARGV[9]
local thresholds = {tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])}
local mark = ARGV[13] == '1'
if mark and redis.call('EXISTS', answer_key) == 1 then
  if redis.call('HGET', answer_key, 'usage_counted') == '1' then
    local reply = {}
    for _, key in ipairs({user_day, user_month, team_month}) do add_spend(reply, key) end
    for _ = 1, 4 do reply[#reply + 1] = 0 end
    return reply
  end
  redis.call('HSET', answer_key, 'usage_counted', '1')
end
for name, n in pairs(increments) do
  if n ~= 0 then redis.call('HINCRBY', cells, prefix .. name, n) end
end
redis.call('PEXPIRE', cells, day_keep_ms)
redis.call('ZADD', days, score, member)
redis.call('ZREMRANGEBYSCORE', days, '-inf', '(' .. oldest)
local function add(key, keep_ms)
  local before = redis.call('HMGET', key, 'tokens', 'cost_micros')
  local after = {
    redis.call('HINCRBY', key, 'answers', 1),
    redis.call('HINCRBY', key, 'tokens', tokens),
    redis.call('HINCRBY', key, 'cost_micros', cost),
  }
  redis.call('PEXPIRE', key, keep_ms)
  return {tonumber(before[1] or '0') or 0, tonumber(before[2] or '0') or 0}, after
end
local ud_before, ud = add(user_day, day_keep_ms)
local um_before, um = add(user_month, month_keep_ms)
local tm_before, tm = add(team_month, month_keep_ms)
local function crossed(limit, before, after)
  if limit > 0 and before < limit and after >= limit then return 1 end
  return 0
end
return {
  ud[1], ud[2], ud[3], um[1], um[2], um[3], tm[1], tm[2], tm[3],
  crossed(thresholds[1], ud_before[1], ud[2]),
  crossed(thresholds[2], um_before[2], um[3]),
  crossed(thresholds[3], tm_before[2], tm[3]),
  1,
}
"""
)

# KEYS: the answer's votes, the answer's day of cells, the index of days.
# ARGV: voter, value, the cell's field prefix, votes keep ms, cell keep ms (0: the cell is past
# retention, leave it), index member, index score.
# Returns {1 if counted (0: the same vote again), the vote it replaced or ''}.
RECORD_FEEDBACK = """
local votes, cells, days = KEYS[1], KEYS[2], KEYS[3]
local voter, value, prefix = ARGV[1], ARGV[2], ARGV[3]
local keep_ms, cell_keep_ms = ARGV[4], tonumber(ARGV[5])
local member, score = ARGV[6], ARGV[7]
local previous = redis.call('HGET', votes, voter)
if previous == value then return {0, previous} end
redis.call('HSET', votes, voter, value)
redis.call('PEXPIRE', votes, keep_ms)
if cell_keep_ms > 0 then
  redis.call('HINCRBY', cells, prefix .. 'feedback_' .. value, 1)
  if previous then redis.call('HINCRBY', cells, prefix .. 'feedback_' .. previous, -1) end
  if redis.call('PTTL', cells) < cell_keep_ms then redis.call('PEXPIRE', cells, cell_keep_ms) end
  redis.call('ZADD', days, score, member)
end
return {1, previous or ''}
"""


# Every ledger script by the name `RedisBase._run` runs it under.
SCRIPTS = {
    "admission_view": ADMISSION_VIEW,
    "record_usage": RECORD_USAGE,
    "record_feedback": RECORD_FEEDBACK,
}

"""The Redis store's atomic steps, one Lua script each (one round trip, never interleaved with
another replica's step). Every script names its KEYS and ARGV in locals at its top; records
and checkpoints travel as JSON objects read by field name (`cjson`), never by position.

Time is the store's: `now(given)` reads Redis `TIME` unless a test passed a clock value, so
leases and buckets never compare the wall clocks of different machines. Numbers are written
with %.17g: Lua's tostring keeps only 14 digits.
"""

from __future__ import annotations

# Helpers shared by the scripts below (prepended to each one that needs them).
COMMON = """
local function now_from(given)
  if given ~= nil and given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function num(x) return string.format('%.17g', x) end
"""

# The indexes of unfinished answers (keys.py lists their shapes). Written only by register,
# finish and take-back, in the same step as the record, so a count never sees one without
# the other. Redis drops a set once its last member is removed: no index outlives its answers.
INDEX = """
local function index_keys(prefix, team, asker, channel, thread_ts)
  return prefix .. 'inflight:team:' .. team,
    prefix .. 'inflight:user:' .. team .. ':' .. asker,
    prefix .. 'inflight:thread:' .. channel .. ':' .. thread_ts
end
local function unindex(prefix, answer_key, id)
  local old = redis.call('HMGET', answer_key, 'team_id', 'asker', 'channel', 'thread_ts')
  if old[1] then
    local team, user, thread = index_keys(prefix, old[1], old[2] or '', old[3] or '', old[4] or '')
    redis.call('SREM', team, id)
    redis.call('SREM', user, id)
    redis.call('ZREM', thread, id)
  end
end
local function index(prefix, f, thread_order)
  local team, user, thread = index_keys(prefix, f.team_id, f.asker, f.channel, f.thread_ts)
  redis.call('SADD', team, f.answer_id)
  redis.call('SADD', user, f.answer_id)
  if thread_order ~= '' then redis.call('ZADD', thread, thread_order, f.answer_id) end
end
"""

# Records what an answer's message shows, and its usage so far (JSON, for a janitor to count).
# Text is appended where the stored text ends, only if it ends where the caller thinks (a
# retried or racing append is refused, and the caller sends the whole text next time).
# Returns 1 when the text was refused.
CHECKPOINT = """
local function apply_checkpoint(answer_key, text_key, checkpoint_json, keep_ms)
  if checkpoint_json == '' then return 0 end
  local cp = cjson.decode(checkpoint_json)
  local refused = 0
  if cp.text ~= nil then
    if cp.text_at == nil then
      redis.call('SET', text_key, cp.text, 'PX', keep_ms)
    elseif redis.call('STRLEN', text_key) == cp.text_at then
      redis.call('APPEND', text_key, cp.text)
      redis.call('PEXPIRE', text_key, keep_ms)
    else
      refused = 1
    end
  end
  for _, name in ipairs({'message_ts', 'part', 'offset', 'phase', 'footer', 'notes', 'usage'}) do
    if cp[name] ~= nil then redis.call('HSET', answer_key, name, tostring(cp[name])) end
  end
  return refused
end
"""

# KEYS: event claim, epoch. ARGV: token, ttl_ms, now.
# Returns {1 if first (or this same claim retried), seconds since the store's data began}.
CLAIM_EVENT = (
    COMMON
    + """
local event_key, epoch_key = KEYS[1], KEYS[2]
local token, ttl_ms, now = ARGV[1], ARGV[2], now_from(ARGV[3])
local began = redis.call('GET', epoch_key)
if not began then
  began = num(now)
  redis.call('SET', epoch_key, began)
end
local first = 0
if redis.call('SET', event_key, token, 'NX', 'PX', ttl_ms) then
  first = 1
elseif redis.call('GET', event_key) == token then
  first = 1
end
return {first, num(now - tonumber(began))}
"""
)

# KEYS: answer hash, text, inflight zset.
# ARGV: record fields (JSON), text, lease_seconds, take_back ('1'/'0'), now, key prefix,
# dedupe ttl_ms, thread order of the question ('' for none), text keep ms.
# Returns {1} when registered, else {0, the record there (HGETALL), its text}.
REGISTER = (
    COMMON
    + INDEX
    + """
local answer_key, text_key, inflight = KEYS[1], KEYS[2], KEYS[3]
local f = cjson.decode(ARGV[1])
local text, lease_seconds, take_back = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local now, prefix, dedupe_ms, thread_order = now_from(ARGV[5]), ARGV[6], ARGV[7], ARGV[8]
local keep_ms = ARGV[9]
local state = redis.call('HMGET', answer_key, 'token', 'phase')
local holder, phase = state[1], state[2]
if holder and (phase == 'finished' or (holder ~= f.token and not take_back)) then
  return {0, redis.call('HGETALL', answer_key), redis.call('GET', text_key) or ''}
end
if holder then
  unindex(prefix, answer_key, f.answer_id)
  redis.call('DEL', answer_key, text_key)
end
f.lease_until = num(now + lease_seconds)
if f.started_at == '' or tonumber(f.started_at) == 0 then f.started_at = num(now) end
local pairs_list = {}
for name, value in pairs(f) do
  pairs_list[#pairs_list + 1] = name
  pairs_list[#pairs_list + 1] = value
end
redis.call('HSET', answer_key, unpack(pairs_list))
if text ~= '' then redis.call('SET', text_key, text, 'PX', keep_ms) end
redis.call('ZADD', inflight, f.lease_until, f.answer_id)
index(prefix, f, thread_order)
for _, key in ipairs(cjson.decode(f.dedupe_keys)) do
  redis.call('SET', prefix .. 'event:' .. key, f.token, 'PX', dedupe_ms)
end
return {1}
"""
)

# KEYS: answer hash, text, inflight zset, cancel flag.
# ARGV: token, lease_seconds, checkpoint (JSON or ''), now, text keep ms.
# Returns {'held', who pressed Stop or '', text refused 0/1}, {'lost', record, text},
# or {'missing'}.
RENEW = (
    COMMON
    + CHECKPOINT
    + """
local answer_key, text_key, inflight, cancel_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token, lease_seconds, checkpoint = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now, keep_ms = now_from(ARGV[4]), ARGV[5]
local state = redis.call('HMGET', answer_key, 'token', 'phase', 'answer_id')
local holder, phase, id = state[1], state[2], state[3]
if not holder then return {'missing'} end
if holder ~= token or phase == 'finished' then
  return {'lost', redis.call('HGETALL', answer_key), redis.call('GET', text_key) or ''}
end
local lease_until = num(now + lease_seconds)
redis.call('HSET', answer_key, 'lease_until', lease_until)
redis.call('ZADD', inflight, lease_until, id)
local refused = apply_checkpoint(answer_key, text_key, checkpoint, keep_ms)
return {'held', redis.call('GET', cancel_key) or '', refused}
"""
)

# KEYS: answer hash, text, inflight zset, cancel flag.
# ARGV: token, outcome, tombstone ttl ms, key prefix.
# Returns 'held' (finished now, or already by this token), 'lost' or 'missing'.
FINISH = (
    INDEX
    + """
local answer_key, text_key, inflight, cancel_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token, outcome, tombstone_ms, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local state = redis.call('HMGET', answer_key, 'token', 'phase', 'answer_id')
local holder, phase, id = state[1], state[2], state[3]
if not holder then return 'missing' end
if holder ~= token then return 'lost' end
if phase ~= 'finished' then
  unindex(prefix, answer_key, id)
  redis.call('ZREM', inflight, id)
  redis.call('DEL', text_key, cancel_key)
  redis.call('HSET', answer_key, 'phase', 'finished', 'outcome', outcome)
end
redis.call('PEXPIRE', answer_key, tombstone_ms)
return 'held'
"""
)

# KEYS: inflight zset.
# ARGV: answer key prefix, text key prefix, new owner, its incarnation, token prefix,
# lease_seconds, previous owner ('' for none), limit, now.
# Returns the claimed answers as {HGETALL, text} pairs: those whose lease ran out or, with a
# previous owner, only that replica id's answers from another incarnation (its earlier life).
# The scan and the rewrite are one script, so two janitors never claim the same answer.
CLAIM_LAPSED = (
    COMMON
    + """
local inflight = KEYS[1]
local answer_prefix, text_prefix, new_owner, incarnation = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local token_prefix, lease_seconds, previous = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local limit, now = tonumber(ARGV[8]), now_from(ARGV[9])
local candidates
if previous == '' then
  candidates = redis.call('ZRANGEBYSCORE', inflight, '-inf', '(' .. num(now), 'LIMIT', 0, limit)
else
  candidates = redis.call('ZRANGE', inflight, 0, -1)
end
local lease_until = num(now + lease_seconds)
local claimed = {}
for _, id in ipairs(candidates) do
  if #claimed >= limit then break end
  local key = answer_prefix .. id
  local state = redis.call('HMGET', key, 'owner', 'incarnation', 'phase')
  local owner, owner_incarnation, phase = state[1], state[2], state[3]
  if not owner or phase == 'finished' then
    redis.call('ZREM', inflight, id) -- nothing left to finish: forget the id
  else
    local wanted
    if previous == '' then
      wanted = tonumber(redis.call('ZSCORE', inflight, id)) < now
    else
      wanted = owner == previous and owner_incarnation ~= incarnation
    end
    if wanted then
      redis.call('HSET', key, 'owner', new_owner, 'incarnation', incarnation,
        'token', token_prefix .. id, 'lease_until', lease_until)
      redis.call('ZADD', inflight, lease_until, id)
      claimed[#claimed + 1] = {redis.call('HGETALL', key),
        redis.call('GET', text_prefix .. id) or ''}
    end
  end
end
return claimed
"""
)

# Needs `answer_prefix`: how many answers of an in-flight set are unfinished, dropping ids whose
# record is gone or finished (COUNT and ADMISSION_VIEW share it, so the caps count alike).
LIVE = """
local function live(set)
  local n = 0
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    local phase = redis.call('HGET', answer_prefix .. id, 'phase')
    if phase and phase ~= 'finished' then
      n = n + 1
    else
      redis.call('SREM', set, id)
    end
  end
  return n
end
"""

# KEYS: user set, team set. ARGV: answer key prefix. Counts unfinished answers; an id whose
# record is gone or finished without its index being cleaned is dropped, so counts stay exact.
COUNT = (
    """
local user_set, team_set, answer_prefix = KEYS[1], KEYS[2], ARGV[1]
"""
    + LIVE
    + """
return {live(user_set), live(team_set)}
"""
)

# KEYS: thread zset. ARGV: answer key prefix, thread order of the question. Strictly earlier
# questions only, so the asking answer never counts itself.
EARLIER = """
local thread_set, answer_prefix, order = KEYS[1], ARGV[1], ARGV[2]
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', thread_set, '-inf', '(' .. order)) do
  local phase = redis.call('HGET', answer_prefix .. id, 'phase')
  if phase and phase ~= 'finished' then
    n = n + 1
  else
    redis.call('ZREM', thread_set, id)
  end
end
return n
"""

# KEYS: bucket hash, competitors zset, answer hash, text, waiting line zset (by when each
# waiter began asking), the line's lapse zset (by when each place lapses).
# ARGV: per_minute, burst, reserve, idle grace seconds, answer_id ('' for none), competing
# window seconds, lease token ('' for none), checkpoint (JSON or ''), now, text keep ms,
# waiter ('' for an edit that does not wait), seconds it has waited, line grace seconds.
# Returns {wait, competing, lease state ('' without a token), text refused 0/1}.
# The bucket is pacing.TokenBucket line for line (tests drive both through one sequence).
TAKE_EDIT_TOKEN = (
    COMMON
    + CHECKPOINT
    + """
local bucket_key, competing_key, answer_key, text_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local line_key, lapse_key = KEYS[5], KEYS[6]
local per_minute, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local reserve, grace = tonumber(ARGV[3]), tonumber(ARGV[4])
local answer_id, window, token = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local checkpoint, now, keep_ms = ARGV[8], now_from(ARGV[9]), ARGV[10]
local waiter, waited, line_grace = ARGV[11], tonumber(ARGV[12]), tonumber(ARGV[13])
local state = redis.call('HMGET', bucket_key, 'tokens', 'last', 'pause_until')
local tokens = state[1] and tonumber(state[1]) or burst
local last = state[2] and tonumber(state[2]) or now
local pause_until = state[3] and tonumber(state[3]) or 0
tokens = math.min(burst, tokens + math.max(0, now - last) * per_minute / 60)
last = math.max(last, now)
for _, name in ipairs(redis.call('ZRANGEBYSCORE', lapse_key, '-inf', '(' .. num(now))) do
  redis.call('ZREM', line_key, name)
  redis.call('ZREM', lapse_key, name)
end
local ahead = 0
if waiter ~= '' then
  redis.call('ZADD', line_key, num(now - waited), waiter)
  ahead = redis.call('ZRANK', line_key, waiter)
end
local wait = 0
if pause_until <= now and tokens - 1 >= reserve + ahead then
  tokens = tokens - 1
  if waiter ~= '' then
    redis.call('ZREM', line_key, waiter)
    redis.call('ZREM', lapse_key, waiter)
  end
else
  wait = math.max((ahead + reserve + 1 - tokens) * 60 / per_minute, pause_until - now)
  if waiter ~= '' then
    redis.call('ZADD', lapse_key, num(now + wait + line_grace), waiter)
    local line_keep_ms = math.ceil((wait + line_grace + grace) * 1000)
    for _, key in ipairs({line_key, lapse_key}) do
      if redis.call('PTTL', key) < line_keep_ms then redis.call('PEXPIRE', key, line_keep_ms) end
    end
  end
end
redis.call('HSET', bucket_key, 'tokens', num(tokens), 'last', num(last))
local idle = burst * 60 / per_minute + math.max(0, pause_until - now) + grace
redis.call('PEXPIRE', bucket_key, math.ceil(idle * 1000))
if answer_id ~= '' then redis.call('ZADD', competing_key, num(now), answer_id) end
redis.call('ZREMRANGEBYSCORE', competing_key, '-inf', '(' .. num(now - window))
local competing = redis.call('ZCARD', competing_key)
if competing > 0 then
  redis.call('PEXPIRE', competing_key, math.ceil((window + grace) * 1000))
end
local lease, refused = '', 0
if token ~= '' then
  local held = redis.call('HMGET', answer_key, 'token', 'phase')
  if not held[1] then
    lease = 'missing'
  elseif held[1] ~= token or held[2] == 'finished' then
    lease = 'lost'
  else
    lease = 'held'
    if wait == 0 then refused = apply_checkpoint(answer_key, text_key, checkpoint, keep_ms) end
  end
end
return {num(wait), competing, lease, refused}
"""
)

# KEYS: bucket hash. ARGV: pause seconds, idle grace seconds, now. Keeps the later pause and
# never shortens the expiry, which TAKE_EDIT_TOKEN set from a refill time this one does not know.
PAUSE = (
    COMMON
    + """
local bucket_key = KEYS[1]
local seconds, grace, now = tonumber(ARGV[1]), tonumber(ARGV[2]), now_from(ARGV[3])
local until_ = now + seconds
local current = redis.call('HGET', bucket_key, 'pause_until')
if not current or until_ > tonumber(current) then
  redis.call('HSET', bucket_key, 'pause_until', num(until_))
end
local ttl_ms = math.ceil((seconds + grace) * 1000)
if redis.call('PTTL', bucket_key) < ttl_ms then redis.call('PEXPIRE', bucket_key, ttl_ms) end
return 1
"""
)

# KEYS: thread cache. ARGV: messages (JSON), ttl ms. The ttl is set when the thread is first
# cached and kept by later writes, so a busy thread is still read whole again in time.
PUT_THREAD = """
local thread_key, messages, ttl_ms = KEYS[1], ARGV[1], ARGV[2]
if redis.call('EXISTS', thread_key) == 1 then
  redis.call('SET', thread_key, messages, 'KEEPTTL')
else
  redis.call('SET', thread_key, messages, 'PX', ttl_ms)
end
return 1
"""


# Every script of the answers' life by the name `RedisBase._run` runs it under (that name also
# labels its errors); the ledger's are in `lua_ledger.SCRIPTS`.
SCRIPTS = {
    "claim_event": CLAIM_EVENT,
    "register": REGISTER,
    "renew": RENEW,
    "finish": FINISH,
    "claim_lapsed": CLAIM_LAPSED,
    "count": COUNT,
    "earlier": EARLIER,
    "take_edit_token": TAKE_EDIT_TOKEN,
    "pause": PAUSE,
    "put_thread": PUT_THREAD,
}

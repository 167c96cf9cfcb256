"""The Lua scripts behind the job store's atomic transitions.

Each script receives every key it touches through KEYS (never builds one), so
`dispatcher.keys` stays the one place that knows key names. A job hash holds, among
others, `status` and `attempt` (the number of the message allowed to run).
"""

from __future__ import annotations

from dispatcher.stats import BUCKET_BOUNDS_MS

__all__ = [
    "ACQUIRE",
    "ADJUST",
    "APPEND",
    "BATCH_ADD",
    "BATCH_CANCEL",
    "BLOCK",
    "CLAIM",
    "FINISH",
    "RELEASE",
    "REQUEUE",
    "RESCHEDULE",
    "TRIP",
]


def _lua_bounds() -> str:
    """The histogram's bucket upper bounds as a Lua table (the last is math.huge)."""
    parts = ["math.huge" if b == float("inf") else repr(float(b)) for b in BUCKET_BOUNDS_MS]
    return "{" + ", ".join(parts) + "}\n"


# Shared by every transition: is `status` one of the comma-separated terminal ones?
_ENDED = """
local function ended(status, terminals)
  for terminal in string.gmatch(terminals, '[^,]+') do
    if status == terminal then return true end
  end
  return false
end
"""

# Shared by APPEND and FINISH. A stream event is JSON whose first member, "seq",
# is added here: the job's `stream_seq` rises by one per event across every
# attempt, so subscribers can drop duplicates and resume after any number.
# Callers pass the rest of the object (without its opening brace) as `body`.
# When a run emits its first event and an earlier run had emitted text, a
# "reset" event comes first: subscribers discard what they have. A run is one
# claim of the job (its `attempts` count, which CLAIM raises): a new attempt,
# or the same attempt run again because its worker died or Redis went away
# mid-stream, whose text starts over from the first word.
_STREAM_PRELUDE = """
local function emit(job, stream, channel, body)
  local seq = redis.call('HINCRBY', job, 'stream_seq', 1)
  local event = '{"seq":' .. seq .. ',' .. body
  redis.call('XADD', stream, '*', 'e', event)
  redis.call('PUBLISH', channel, event)
  return seq
end
local function reset_if_new_run(job, stream, channel, job_id, attempt)
  local run = redis.call('HGET', job, 'attempts') or '0'
  local last = redis.call('HGET', job, 'stream_run')
  if last and last ~= run then
    emit(job, stream, channel,
         '"type":"reset","job_id":"' .. job_id .. '","attempt":' .. attempt .. '}')
  end
  redis.call('HSET', job, 'stream_run', run)
end
"""


# Shared token buckets. Each is a hash {tokens, ts, reserved}: `tokens` refill at
# `rate` per second up to `size`; `reserved` is what callers were charged in advance
# and have not used yet (it is inside `tokens` too). A bucket absent is full.
#
# take(first_key, first_arg, n, now, horizon, paid) takes each bucket's cost from
# KEYS[first_key .. first_key + n - 1], whose (rate, size, cost) triples start at
# ARGV[first_arg]. A bucket must hold min(cost, size): a request larger than a bucket
# waits for a full one and leaves it below zero. Returns the wait in seconds until
# every bucket could pay (0: paid now) and whether the caller holds a charge:
# - a new caller pays now, or in advance when the wait is within `horizon` (the
#   buckets go below zero and `reserved` grows: the caller owns that future moment,
#   and the next caller waits longer), or is not charged at all;
# - a caller charged in advance (`paid`) may go when the buckets, not counting the
#   charges made after its own, hold its need: its charge is then used up. When they
#   do not (calls took more tokens than estimated), it waits again, still charged.
# release(...) gives an unused advance charge back (a job that ended while waiting).
#
# A bucket's `ts` never moves back. Callers pass their own clock, read a moment
# before the script runs; under load, scripts run out of the order their callers
# read the clock (a worker's pipelined claims, many threads), and a `ts` set back
# would refill the same interval twice: measured, 205 claims in one second
# against 160 allowed. A caller whose `now` is behind the bucket's sees it as at
# `ts`, with no refill, which only ever errs on the safe side.
_BUCKETS = """
local function level(key, rate, size, now)
  local state = redis.call('HMGET', key, 'tokens', 'ts', 'reserved')
  local tokens = tonumber(state[1]) or size
  local at = math.max(now, tonumber(state[2]) or now)
  local since = at - (tonumber(state[2]) or at)
  return math.min(size, tokens + since * rate), tonumber(state[3]) or 0, at
end
local function save(key, tokens, reserved, rate, size, at)
  redis.call('HSET', key, 'tokens', string.format('%.6f', tokens),
             'ts', string.format('%.6f', at), 'reserved', string.format('%.6f', reserved))
  redis.call('EXPIRE', key, math.ceil((size - tokens) / rate) + 60)
end
local function take(first_key, first_arg, n, now, horizon, paid)
  local tokens, reserved, at, wait = {}, {}, {}, 0
  for b = 0, n - 1 do
    local a = first_arg + 3 * b
    local rate, size, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    tokens[b], reserved[b], at[b] = level(KEYS[first_key + b], rate, size, now)
    local have = tokens[b]
    if paid then have = have + reserved[b] end
    local need = math.min(cost, size)
    -- A millionth of a token of slack: clock arithmetic must not refuse an exact refill.
    if have + 1e-6 < need then
      wait = math.max(wait, (need - have) / rate + (at[b] - now))
    end
  end
  if wait > 0 and paid then return wait, true end
  if wait > horizon then return wait, false end
  for b = 0, n - 1 do
    local a = first_arg + 3 * b
    local rate, size, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local t, r = tokens[b], reserved[b]
    if paid then r = math.max(0, r - cost)
    elseif wait > 0 then t, r = t - cost, r + cost
    else t = t - cost end
    save(KEYS[first_key + b], t, r, rate, size, at[b])
  end
  return wait, true
end
local function release(first_key, first_arg, n, now)
  for b = 0, n - 1 do
    local a = first_arg + 3 * b
    local rate, size, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local t, r, at = level(KEYS[first_key + b], rate, size, now)
    save(KEYS[first_key + b], math.min(size, t + cost), math.max(0, r - cost), rate, size, at)
  end
end
"""

# What vendor_status reads: a running set per vendor (job id -> when it started)
# and a hash per vendor and minute (requests, tokens). A job's id is the last part
# of its hash's key. Entries a dead worker left behind drop out after a day.
_ACTIVITY = """
local RUNNING_KEEP_S = 86400
local MINUTE_KEEP_S = 180
-- Each new latency moves a vendor's moving average a fifth of the way: about the
-- last ten calls count.
local LATENCY_EWMA_WEIGHT = 0.2
"""

# KEYS: the vendor's blocks (a hash: model -> epoch until which that deployment waits).
# ARGV: the model, until (epoch s), now (epoch s).
# Blocks one deployment (a vendor and model) until the later of `until` and the block
# already standing: a shorter Retry-After never shortens a block, and repeated 429s
# never add up. Ended blocks are dropped, and the hash lives as long as its longest.
# Returns 1 when the block was set or lengthened, 0 when a later one already stood.
BLOCK = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local later = tonumber(ARGV[2])
if current >= later then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local now = tonumber(ARGV[3])
local blocks = redis.call('HGETALL', KEYS[1])
for i = 1, #blocks, 2 do
  local until_s = tonumber(blocks[i + 1]) or 0
  if until_s <= now then
    redis.call('HDEL', KEYS[1], blocks[i])
  elseif until_s > later then
    later = until_s
  end
end
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((later - now) * 1000)))
return 1
"""

# Shared by CLAIM: the model of deployment `index` (0: the primary) of a job's route
# (its JSON), or nil when the route has no such deployment.
_DEPLOYMENT_MODEL = """
local function deployment_model(route, index)
  if not route then return nil end
  local ok, decoded = pcall(cjson.decode, route)
  if not ok or type(decoded) ~= 'table' then return nil end
  local deployment = decoded
  if index > 0 then
    local fallbacks = decoded['fallbacks']
    deployment = type(fallbacks) == 'table' and fallbacks[index] or nil
  end
  local model = type(deployment) == 'table' and deployment['model'] or nil
  if type(model) == 'string' then return model end
  return nil
end
"""

# KEYS: job hash, events list, stats hash, queue-wait histogram, the vendor's blocks
#       (model -> until when), the vendor's circuit, its running set, the job's batch
#       hash (any key when it has none: untouched), the index of jobs waiting for a
#       message, then the token buckets to take from.
# ARGV: message attempt, now (epoch s), started-event JSON, terminal statuses,
#       number of buckets, horizon (s), the circuit's reset timeout in s ("" when
#       breakers are off), how long a probe may take (s), "1" when the job belongs
#       to a batch, "1" when only a job still queued may be claimed (a batch
#       message's first delivery: a copy of it must not run a job another copy
#       runs), the message's deployment (its index in the job's route), then
#       (rate per s, size, cost) per bucket.
# Returns {verdict, job hash as HGETALL gives it, ...}, the hash with every verdict but
# "missing". Verdicts: "missing" (no job), "terminal" (it ended), "stale" (an older
# message), "late" (its deadline passed), "blocked" (the message's deployment, its
# vendor and model, asked everyone to wait; then until when: the route is read only
# while the vendor has a block), "busy" (only a queued job was wanted, and this one is not),
# "open" (the vendor's circuit is open, or half-open with its
# one probe under way; then until when), "limited" (a bucket lacks capacity; then the
# wait in seconds and "1" when the buckets were charged in advance for the job's next
# message, "0" when not), or "ok": the job now runs for this message and the hash is
# as the claim left it; when the circuit was due for a probe, this call is the probe
# (the circuit is half-open until it ends). Only "ok" and a charged "limited" write
# anything, but for giving back an unused advance charge. The first start also
# records the job's queue wait, once, in the statistics, and ends the job's wait for
# a cooling deployment (`waiting`, see RESCHEDULE). One round trip replaces a read,
# the checks of the vendor and a start: this runs once for every job.
CLAIM = (
    _ENDED
    + _BUCKETS
    + _ACTIVITY
    + _DEPLOYMENT_MODEL
    + "local BOUNDS_MS = "
    + _lua_bounds()
    + """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return {'missing'} end
local job = {}
for i = 1, #fields, 2 do job[fields[i]] = fields[i + 1] end
local now = tonumber(ARGV[2])
local buckets = tonumber(ARGV[5])
-- This message was charged in advance for the vendor's limits (an earlier claim).
local paid = buckets > 0 and job['limit_paid'] == ARGV[1]
local function refuse(verdict, extra)
  if paid then
    release(10, 12, buckets, now)
    redis.call('HDEL', KEYS[1], 'limit_paid')
  end
  return {verdict, fields, extra}
end
if ended(job['status'], ARGV[4]) then return refuse('terminal') end
local attempt = tonumber(ARGV[1])
if attempt < tonumber(job['attempt'] or '0') then return {'stale', fields} end
if ARGV[10] == '1' and job['status'] ~= 'queued' then return {'busy', fields} end
if job['deadline_at'] and now >= tonumber(job['deadline_at']) then return refuse('late') end
if redis.call('EXISTS', KEYS[5]) == 1 then
  local model = deployment_model(job['route'], tonumber(ARGV[11]))
  local blocked = model and redis.call('HGET', KEYS[5], model)
  if blocked and tonumber(blocked) > now then return refuse('blocked', blocked) end
end
local probe = false
if ARGV[7] ~= '' then
  local circuit = redis.call('HMGET', KEYS[6], 'state', 'opened_at', 'probe_until')
  if circuit[1] == 'open' or circuit[1] == 'half_open' then
    local reopen = tonumber(circuit[2]) + tonumber(ARGV[7])
    if now < reopen then return refuse('open', string.format('%.6f', reopen)) end
    local busy = tonumber(circuit[3] or '0')
    if now < busy then return refuse('open', string.format('%.6f', busy)) end
    probe = true
  end
end
if buckets > 0 then
  local wait, holds = take(10, 12, buckets, now, tonumber(ARGV[6]), paid)
  if wait > 0 then
    if holds then redis.call('HSET', KEYS[1], 'limit_paid', attempt + 1) end
    return {'limited', fields, string.format('%.6f', wait), holds and '1' or '0'}
  end
  if paid then redis.call('HDEL', KEYS[1], 'limit_paid') end
end
if probe then
  redis.call('HSET', KEYS[6], 'state', 'half_open',
             'probe_until', string.format('%.6f', now + tonumber(ARGV[8])))
end
if ARGV[9] == '1' and redis.call('EXISTS', KEYS[8]) == 1 then
  if job['status'] ~= 'running' then
    redis.call('HINCRBY', KEYS[8], job['status'], -1)
    redis.call('HINCRBY', KEYS[8], 'running', 1)
  end
  redis.call('HSETNX', KEYS[8], 'started_at', ARGV[2])
end
redis.call('HSET', KEYS[1], 'status', 'running', 'attempt', attempt)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if job['waiting'] then redis.call('HDEL', KEYS[1], 'waiting') end
if not job['started_at'] then
  local wait_ms = math.max(0, (now - tonumber(job['created_at'])) * 1000)
  redis.call('HSET', KEYS[1], 'started_at', ARGV[2],
             'queue_wait_ms', string.format('%.3f', wait_ms))
  redis.call('HINCRBYFLOAT', KEYS[3], 't:queue_wait_ms_sum', wait_ms)
  redis.call('HINCRBY', KEYS[3], 't:queue_wait_count', 1)
  local bucket = #BOUNDS_MS - 1
  for i, bound in ipairs(BOUNDS_MS) do
    if wait_ms <= bound then bucket = i - 1; break end
  end
  redis.call('HINCRBY', KEYS[4], tostring(bucket), 1)
end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[7], now, string.match(KEYS[1], '[^:]+$'))
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - RUNNING_KEEP_S)
redis.call('ZREM', KEYS[9], string.match(KEYS[1], '[^:]+$'))
return {'ok', redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: the vendor's circuit.
# ARGV: now (epoch s), failures in a row that open it, seconds to keep it after its
#       last change.
# Records a failed call (5xx, 529, timeout, broken stream): the circuit opens when the
# failures in a row reach the threshold, or at once when the failed call was the
# half-open probe. Returns the state it is left in.
TRIP = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'open' then return 'open' end
local opens = state == 'half_open'
if not opens then
  opens = redis.call('HINCRBY', KEYS[1], 'failures', 1) >= tonumber(ARGV[2])
end
if opens then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[1], 'failures', 0)
  redis.call('HDEL', KEYS[1], 'probe_until')
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return opens and 'open' or 'closed'
"""

# KEYS: token buckets.
# ARGV: now (epoch s), horizon (s), "1" when the caller was charged in advance,
#       then (rate per s, size, cost) per bucket.
# Returns {wait in seconds, "1" when the caller holds a charge (paid now, or in advance)}.
ACQUIRE = (
    _BUCKETS
    + """
local wait, holds = take(1, 4, #KEYS, tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1')
return {string.format('%.6f', wait), holds and '1' or '0'}
"""
)

# KEYS: token buckets.
# ARGV: now (epoch s), then (rate per s, size, cost) per bucket.
# Gives back an advance charge that will not be used. Returns the number of buckets.
RELEASE = (
    _BUCKETS
    + """
release(1, 2, #KEYS, tonumber(ARGV[1]))
return #KEYS
"""
)

# KEYS: token buckets.
# ARGV: now (epoch s), then (rate per s, size, tokens to take) per bucket; a negative
#       amount gives tokens back (never above the size).
# Settles a reservation with what was really used. Returns the number of buckets.
ADJUST = (
    _BUCKETS
    + """
local now = tonumber(ARGV[1])
for b = 1, #KEYS do
  local a = 2 + 3 * (b - 1)
  local rate, size, amount = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local tokens, reserved, at = level(KEYS[b], rate, size, now)
  save(KEYS[b], math.min(size, tokens - amount), reserved, rate, size, at)
end
return #KEYS
"""
)

# KEYS: job hash, events list, stats hash, the running set of the vendor the attempt
#       was for, the job's batch hash (any key when it has none: untouched), the
#       index of jobs waiting for a message.
# ARGV: expected attempt, next attempt, event JSON, terminal statuses, "1" when the
#       job belongs to a batch, when the next message is due (epoch s), the next
#       message's arguments (JSON, kept as `next` so a lost one can be sent again),
#       what the job waits for ("" when the next message is no wait for a cooling
#       deployment: a retry, a fallback, a wait for capacity), then field/amount
#       pairs to add to the stats hash.
# A wait is recorded once: while the job waits for the same thing (`waiting` in its
# hash, until a claim starts it) a further wait (the block outlived the first
# countdown, or was lengthened by another 429) adds no event; its counters still move.
# Returns: "ok"; "terminal"; "stale" when a message newer than the next one already
# runs (nothing recorded: this hand-off is obsolete); or "moved" when the next
# message itself already took over (the event is still recorded: it happened).
RESCHEDULE = (
    _ENDED
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if ended(status, ARGV[4]) then return 'terminal' end
local current = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0')
if current > tonumber(ARGV[2]) then return 'stale' end
redis.call('ZREM', KEYS[4], string.match(KEYS[1], '[^:]+$'))
local waiting = redis.call('HGET', KEYS[1], 'waiting')
if ARGV[8] == '' or waiting ~= ARGV[8] then
  redis.call('RPUSH', KEYS[2], ARGV[3])
end
for i = 9, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[3], ARGV[i], ARGV[i + 1])
end
if current ~= tonumber(ARGV[1]) then return 'moved' end
if status == 'running' and ARGV[5] == '1' and redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('HINCRBY', KEYS[5], 'running', -1)
  redis.call('HINCRBY', KEYS[5], 'queued', 1)
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempt', ARGV[2], 'next', ARGV[7])
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[1], 'waiting', ARGV[8])
elseif waiting then
  redis.call('HDEL', KEYS[1], 'waiting')
end
redis.call('ZADD', KEYS[6], ARGV[6], string.match(KEYS[1], '[^:]+$'))
return 'ok'
"""
)

# KEYS: the job hash, its stream buffer.
# ARGV: message attempt, channel, job id, event body (JSON without its "{"),
#       terminal statuses, the buffer's time to live in seconds.
# Returns the event's seq, or 0 when the job ended or a newer attempt owns it
# (a stale worker must not speak for the job).
APPEND = (
    _ENDED
    + _STREAM_PRELUDE
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if ended(status, ARGV[5]) then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0') ~= tonumber(ARGV[1]) then
  return 0
end
reset_if_new_run(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[1])
local seq = emit(KEYS[1], KEYS[2], ARGV[2], ARGV[4])
if seq == 1 or redis.call('TTL', KEYS[2]) < 0 then
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
end
return seq
"""
)

# KEYS: job hash, events list, done list, stats hash, stream buffer, the vendor's
#       circuit, its running set and its current minute's counters, the job's batch
#       hash, the batch's job list, custom id list, done list and messages' items,
#       then histogram hashes. (With no vendor the three vendor keys, with no batch
#       the five batch keys, are passed but not touched.)
# ARGV: new status, event JSON, ttl seconds, terminal statuses,
#       channel ("" for a job that does not stream), the terminal stream event's
#       body (JSON without its "{"), job id, "1" to close the vendor's circuit
#       (a success: the failures in a row start again from none), "1" when the job
#       ended on a vendor (it leaves the vendor's running set and counts in its
#       minute), the tokens it used, the vendor's latency in ms ("" when there is
#       none) and the stats field of the vendor's moving average latency,
#       "1" when the job belongs to a batch, its prompt tokens, completion tokens,
#       cost and now (epoch s) (the batch's counts, tokens and cost move with the
#       end; when its last item ends the batch is finished, its done list gets its
#       one entry (waiters wake) and it expires with its items), number of hash
#       field/value pairs N, the N pairs,
#       number of stats pairs M, the M field/amount pairs,
#       then one bucket name per histogram key.
# Returns 1 when this call ended the job, 0 when it had already ended: a
# redelivered job that already finished is not written, or counted, twice. A
# streaming job's one terminal event (done or error) is emitted here, atomically
# with the end, after a reset if the successful attempt streamed nothing yet.
FINISH = (
    _ENDED
    + _STREAM_PRELUDE
    + _ACTIVITY
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if ended(status, ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
local ttl = tonumber(ARGV[3])
if ARGV[13] == '1' and redis.call('EXISTS', KEYS[9]) == 1 then
  redis.call('HINCRBY', KEYS[9], status, -1)
  redis.call('HINCRBY', KEYS[9], ARGV[1], 1)
  redis.call('HINCRBY', KEYS[9], 'prompt_tokens', tonumber(ARGV[14]))
  redis.call('HINCRBY', KEYS[9], 'completion_tokens', tonumber(ARGV[15]))
  redis.call('HINCRBYFLOAT', KEYS[9], 'cost_usd', ARGV[16])
  local c = redis.call('HMGET', KEYS[9], 'total', 'succeeded', 'failed', 'cancelled')
  local done = (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0) + (tonumber(c[4]) or 0)
  if done >= (tonumber(c[1]) or 0) then
    redis.call('HSET', KEYS[9], 'finished_at', ARGV[17])
    redis.call('DEL', KEYS[12])
    redis.call('RPUSH', KEYS[12], 'finished')
    for k = 9, 13 do redis.call('EXPIRE', KEYS[k], ttl) end
  end
end
if ARGV[8] == '1' then redis.call('DEL', KEYS[6]) end
if ARGV[9] == '1' then
  redis.call('ZREM', KEYS[7], ARGV[7])
  redis.call('HINCRBY', KEYS[8], 'requests', 1)
  redis.call('HINCRBY', KEYS[8], 'tokens', tonumber(ARGV[10]))
  redis.call('EXPIRE', KEYS[8], MINUTE_KEEP_S)
  if ARGV[11] ~= '' then
    local latency = tonumber(ARGV[11])
    local average = tonumber(redis.call('HGET', KEYS[4], ARGV[12]) or '')
    if average then latency = average + LATENCY_EWMA_WEIGHT * (latency - average) end
    redis.call('HSET', KEYS[4], ARGV[12], string.format('%.3f', latency))
  end
end
local i = 18
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2
end
local m = tonumber(ARGV[i]); i = i + 1
for _ = 1, m do
  redis.call('HINCRBYFLOAT', KEYS[4], ARGV[i], ARGV[i + 1]); i = i + 2
end
for k = 14, #KEYS do
  redis.call('HINCRBY', KEYS[k], ARGV[i], 1); i = i + 1
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3])
redis.call('RPUSH', KEYS[3], ARGV[1])
if ARGV[5] ~= '' then
  if ARGV[1] == 'succeeded' then
    local attempt = redis.call('HGET', KEYS[1], 'attempt') or '0'
    reset_if_new_run(KEYS[1], KEYS[5], ARGV[5], ARGV[7], attempt)
  end
  emit(KEYS[1], KEYS[5], ARGV[5], ARGV[6])
  redis.call('EXPIRE', KEYS[5], ttl)
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
return 1
"""
)

# KEYS: the batch hash, its job list, its custom id list, its done list, then per
#       item the job hash and its events list.
# ARGV: "new" or "retry", now (epoch s), time to live of pending keys (s), batch id,
#       then per item 8 values: job id, custom id, request JSON, route JSON, deadline
#       (epoch s, "" for none), queued-event JSON, and for "retry" the item's index
#       in the batch and the failed job it replaces ("" for "new").
# "new" appends the items to the batch; "retry" puts each new job in the place of a
# failed one, only while that place still holds the failed job (two concurrent
# retries do not both replace it), moving one count from failed to queued and
# reopening the batch. Every item becomes a queued job hash like `JobStore.create`
# writes. Returns the job ids written.
BATCH_ADD = """
local now, ttl, batch_id = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local retry = ARGV[1] == 'retry'
local written = {}
local item = 0
for a = 5, #ARGV, 8 do
  local job, events = KEYS[5 + 2 * item], KEYS[6 + 2 * item]
  item = item + 1
  local job_id = ARGV[a]
  local place = true
  if retry then
    local index = tonumber(ARGV[a + 6])
    place = redis.call('LINDEX', KEYS[2], index) == ARGV[a + 7]
    if place then
      redis.call('LSET', KEYS[2], index, job_id)
      redis.call('HINCRBY', KEYS[1], 'failed', -1)
    end
  else
    redis.call('RPUSH', KEYS[2], job_id)
    redis.call('RPUSH', KEYS[3], ARGV[a + 1])
    redis.call('HINCRBY', KEYS[1], 'total', 1)
  end
  if place then
    redis.call('HINCRBY', KEYS[1], 'queued', 1)
    redis.call('HSET', job, 'request', ARGV[a + 2], 'route', ARGV[a + 3], 'status', 'queued',
               'attempt', '0', 'attempts', '0', 'created_at', now, 'batch_id', batch_id)
    if ARGV[a + 4] ~= '' then redis.call('HSET', job, 'deadline_at', ARGV[a + 4]) end
    redis.call('RPUSH', events, ARGV[a + 5])
    redis.call('EXPIRE', job, ttl)
    redis.call('EXPIRE', events, ttl)
    written[#written + 1] = job_id
  end
end
if retry and #written > 0 then
  redis.call('HDEL', KEYS[1], 'finished_at')
  redis.call('DEL', KEYS[4])
end
for k = 1, 3 do redis.call('EXPIRE', KEYS[k], ttl) end
return written
"""

# KEYS: the batch hash.
# ARGV: now (epoch s).
# Marks the batch cancelled, only while some item has not ended: a batch whose
# items have all ended is left exactly as it ended. A batch cancelled before keeps
# its first `cancelled_at`. Returns "cancelling" (marked, or marked already),
# "ended" (every item had ended; nothing written) or "missing" (no such batch).
BATCH_CANCEL = """
local c = redis.call('HMGET', KEYS[1], 'total', 'succeeded', 'failed', 'cancelled')
if not c[1] then return 'missing' end
local ended = (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0) + (tonumber(c[4]) or 0)
if ended >= tonumber(c[1]) then return 'ended' end
redis.call('HSETNX', KEYS[1], 'cancelled_at', ARGV[1])
return 'cancelling'
"""

# KEYS: job hash, events list, the index of jobs waiting for a message.
# ARGV: the attempt the job is expected to wait for, now (epoch s), event JSON,
#       "1" to hand the job to a new message (attempt + 1), "0" to send the same
#       message again (a batch message's first delivery, which only ever starts
#       items still queued).
# The sweeper's step for a job whose message was lost: only a job still queued for
# that same attempt is requeued (anything else took over meanwhile; a job that is no
# longer queued leaves the index). An advance rate-limit charge for the lost message
# passes to the new one. Returns {"ok", attempt to send}, or {"moved"} / {"missing"}.
REQUEUE = """
local id = string.match(KEYS[1], '[^:]+$')
local job = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'limit_paid')
if not job[1] then
  redis.call('ZREM', KEYS[3], id)
  return {'missing'}
end
if job[1] ~= 'queued' then
  redis.call('ZREM', KEYS[3], id)
  return {'moved'}
end
if tonumber(job[2] or '0') ~= tonumber(ARGV[1]) then return {'moved'} end
local attempt = tonumber(ARGV[1])
if ARGV[4] == '1' then
  attempt = attempt + 1
  redis.call('HSET', KEYS[1], 'attempt', attempt)
  if job[3] == ARGV[1] then redis.call('HSET', KEYS[1], 'limit_paid', attempt) end
end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], id)
return {'ok', attempt}
"""

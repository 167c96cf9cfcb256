"""The Lua scripts behind the job store's atomic transitions.

Each script receives every key it touches through KEYS (never builds one), so
`store.py` stays the one place that knows key names. A job hash holds, among
others, `status` and `attempt` (the number of the message allowed to run).
"""

from __future__ import annotations

from dispatcher.stats import BUCKET_BOUNDS_MS

__all__ = ["APPEND", "BLOCK", "CLAIM", "FINISH", "RESCHEDULE"]


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
# When an attempt emits its first event and an earlier attempt had emitted
# text, a "reset" event comes first: subscribers discard what they have.
_STREAM_PRELUDE = """
local function emit(job, stream, channel, body)
  local seq = redis.call('HINCRBY', job, 'stream_seq', 1)
  local event = '{"seq":' .. seq .. ',' .. body
  redis.call('XADD', stream, '*', 'e', event)
  redis.call('PUBLISH', channel, event)
  return seq
end
local function reset_if_new_attempt(job, stream, channel, job_id, attempt)
  local last = redis.call('HGET', job, 'stream_attempt')
  if last and tonumber(last) ~= tonumber(attempt) then
    emit(job, stream, channel,
         '"type":"reset","job_id":"' .. job_id .. '","attempt":' .. attempt .. '}')
  end
  redis.call('HSET', job, 'stream_attempt', attempt)
end
"""

# KEYS: the vendor's blocked-until key.
# ARGV: until (epoch s), time to live in ms.
# Returns 1 when the block was set or lengthened, 0 when a later one already stood.
BLOCK = """
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: job hash, events list, stats hash, queue-wait histogram, the vendor's blocked key.
# ARGV: message attempt, now (epoch s), started-event JSON, terminal statuses.
# Returns {verdict, job hash as HGETALL gives it, blocked until}, the last two only
# where they apply. Verdicts: "missing" (no job), "terminal" (it ended), "stale" (an
# older message), "late" (its deadline passed), "blocked" (the vendor asked everyone
# to wait; with until when), or "ok": the job now runs for this message and the hash
# is as the claim left it. Only "ok" writes anything. The first start also records
# the job's queue wait, once, in the statistics. One round trip replaces a read, a
# check of the vendor and a start: this runs once for every job.
CLAIM = (
    _ENDED
    + "local BOUNDS_MS = "
    + _lua_bounds()
    + """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return {'missing'} end
local job = {}
for i = 1, #fields, 2 do job[fields[i]] = fields[i + 1] end
if ended(job['status'], ARGV[4]) then return {'terminal', fields} end
local attempt = tonumber(ARGV[1])
if attempt < tonumber(job['attempt'] or '0') then return {'stale', fields} end
local now = tonumber(ARGV[2])
if job['deadline_at'] and now >= tonumber(job['deadline_at']) then
  return {'late', fields}
end
local blocked = redis.call('GET', KEYS[5])
if blocked and tonumber(blocked) > now then return {'blocked', fields, blocked} end
redis.call('HSET', KEYS[1], 'status', 'running', 'attempt', attempt)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
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
return {'ok', redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: job hash, events list, stats hash.
# ARGV: expected attempt, next attempt, event JSON, terminal statuses,
#       then field/amount pairs to add to the stats hash.
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
redis.call('RPUSH', KEYS[2], ARGV[3])
for i = 5, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[3], ARGV[i], ARGV[i + 1])
end
if current ~= tonumber(ARGV[1]) then return 'moved' end
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempt', ARGV[2])
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
reset_if_new_attempt(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[1])
local seq = emit(KEYS[1], KEYS[2], ARGV[2], ARGV[4])
if seq == 1 or redis.call('TTL', KEYS[2]) < 0 then
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
end
return seq
"""
)

# KEYS: job hash, events list, done list, stats hash, stream buffer, then histogram hashes.
# ARGV: new status, event JSON, ttl seconds, terminal statuses,
#       channel ("" for a job that does not stream), the terminal stream event's
#       body (JSON without its "{"), job id,
#       number of hash field/value pairs N, the N pairs,
#       number of stats pairs M, the M field/amount pairs,
#       then one bucket name per histogram key.
# Returns 1 when this call ended the job, 0 when it had already ended: a
# redelivered job that already finished is not written, or counted, twice. A
# streaming job's one terminal event (done or error) is emitted here, atomically
# with the end, after a reset if the successful attempt streamed nothing yet.
FINISH = (
    _ENDED
    + _STREAM_PRELUDE
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if ended(status, ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
local i = 8
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2
end
local m = tonumber(ARGV[i]); i = i + 1
for _ = 1, m do
  redis.call('HINCRBYFLOAT', KEYS[4], ARGV[i], ARGV[i + 1]); i = i + 2
end
for k = 6, #KEYS do
  redis.call('HINCRBY', KEYS[k], ARGV[i], 1); i = i + 1
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3])
redis.call('RPUSH', KEYS[3], ARGV[1])
local ttl = tonumber(ARGV[3])
if ARGV[5] ~= '' then
  if ARGV[1] == 'succeeded' then
    local attempt = redis.call('HGET', KEYS[1], 'attempt') or '0'
    reset_if_new_attempt(KEYS[1], KEYS[5], ARGV[5], ARGV[7], attempt)
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

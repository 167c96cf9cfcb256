"""The Lua scripts behind the job store's atomic transitions.

Each script receives every key it touches through KEYS (never builds one), so
`store.py` stays the one place that knows key names. A job hash holds, among
others, `status` and `attempt` (the number of the message allowed to run).
"""

from __future__ import annotations

__all__ = ["BLOCK", "FINISH", "RESCHEDULE", "START"]

# KEYS: the vendor's blocked-until key.
# ARGV: until (epoch s), time to live in ms.
# Returns 1 when the block was set or lengthened, 0 when a later one already stood.
BLOCK = """
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: job hash, events list, stats hash, queue-wait histogram.
# ARGV: message attempt, now (epoch s), event JSON, terminal statuses (comma-separated),
#       then the histogram's bucket upper bounds in ms ("inf" last).
# Returns: "ok" (now running), "missing", "terminal" or "stale" (an older message).
# The first start also records the job's queue wait, once, in the statistics.
START = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
for terminal in string.gmatch(ARGV[4], '[^,]+') do
  if status == terminal then return 'terminal' end
end
local current = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0')
local attempt = tonumber(ARGV[1])
if attempt < current then return 'stale' end
redis.call('HSET', KEYS[1], 'status', 'running', 'attempt', attempt)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if not redis.call('HGET', KEYS[1], 'started_at') then
  local created = tonumber(redis.call('HGET', KEYS[1], 'created_at'))
  local wait_ms = math.max(0, (tonumber(ARGV[2]) - created) * 1000)
  redis.call('HSET', KEYS[1], 'started_at', ARGV[2],
             'queue_wait_ms', string.format('%.3f', wait_ms))
  redis.call('HINCRBYFLOAT', KEYS[3], 't:queue_wait_ms_sum', wait_ms)
  redis.call('HINCRBY', KEYS[3], 't:queue_wait_count', 1)
  local bucket = #ARGV - 4
  for i = 5, #ARGV do
    if ARGV[i] == 'inf' or wait_ms <= tonumber(ARGV[i]) then bucket = i - 5; break end
  end
  redis.call('HINCRBY', KEYS[4], tostring(bucket), 1)
end
redis.call('RPUSH', KEYS[2], ARGV[3])
return 'ok'
"""

# KEYS: job hash, events list, stats hash.
# ARGV: expected attempt, next attempt, event JSON, terminal statuses,
#       then field/amount pairs to add to the stats hash.
# Returns: "ok"; "terminal"; "stale" when a message newer than the next one already
# runs (nothing recorded: this hand-off is obsolete); or "moved" when the next
# message itself already took over (the event is still recorded: it happened).
RESCHEDULE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
for terminal in string.gmatch(ARGV[4], '[^,]+') do
  if status == terminal then return 'terminal' end
end
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

# KEYS: job hash, events list, done list, stats hash, then histogram hashes.
# ARGV: new status, event JSON, ttl seconds, terminal statuses,
#       number of hash field/value pairs N, the N pairs,
#       number of stats pairs M, the M field/amount pairs,
#       then one bucket name per histogram key.
# Returns 1 when this call ended the job, 0 when it had already ended: a
# redelivered job that already finished is not written, or counted, twice.
FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
for terminal in string.gmatch(ARGV[4], '[^,]+') do
  if status == terminal then return 0 end
end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
local i = 5
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2
end
local m = tonumber(ARGV[i]); i = i + 1
for _ = 1, m do
  redis.call('HINCRBYFLOAT', KEYS[4], ARGV[i], ARGV[i + 1]); i = i + 2
end
for k = 5, #KEYS do
  redis.call('HINCRBY', KEYS[k], ARGV[i], 1); i = i + 1
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3])
redis.call('RPUSH', KEYS[3], ARGV[1])
local ttl = tonumber(ARGV[3])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
return 1
"""

-- KEYS: job hash, events list, stats hash, the running set of the vendor the attempt
--       was for, the job's batch hash (any key when it has none: untouched), the
--       index of jobs waiting for a message.
-- ARGV: expected attempt, next attempt, event JSON, terminal statuses, "1" when the
--       job belongs to a batch, when the next message is due (epoch s), the next
--       message's arguments (JSON, kept as `next` so a lost one can be sent again),
--       what the job waits for ("" when the next message is no wait for a cooling
--       deployment: a retry, a fallback, a wait for capacity), then field/amount
--       pairs to add to the stats hash.
-- A wait is recorded once: while the job waits for the same thing (`waiting` in its
-- hash, until a claim starts it) a further wait (the block outlived the first
-- countdown, or was lengthened by another 429) adds no event; its counters still move.
-- Returns: "ok"; "terminal"; "stale" when a message newer than the next one already
-- runs (nothing recorded: this hand-off is obsolete); or "moved" when the next
-- message itself already took over (the event is still recorded: it happened).
-- Uses: ended.
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

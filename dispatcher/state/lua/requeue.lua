-- KEYS: job hash, events list, the index of jobs waiting for a message.
-- ARGV: the attempt the job is expected to wait for, now (epoch s), event JSON,
--       "1" to hand the job to a new message (attempt + 1), "0" to send the same
--       message again (a batch message's first delivery, which only ever starts
--       items still queued).
-- The sweeper's step for a job whose message was lost: only a job still queued for
-- that same attempt is requeued (anything else took over meanwhile; a job that is no
-- longer queued leaves the index). An advance rate-limit charge for the lost message
-- passes to the new one. Returns {"ok", attempt to send}, or {"moved"} / {"missing"}.
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

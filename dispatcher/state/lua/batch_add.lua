-- KEYS: the batch hash, its job list, its custom id list, its done list, then per
--       item the job hash and its events list.
-- ARGV: "new" or "retry", now (epoch s), time to live of pending keys (s), batch id,
--       then per item 8 values: job id, custom id, request JSON, route JSON, deadline
--       (epoch s, "" for none), queued-event JSON, and for "retry" the item's index
--       in the batch and the failed job it replaces ("" for "new").
-- "new" appends the items to the batch; "retry" puts each new job in the place of a
-- failed one, only while that place still holds the failed job (two concurrent
-- retries do not both replace it), moving one count from failed to queued and
-- reopening the batch. Every item becomes a queued job hash like `JobStore.create`
-- writes. Returns the job ids written.
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

-- KEYS: job hash, events list, done list, stats hash, stream buffer, the vendor's
--       circuit, its running set and its current minute's counters, the job's batch
--       hash, the batch's job list, custom id list, done list and messages' items,
--       then histogram hashes. (With no vendor the three vendor keys, with no batch
--       the five batch keys, are passed but not touched.)
-- ARGV: new status, event JSON, ttl seconds, terminal statuses,
--       channel ("" for a job that does not stream), the terminal stream event's
--       body (JSON without its "{"), job id, "1" to close the vendor's circuit
--       (a success: the failures in a row start again from none), "1" when the job
--       ended on a vendor (it leaves the vendor's running set and counts in its
--       minute), the tokens it used, the vendor's latency in ms ("" when there is
--       none) and the stats field of the vendor's moving average latency,
--       "1" when the job belongs to a batch, its prompt tokens, completion tokens,
--       cost and now (epoch s) (the batch's counts, tokens and cost move with the
--       end; when its last item ends the batch is finished, its done list gets its
--       one entry (waiters wake) and it expires with its items), number of hash
--       field/value pairs N, the N pairs,
--       number of stats pairs M, the M field/amount pairs,
--       then one bucket name per histogram key.
-- Returns 1 when this call ended the job, 0 when it had already ended: a
-- redelivered job that already finished is not written, or counted, twice. A
-- streaming job's one terminal event (done or error) is emitted here, atomically
-- with the end, after a reset if the successful attempt streamed nothing yet.
-- Uses: ended, stream_prelude, activity.
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

-- KEYS: job hash, events list, stats hash, queue-wait histogram, the vendor's blocks
--       (model -> until when), the vendor's circuit, its running set, the job's batch
--       hash (any key when it has none: untouched), the index of jobs waiting for a
--       message, then the token buckets to take from.
-- ARGV: message attempt, now (epoch s), started-event JSON, terminal statuses,
--       number of buckets, horizon (s), the circuit's reset timeout in s ("" when
--       breakers are off), how long a probe may take (s), "1" when the job belongs
--       to a batch, "1" when only a job still queued may be claimed (a batch
--       message's first delivery: a copy of it must not run a job another copy
--       runs), the message's deployment (its index in the job's route), then
--       (rate per s, size, cost) per bucket.
-- Returns {verdict, job hash as HGETALL gives it, ...}, the hash with every verdict but
-- "missing". Verdicts: "missing" (no job), "terminal" (it ended), "stale" (an older
-- message), "late" (its deadline passed), "blocked" (the message's deployment, its
-- vendor and model, asked everyone to wait; then until when: the route is read only
-- while the vendor has a block), "busy" (only a queued job was wanted, and this one is not),
-- "open" (the vendor's circuit is open, or half-open with its
-- one probe under way; then until when), "limited" (a bucket lacks capacity; then the
-- wait in seconds and "1" when the buckets were charged in advance for the job's next
-- message, "0" when not), or "ok": the job now runs for this message and the hash is
-- as the claim left it; when the circuit was due for a probe, this call is the probe
-- (the circuit is half-open until it ends). Only "ok" and a charged "limited" write
-- anything, but for giving back an unused advance charge. The first start also
-- records the job's queue wait, once, in the statistics, and ends the job's wait for
-- a cooling deployment (`waiting`, see RESCHEDULE). One round trip replaces a read,
-- the checks of the vendor and a start: this runs once for every job.
-- Uses: ended, buckets, activity, deployment_model, bounds.
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

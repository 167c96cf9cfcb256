-- Shared token buckets. Each is a hash {tokens, ts, reserved}: `tokens` refill at
-- `rate` per second up to `size`; `reserved` is what callers were charged in advance
-- and have not used yet (it is inside `tokens` too). A bucket absent is full.
--
-- take(first_key, first_arg, n, now, horizon, paid) takes each bucket's cost from
-- KEYS[first_key .. first_key + n - 1], whose (rate, size, cost) triples start at
-- ARGV[first_arg]. A bucket must hold min(cost, size): a request larger than a bucket
-- waits for a full one and leaves it below zero. Returns the wait in seconds until
-- every bucket could pay (0: paid now) and whether the caller holds a charge:
-- - a new caller pays now, or in advance when the wait is within `horizon` (the
--   buckets go below zero and `reserved` grows: the caller owns that future moment,
--   and the next caller waits longer), or is not charged at all;
-- - a caller charged in advance (`paid`) may go when the buckets, not counting the
--   charges made after its own, hold its need: its charge is then used up. When they
--   do not (calls took more tokens than estimated), it waits again, still charged.
-- release(...) gives an unused advance charge back (a job that ended while waiting).
--
-- A bucket's `ts` never moves back. Callers pass their own clock, read a moment
-- before the script runs; under load, scripts run out of the order their callers
-- read the clock (a worker's pipelined claims, many threads), and a `ts` set back
-- would refill the same interval twice: measured, 205 claims in one second
-- against 160 allowed. A caller whose `now` is behind the bucket's sees it as at
-- `ts`, with no refill, which only ever errs on the safe side.
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

-- KEYS: the vendor's circuit.
-- ARGV: now (epoch s), failures in a row that open it, seconds to keep it after its
--       last change.
-- Records a failed call (5xx, 529, timeout, broken stream): the circuit opens when the
-- failures in a row reach the threshold, or at once when the failed call was the
-- half-open probe. Returns the state it is left in.
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

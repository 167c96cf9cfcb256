-- KEYS: the batch hash.
-- ARGV: now (epoch s).
-- Marks the batch cancelled, only while some item has not ended: a batch whose
-- items have all ended is left exactly as it ended. A batch cancelled before keeps
-- its first `cancelled_at`. Returns "cancelling" (marked, or marked already),
-- "ended" (every item had ended; nothing written) or "missing" (no such batch).
local c = redis.call('HMGET', KEYS[1], 'total', 'succeeded', 'failed', 'cancelled')
if not c[1] then return 'missing' end
local ended = (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0) + (tonumber(c[4]) or 0)
if ended >= tonumber(c[1]) then return 'ended' end
redis.call('HSETNX', KEYS[1], 'cancelled_at', ARGV[1])
return 'cancelling'

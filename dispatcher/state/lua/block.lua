-- KEYS: the vendor's blocks (a hash: model -> epoch until which that deployment waits).
-- ARGV: the model, until (epoch s), now (epoch s).
-- Blocks one deployment (a vendor and model) until the later of `until` and the block
-- already standing: a shorter Retry-After never shortens a block, and repeated 429s
-- never add up. Ended blocks are dropped, and the hash lives as long as its longest.
-- Returns 1 when the block was set or lengthened, 0 when a later one already stood.
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local later = tonumber(ARGV[2])
if current >= later then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local now = tonumber(ARGV[3])
local blocks = redis.call('HGETALL', KEYS[1])
for i = 1, #blocks, 2 do
  local until_s = tonumber(blocks[i + 1]) or 0
  if until_s <= now then
    redis.call('HDEL', KEYS[1], blocks[i])
  elseif until_s > later then
    later = until_s
  end
end
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((later - now) * 1000)))
return 1

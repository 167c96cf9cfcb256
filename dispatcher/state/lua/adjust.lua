-- KEYS: token buckets.
-- ARGV: now (epoch s), then (rate per s, size, tokens to take) per bucket; a negative
--       amount gives tokens back (never above the size).
-- Settles a reservation with what was really used. Returns the number of buckets.
-- Uses: buckets.
local now = tonumber(ARGV[1])
for b = 1, #KEYS do
  local a = 2 + 3 * (b - 1)
  local rate, size, amount = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local tokens, reserved, at = level(KEYS[b], rate, size, now)
  save(KEYS[b], math.min(size, tokens - amount), reserved, rate, size, at)
end
return #KEYS

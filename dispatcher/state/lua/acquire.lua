-- KEYS: token buckets.
-- ARGV: now (epoch s), horizon (s), "1" when the caller was charged in advance,
--       then (rate per s, size, cost) per bucket.
-- Returns {wait in seconds, "1" when the caller holds a charge (paid now, or in advance)}.
-- Uses: buckets.
local wait, holds = take(1, 4, #KEYS, tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1')
return {string.format('%.6f', wait), holds and '1' or '0'}

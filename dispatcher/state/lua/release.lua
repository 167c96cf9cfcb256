-- KEYS: token buckets.
-- ARGV: now (epoch s), then (rate per s, size, cost) per bucket.
-- Gives back an advance charge that will not be used. Returns the number of buckets.
-- Uses: buckets.
release(1, 2, #KEYS, tonumber(ARGV[1]))
return #KEYS

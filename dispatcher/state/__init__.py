"""State: the only code that talks to Redis (keys, jobs, streams, batches, circuits,
limits, traffic, stats, health records) and its Lua scripts."""

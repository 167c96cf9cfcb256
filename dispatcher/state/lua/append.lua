-- KEYS: the job hash, its stream buffer.
-- ARGV: message attempt, channel, job id, event body (JSON without its "{"),
--       terminal statuses, the buffer's time to live in seconds.
-- Returns the event's seq, or 0 when the job ended or a newer attempt owns it
-- (a stale worker must not speak for the job).
-- Uses: ended, stream_prelude.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if ended(status, ARGV[5]) then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0') ~= tonumber(ARGV[1]) then
  return 0
end
reset_if_new_run(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[1])
local seq = emit(KEYS[1], KEYS[2], ARGV[2], ARGV[4])
if seq == 1 or redis.call('TTL', KEYS[2]) < 0 then
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
end
return seq

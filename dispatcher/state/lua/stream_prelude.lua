-- Shared by APPEND and FINISH. A stream event is JSON whose first member, "seq",
-- is added here: the job's `stream_seq` rises by one per event across every
-- attempt, so subscribers can drop duplicates and resume after any number.
-- Callers pass the rest of the object (without its opening brace) as `body`.
-- When a run emits its first event and an earlier run had emitted text, a
-- "reset" event comes first: subscribers discard what they have. A run is one
-- claim of the job (its `attempts` count, which CLAIM raises): a new attempt,
-- or the same attempt run again because its worker died or Redis went away
-- mid-stream, whose text starts over from the first word.
local function emit(job, stream, channel, body)
  local seq = redis.call('HINCRBY', job, 'stream_seq', 1)
  local event = '{"seq":' .. seq .. ',' .. body
  redis.call('XADD', stream, '*', 'e', event)
  redis.call('PUBLISH', channel, event)
  return seq
end
local function reset_if_new_run(job, stream, channel, job_id, attempt)
  local run = redis.call('HGET', job, 'attempts') or '0'
  local last = redis.call('HGET', job, 'stream_run')
  if last and last ~= run then
    emit(job, stream, channel,
         '"type":"reset","job_id":"' .. job_id .. '","attempt":' .. attempt .. '}')
  end
  redis.call('HSET', job, 'stream_run', run)
end

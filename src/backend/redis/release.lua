-- Frees the lease only if it still holds exactly the value this term wrote
-- (compare-and-DEL), then wakes the waiting candidates through pub/sub.
--
-- KEYS[1] lock key     KEYS[2] last released token
-- ARGV[1] our lock value                   ARGV[2] pub/sub channel
-- ARGV[3] notice to publish, or '' to free the key silently (quorum mode
--         undoing a partial grant, which was never a term)
-- ARGV[4] our fencing token
--
-- The released token tells followers that the lease ended on purpose, not
-- because the store lost it (see acquire.lua).
--
-- Returns 1 when released, 0 when the lease was not ours.
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[3] ~= '' then
    redis.call('SET', KEYS[2], ARGV[4])
    redis.call('PUBLISH', ARGV[2], ARGV[3])
  end
  return 1
end
return 0

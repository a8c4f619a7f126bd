-- Frees the lease only if it still holds exactly the value this term wrote
-- (compare-and-DEL), then wakes the waiting candidates through pub/sub.
--
-- KEYS[1] lock key     KEYS[2] last released token
-- ARGV[1] our lock value                   ARGV[2] pub/sub channel
-- ARGV[3] notice to publish, or '' to free the key silently (quorum mode
--         undoing a partial grant, which was never a term)
-- ARGV[4] our fencing token
-- ARGV[5] another value that is also ours, or '' (quorum mode: the sealed
--         form of a grant, when it is unknown whether the seal was applied)
--
-- The released token tells followers that the lease ended on purpose, not
-- because the store lost it (see acquire.lua); it is recorded even where the
-- key is already gone (a server that restarted empty), so that a renewal
-- delayed in the network cannot recreate a released term there (renew.lua).
-- A released key leaderd did not write is left alone.
--
-- Returns {1}              released
--         {0}              the lease was not ours
--         {2, description} released, but the released-token key holds
--                          something leaderd did not write (left alone)
local current = redis.pcall('GET', KEYS[1])
local ours = current == ARGV[1] or (ARGV[5] ~= '' and current == ARGV[5])
if ours then
  redis.call('DEL', KEYS[1])
end
if ARGV[3] == '' then
  return {ours and 1 or 0}
end
local released = redis.pcall('GET', KEYS[2])
if type(released) == 'table' or (released ~= false and tonumber(released) == nil) then
  if ours then
    redis.call('PUBLISH', ARGV[2], ARGV[3])
  end
  return {ours and 2 or 0, KEYS[2] .. ' holds something leaderd did not write; left alone'}
end
if not released or tonumber(released) < tonumber(ARGV[4]) then
  redis.pcall('SET', KEYS[2], ARGV[4])
end
if ours then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return {1}
end
return {0}

-- Extends the lease only if it still holds exactly the value this term wrote
-- (compare-and-PEXPIRE): a lease that expired and was taken is never extended.
--
-- KEYS[1] lock key     KEYS[2] fencing counter
-- ARGV[1] our lock value     ARGV[2] lease in ms
-- ARGV[3] '1' to restore the key if it is missing (quorum mode: a node that
--         restarted empty rejoins the term the majority still grants)
-- ARGV[4] our fencing token
--
-- Returns {1}          renewed
--         {0, value}   not ours any more; value is what the key holds (or nil)
local current = redis.pcall('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1}
end
if current == false and ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
  local fence = tonumber(redis.pcall('GET', KEYS[2]))
  if fence == nil or fence < tonumber(ARGV[4]) then
    redis.call('SET', KEYS[2], ARGV[4])
  end
  return {1}
end
if type(current) == 'table' then
  -- WRONGTYPE: someone replaced the key with another type.
  return {0, false}
end
return {0, current}

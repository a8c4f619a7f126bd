-- Extends the lease only if it still holds exactly the value this term wrote
-- (compare-and-PEXPIRE): a lease that expired and was taken is never extended.
--
-- KEYS[1] lock key     ARGV[1] our lock value     ARGV[2] lease in ms
--
-- Returns {1}          renewed
--         {0, value}   not ours any more; value is what the key holds (or nil)
local current = redis.pcall('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1}
end
if type(current) == 'table' then
  -- WRONGTYPE: someone replaced the key with another type.
  return {0, false}
end
return {0, current}

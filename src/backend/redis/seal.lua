-- Quorum mode, second step of an acquire: gives the term one fencing token on
-- every node that granted it, and announces the term.
--
-- Each granting node minted its own token; the candidate takes the highest
-- and writes it back here, to the lock value and to the fencing counter.
-- Since every two majorities share a node, the next term's INCR on that node
-- starts above this token: tokens increase across terms.
--
-- KEYS[1] lock key     KEYS[2] fencing counter
-- KEYS[3] term: the lock value again, with the lock's TTL (acquire.lua)
-- ARGV[1] the value this node granted       ARGV[2] the sealed value
-- ARGV[3] the term's token                  ARGV[4] pub/sub channel
--
-- Returns 1 when sealed, 0 when the node no longer holds our grant, or the
-- counter holds something leaderd did not write (nothing is touched then).
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local fence = redis.pcall('GET', KEYS[2])
if type(fence) == 'table' or (fence ~= false and tonumber(fence) == nil) then
  return 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.pcall('SET', KEYS[3], ARGV[2], 'PX', ttl)
if fence == false or tonumber(fence) < tonumber(ARGV[3]) then
  redis.call('SET', KEYS[2], ARGV[3])
end
redis.call('PUBLISH', ARGV[4], 'acquired ' .. ARGV[3])
return 1

-- Extends the lease only if it still holds exactly the value this term wrote
-- (compare-and-PEXPIRE): a lease that expired and was taken is never extended.
--
-- KEYS[1] lock key     KEYS[2] fencing counter     KEYS[3] last released token
-- ARGV[1] our lock value     ARGV[2] lease in ms
-- ARGV[3] '1' to restore the key if it is missing (quorum mode: a node that
--         restarted empty rejoins the term the majority still grants)
-- ARGV[4] our fencing token
-- ARGV[5] the leader's safe-until on this server's clock (us), or '0' when
--         unknown: a renewal that arrives later than that (delayed in the
--         network) belongs to a term that is over, and must not extend or
--         recreate anything
--
-- Returns {1, now_us}      renewed (now_us: this server's clock)
--         {0, value}       not ours any more; value is what the key holds (or nil)
--         {2, description} the restore would overwrite something leaderd did
--                          not write; nothing was touched
--         {3}              arrived after the leader's safe-until; nothing done
--         {5, error}       Redis refused to write (maxmemory)
-- Redis 3.2 to 4 replicate a script that reads TIME only when asked to.
if redis.replicate_commands then redis.replicate_commands() end
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
if ARGV[5] ~= '0' and now_us > tonumber(ARGV[5]) then
  return {3}
end
local current = redis.pcall('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, now_us}
end
if current == false and ARGV[3] == '1' then
  local token = tonumber(ARGV[4])
  local fence = redis.pcall('GET', KEYS[2])
  if type(fence) == 'table' or (fence ~= false and tonumber(fence) == nil) then
    return {2, KEYS[2] .. ' is not a fencing counter; leaderd did not write it and leaves it alone'}
  end
  local released = redis.pcall('GET', KEYS[3])
  if type(released) == 'table' or (released ~= false and tonumber(released) == nil) then
    return {2, KEYS[3] .. ' is not a released token; leaderd did not write it and leaves it alone'}
  end
  -- Our term was released here (a renewal overtaken by its own release):
  -- it must not come back. (A higher counter is no reason to refuse: it
  -- may come from a partial grant that was undone, or a quarantine.)
  if released and tonumber(released) >= token then
    return {0, false}
  end
  local set = redis.pcall('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
  if type(set) == 'table' and set.err then
    return {5, set.err}
  end
  if not fence or tonumber(fence) < token then
    redis.call('SET', KEYS[2], ARGV[4])
  end
  return {1, now_us}
end
if type(current) == 'table' then
  -- WRONGTYPE: someone replaced the key with another type.
  return {0, false}
end
return {0, current}

-- Extends the lease only if it still holds exactly the value this term wrote
-- (compare-and-PEXPIRE): a lease that expired and was taken is never extended.
--
-- KEYS[1] lock     KEYS[2] fencing counter     KEYS[3] last released token
-- KEYS[4] members  KEYS[5] seen     KEYS[6] preferred    KEYS[7] switchover
-- KEYS[8] term: the lock value again, with the lock's TTL (acquire.lua)
-- ARGV[1] JSON {
--   value: our lock value, lease_ms, token: our fencing token,
--   restore: restore the key if it is missing (quorum mode: a node that
--            restarted empty rejoins the term the majority still grants),
--   deadline_us: the call's deadline on this server's clock, or 0 when
--            unknown: a renewal that arrives later than that (delayed in the
--            network) belongs to a caller that gave up on it, and must not
--            extend or recreate anything,
--   identity, presence (text), priority, member_ttl_ms
-- }
--
-- Returns {1, now_us, switchover, preferred, priority, healthy}
--                          renewed; now_us: this server's clock; switchover:
--                          the pending request, or false; preferred: the
--                          healthy candidate with the highest priority (or
--                          false) and its priority; healthy: how many healthy
--                          candidates are present
--         {0, value}       not ours any more; value is what the key holds (or nil)
--         {2, description} the restore would overwrite something leaderd did
--                          not write; nothing was touched
--         {3}              arrived after the caller's deadline; nothing done
--         {5, error}       Redis refused to write (maxmemory)
-- Redis 3.2 to 4 replicate a script that reads TIME only when asked to.
if redis.replicate_commands then redis.replicate_commands() end
local args = cjson.decode(ARGV[1])
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
if args.deadline_us ~= 0 and now_us > args.deadline_us then
  return {3}
end

local function renewed()
  local kinds = {redis.call('TYPE', KEYS[4])['ok'], redis.call('TYPE', KEYS[5])['ok'],
                 redis.call('TYPE', KEYS[6])['ok']}
  if args.presence and (kinds[1] == 'none' or kinds[1] == 'hash')
      and (kinds[2] == 'none' or kinds[2] == 'zset')
      and (kinds[3] == 'none' or kinds[3] == 'zset') then
    redis.call('HSET', KEYS[4], args.identity, args.presence)
    redis.call('ZADD', KEYS[5], math.floor(now_us / 1000), args.identity)
    if cjson.decode(args.presence).healthy then
      redis.call('ZADD', KEYS[6], args.priority, args.identity)
    else
      redis.call('ZREM', KEYS[6], args.identity)
    end
  end
  -- Only candidates heard of within member_ttl count: one that crashed
  -- must not be handed the lease (acquire.lua trims too, but nobody
  -- acquires while a leader renews).
  if redis.call('TYPE', KEYS[5])['ok'] == 'zset' then
    local now_ms = math.floor(now_us / 1000)
    local stale = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now_ms - args.member_ttl_ms, 'LIMIT', 0, 16)
    for _, gone in ipairs(stale) do
      redis.pcall('HDEL', KEYS[4], gone)
      redis.call('ZREM', KEYS[5], gone)
      redis.pcall('ZREM', KEYS[6], gone)
    end
  end
  local switchover = redis.pcall('GET', KEYS[7])
  if type(switchover) ~= 'string' then
    switchover = false
  end
  local preferred, priority, healthy = false, 0, 0
  if redis.call('TYPE', KEYS[6])['ok'] == 'zset' then
    local best = redis.call('ZREVRANGE', KEYS[6], 0, 0, 'WITHSCORES')
    if best[1] then
      preferred, priority = best[1], tonumber(best[2])
    end
    healthy = redis.call('ZCARD', KEYS[6])
  end
  return {1, now_us, switchover, preferred, priority, healthy}
end

local current = redis.pcall('GET', KEYS[1])
if current == args.value then
  redis.call('PEXPIRE', KEYS[1], args.lease_ms)
  redis.pcall('SET', KEYS[8], args.value, 'PX', args.lease_ms)
  return renewed()
end
if current == false and args.restore then
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
  if released and tonumber(released) >= args.token then
    return {0, false}
  end
  local set = redis.pcall('SET', KEYS[1], args.value, 'NX', 'PX', args.lease_ms)
  if type(set) == 'table' and set.err then
    return {5, set.err}
  end
  if not fence or tonumber(fence) < args.token then
    redis.call('SET', KEYS[2], string.format('%d', args.token))
  end
  redis.pcall('SET', KEYS[8], args.value, 'PX', args.lease_ms)
  return renewed()
end
if type(current) == 'table' then
  -- WRONGTYPE: someone replaced the key with another type.
  return {0, false}
end
return {0, current}

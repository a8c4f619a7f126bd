-- Takes the leadership lease if it is free and mints the term's fencing token
-- in the same atomic step. Never touches a key it did not write.
--
-- KEYS[1] lock          KEYS[2] fencing counter    KEYS[3] last released token
-- KEYS[4] quarantine: set while a store that had no fencing counter settles
-- KEYS[5] members (hash: identity -> presence JSON)
-- KEYS[6] seen (zset: identity -> last heard of, server ms)
-- KEYS[7] preferred (zset: healthy identity -> priority)
-- KEYS[8] handoff: while it exists, only the candidate it names may acquire
-- KEYS[9] vacant since (server ms): when the lease was last found free
-- KEYS[10] term: the lock value again, with the lock's TTL (see below)
-- ARGV[1] JSON {
--   identity, term (random id), lease_ms, floor (highest token the caller saw
--   + 1), acquired_at (RFC 3339, informational), channel (pub/sub),
--   guard: token of the holder the caller saw and whose lease has not run
--          out by its clock, or 0,
--   announce: announce the term here (false in quorum mode, where a node's
--             grant is not a term yet: seal.lua announces it),
--   presence: the caller's presence JSON (text), member_ttl_ms,
--   priority, holdback_ms: how long a vacancy is kept for a present,
--             healthy candidate with a higher priority (0: never); an
--             unhealthy caller ranks below every healthy candidate
-- }
--
-- Returns {1, token, value, now_us}  acquired (now_us: this server's clock)
--         {0, value, pttl_ms}        held by the writer of value
--         {2, description}           the keys hold something leaderd did not
--                                    write (nothing was touched)
--         {3}                        the lease the caller saw vanished without
--                                    being released: the store lost it, and
--                                    its holder may still think it leads
--         {4, wait_ms}               quarantine: the store had no fencing
--                                    counter, so it may have lost its data;
--                                    nobody is granted the lease until a
--                                    leader it forgot has surely stopped
--         {5, error}                 Redis refused to write (maxmemory)
--         {6, identity, wait_ms}     reserved for identity (a switchover)
--         {7, identity, wait_ms}     kept free for identity, present, healthy
--                                    and preferred (higher priority)
-- Redis 3.2 to 4 replicate a script that reads TIME only when asked to.
if redis.replicate_commands then redis.replicate_commands() end
local args = cjson.decode(ARGV[1])
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local now_ms = math.floor(now_us / 1000)

local function foreign(key, why)
  return {2, key .. ' ' .. why .. '; leaderd did not write it and leaves it alone'}
end

-- Presence first: a candidate is present while it keeps asking.
local membership = {KEYS[5], KEYS[6], KEYS[7]}
for _, key in ipairs(membership) do
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= (key == KEYS[5] and 'hash' or 'zset') then
    return foreign(key, 'holds a ' .. kind)
  end
end
if args.presence then
  redis.call('HSET', KEYS[5], args.identity, args.presence)
  redis.call('ZADD', KEYS[6], now_ms, args.identity)
  if cjson.decode(args.presence).healthy then
    redis.call('ZADD', KEYS[7], args.priority, args.identity)
  else
    redis.call('ZREM', KEYS[7], args.identity)
  end
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now_ms - args.member_ttl_ms, 'LIMIT', 0, 16)
for _, gone in ipairs(stale) do
  redis.call('HDEL', KEYS[5], gone)
  redis.call('ZREM', KEYS[6], gone)
  redis.call('ZREM', KEYS[7], gone)
end

local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' then
  return {0, redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
elseif kind ~= 'none' then
  return {2, KEYS[1] .. ' holds a ' .. kind .. ', not a leaderd lock value'}
end
-- The lock is gone but its term may not be: deleted under a live holder
-- (DEL, eviction, a failover that lost the write). The term key kept the
-- lock's TTL, so the lease stays held until the term could have ended.
local term = redis.pcall('GET', KEYS[10])
if type(term) == 'string' then
  return {0, term, redis.call('PTTL', KEYS[10])}
end

local fence_kind = redis.call('TYPE', KEYS[2])['ok']
if fence_kind ~= 'none' and fence_kind ~= 'string' then
  return foreign(KEYS[2], 'holds a ' .. fence_kind .. ', not a fencing counter')
end
local quarantine = redis.call('PTTL', KEYS[4])
if quarantine > 0 then
  return {4, quarantine}
end
if fence_kind == 'none' then
  -- No fencing counter: a new store, or one that lost its data while a
  -- leader it forgot may still act for up to its renew deadline. Grant
  -- nothing for one lease, and restart the counter from this server's clock
  -- in microseconds: above every token handed out before the loss, as long
  -- as the clock did not step back by more than the time since.
  local start = math.max(now_us, args.floor - 1)
  local set = redis.pcall('SET', KEYS[2], string.format('%d', start))
  if type(set) == 'table' and set.err then
    return {5, set.err}
  end
  redis.call('SET', KEYS[4], 'data loss guard: no fencing counter was found', 'PX', args.lease_ms)
  return {4, args.lease_ms}
end

if args.guard ~= 0 and redis.pcall('GET', KEYS[3]) ~= string.format('%d', args.guard) then
  return {3}
end

-- A switchover reserves the vacancy for the candidate it names.
local handoff = redis.pcall('GET', KEYS[8])
if type(handoff) == 'string' then
  local ok, reserved = pcall(cjson.decode, handoff)
  if not ok or type(reserved) ~= 'table' or type(reserved.to) ~= 'string' then
    return foreign(KEYS[8], 'is not a leaderd handoff')
  end
  if reserved.to ~= args.identity then
    return {6, reserved.to, redis.call('PTTL', KEYS[8])}
  end
elseif args.holdback_ms > 0 then
  -- Priority: a vacancy is kept for a present, healthy candidate with a
  -- higher priority for holdback_ms; then anyone may take it.
  local since = tonumber(redis.pcall('GET', KEYS[9]))
  if since == nil then
    since = now_ms
    redis.call('SET', KEYS[9], string.format('%d', since), 'PX', args.lease_ms)
  end
  local best = redis.call('ZREVRANGE', KEYS[7], 0, 0, 'WITHSCORES')
  local waited = now_ms - since
  -- An unhealthy caller ranks below every healthy candidate.
  local mine = args.priority
  if not cjson.decode(args.presence).healthy then
    mine = -math.huge
  end
  if best[1] and best[1] ~= args.identity and tonumber(best[2]) > mine
      and waited < args.holdback_ms then
    return {7, best[1], args.holdback_ms - waited}
  end
end

local token = redis.pcall('INCR', KEYS[2])
if type(token) == 'table' then
  local err = tostring(token.err)
  if string.sub(err, 1, 3) == 'OOM' then
    return {5, err}
  end
  return foreign(KEYS[2], 'is not a fencing counter (' .. err .. ')')
end
-- Continue from the highest token the candidate has seen, should the
-- counter be behind it.
if token < args.floor then
  token = args.floor
  redis.call('SET', KEYS[2], string.format('%d', token))
end

local value = '{"holder":' .. cjson.encode(args.identity) ..
  ',"token":' .. string.format('%d', token) ..
  ',"term":"' .. args.term ..
  '","acquired_at":"' .. args.acquired_at .. '"}'
local set = redis.pcall('SET', KEYS[1], value, 'NX', 'PX', args.lease_ms)
if type(set) == 'table' and set.err then
  return {5, set.err}
end
redis.pcall('SET', KEYS[10], value, 'PX', args.lease_ms)
redis.call('DEL', KEYS[8], KEYS[9])
if args.announce then
  redis.call('PUBLISH', args.channel, 'acquired ' .. string.format('%d', token))
end
return {1, token, value, now_us}

-- Takes the leadership lease if it is free and mints the term's fencing token
-- in the same atomic step. Never touches a key it did not write.
--
-- KEYS[1] lock key      KEYS[2] fencing counter    KEYS[3] last released token
-- KEYS[4] quarantine: set while a store that had no fencing counter settles
-- ARGV[1] identity      ARGV[2] random term id     ARGV[3] lease in ms
-- ARGV[4] lowest token acceptable (highest token this candidate saw + 1)
-- ARGV[5] acquired-at (RFC 3339, informational)     ARGV[6] pub/sub channel
-- ARGV[7] token of the holder the caller saw and whose lease has not run out
--         by the caller's clock, or 0
-- ARGV[8] '1' to announce the new term on the channel; '0' in quorum mode,
--         where a node's grant is not yet a term (seal.lua announces it)
--
-- Returns {1, token, value, now_us}  acquired (now_us: this server's clock)
--         {0, value, pttl_ms}        held by the writer of value
--         {2, description}           the keys hold something leaderd did not
--                                    write (nothing was touched)
--         {3}                        the lease the caller saw vanished without
--                                    being released: the store lost it
--                                    (restart without persistence, failover,
--                                    flush) and its holder may still think it
--                                    leads, so do not take it yet
--         {4, wait_ms}               quarantine: the store had no fencing
--                                    counter, so it may have lost its data;
--                                    nobody is granted the lease until a
--                                    leader it forgot has surely stepped down
--         {5, error}                 Redis refused to write (maxmemory)
-- Redis 3.2 to 4 replicate a script that reads TIME only when asked to.
if redis.replicate_commands then redis.replicate_commands() end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' then
  return {0, redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
elseif kind ~= 'none' then
  return {2, KEYS[1] .. ' holds a ' .. kind .. ', not a leaderd lock value'}
end

local function foreign(key, why)
  return {2, key .. ' ' .. why .. '; leaderd did not write it and leaves it alone'}
end

local fence_kind = redis.call('TYPE', KEYS[2])['ok']
if fence_kind ~= 'none' and fence_kind ~= 'string' then
  return foreign(KEYS[2], 'holds a ' .. fence_kind .. ', not a fencing counter')
end
local quarantine = redis.call('PTTL', KEYS[4])
if quarantine > 0 then
  return {4, quarantine}
end

local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])

if fence_kind == 'none' then
  -- No fencing counter: a new store, or one that lost its data while a
  -- leader it forgot may still act for up to its renew deadline. Grant
  -- nothing for one lease, and restart the counter from this server's clock
  -- in microseconds: above every token handed out before the loss, as long
  -- as the clock did not step back by more than the time since.
  local start = math.max(now_us, tonumber(ARGV[4]) - 1)
  local set = redis.pcall('SET', KEYS[2], string.format('%d', start))
  if type(set) == 'table' and set.err then
    return {5, set.err}
  end
  redis.call('SET', KEYS[4], 'data loss guard: no fencing counter was found', 'PX', ARGV[3])
  return {4, tonumber(ARGV[3])}
end

if ARGV[7] ~= '0' and redis.pcall('GET', KEYS[3]) ~= ARGV[7] then
  return {3}
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
local floor = tonumber(ARGV[4])
if token < floor then
  token = floor
  redis.call('SET', KEYS[2], string.format('%d', token))
end

local value = '{"holder":' .. cjson.encode(ARGV[1]) ..
  ',"token":' .. string.format('%d', token) ..
  ',"term":"' .. ARGV[2] ..
  '","acquired_at":"' .. ARGV[5] .. '"}'
local set = redis.pcall('SET', KEYS[1], value, 'NX', 'PX', ARGV[3])
if type(set) == 'table' and set.err then
  return {5, set.err}
end
if ARGV[8] == '1' then
  redis.call('PUBLISH', ARGV[6], 'acquired ' .. string.format('%d', token))
end
return {1, token, value, now_us}

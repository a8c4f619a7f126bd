-- Takes the leadership lease if it is free and mints the term's fencing token
-- in the same atomic step. Never touches a key it did not write.
--
-- KEYS[1] lock key      KEYS[2] fencing counter    KEYS[3] last released token
-- ARGV[1] identity      ARGV[2] random term id     ARGV[3] lease in ms
-- ARGV[4] lowest token acceptable (highest token this candidate saw + 1)
-- ARGV[5] acquired-at (RFC 3339, informational)     ARGV[6] pub/sub channel
-- ARGV[7] token of the holder the caller saw and whose lease has not run out
--         by the caller's clock, or 0
-- ARGV[8] '1' to announce the new term on the channel; '0' in quorum mode,
--         where a node's grant is not yet a term (seal.lua announces it)
--
-- Returns {1, token, value}    acquired
--         {0, value, pttl_ms}  held by the writer of value (parsed by the caller)
--         {2, description}     the keys hold something leaderd did not write
--         {3}                  the lease the caller saw vanished without being
--                              released: the store lost it (restart without
--                              persistence, failover, flush) and its holder
--                              may still think it leads, so do not take it yet
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' then
  return {0, redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
elseif kind ~= 'none' then
  return {2, KEYS[1] .. ' holds a ' .. kind .. ', not a leaderd lock value'}
end

if ARGV[7] ~= '0' and redis.pcall('GET', KEYS[3]) ~= ARGV[7] then
  return {3}
end

local token = redis.pcall('INCR', KEYS[2])
if type(token) == 'table' then
  return {2, KEYS[2] .. ' is not a fencing counter: ' .. tostring(token.err)}
end
-- If Redis lost the counter (restart without persistence), continue from the
-- highest token the candidate has seen, so tokens never go backwards.
local floor = tonumber(ARGV[4])
if token < floor then
  token = floor
  redis.call('SET', KEYS[2], string.format('%d', token))
end

local value = '{"holder":' .. cjson.encode(ARGV[1]) ..
  ',"token":' .. string.format('%d', token) ..
  ',"term":"' .. ARGV[2] ..
  '","acquired_at":"' .. ARGV[5] .. '"}'
redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[3])
if ARGV[8] == '1' then
  redis.call('PUBLISH', ARGV[6], 'acquired ' .. string.format('%d', token))
end
return {1, token, value}

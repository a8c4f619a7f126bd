-- Looks at the lease without competing for it: observers, and candidates
-- that stand aside (unhealthy). Writes nothing but the caller's presence.
--
-- KEYS[1] lock    KEYS[2] members   KEYS[3] seen    KEYS[4] preferred
-- KEYS[5] handoff
-- ARGV[1] JSON {identity, presence (text, or absent: an observer is not a
--               candidate and announces nothing), priority, member_ttl_ms}
--
-- Returns {0, value, pttl_ms}   held by the writer of value
--         {8}                   free
--         {6, identity, wait_ms} free, reserved for identity (a switchover)
--         {2, description}      something leaderd did not write
if redis.replicate_commands then redis.replicate_commands() end
local args = cjson.decode(ARGV[1])
-- JSON null decodes to cjson.null, which Lua takes for true.
if args.presence ~= nil and args.presence ~= cjson.null then
  local kinds = {redis.call('TYPE', KEYS[2])['ok'], redis.call('TYPE', KEYS[3])['ok'],
                 redis.call('TYPE', KEYS[4])['ok']}
  if (kinds[1] == 'none' or kinds[1] == 'hash') and (kinds[2] == 'none' or kinds[2] == 'zset')
      and (kinds[3] == 'none' or kinds[3] == 'zset') then
    local now = redis.call('TIME')
    local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    redis.call('HSET', KEYS[2], args.identity, args.presence)
    redis.call('ZADD', KEYS[3], now_ms, args.identity)
    if cjson.decode(args.presence).healthy then
      redis.call('ZADD', KEYS[4], args.priority, args.identity)
    else
      redis.call('ZREM', KEYS[4], args.identity)
    end
  end
end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' then
  return {0, redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
elseif kind ~= 'none' then
  return {2, KEYS[1] .. ' holds a ' .. kind .. ', not a leaderd lock value'}
end
local handoff = redis.pcall('GET', KEYS[5])
if type(handoff) == 'string' then
  local ok, reserved = pcall(cjson.decode, handoff)
  if ok and type(reserved) == 'table' and type(reserved.to) == 'string' then
    return {6, reserved.to, redis.call('PTTL', KEYS[5])}
  end
end
return {8}

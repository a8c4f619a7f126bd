-- The candidates present in the election, or one candidate leaving it.
--
-- KEYS[1] members (hash: identity -> presence JSON)
-- KEYS[2] seen (zset: identity -> last heard of, server ms)
-- KEYS[3] preferred (zset: healthy identity -> priority)
-- ARGV[1] JSON {op: 'list' | 'leave', identity (leave), member_ttl_ms}
--
-- Returns {now_ms, identity1, presence1, seen_ms1, identity2, ...}   list
--         {1}                                                        leave
--         {2, description}   the keys hold something leaderd did not write
local args = cjson.decode(ARGV[1])
local kinds = {redis.call('TYPE', KEYS[1])['ok'], redis.call('TYPE', KEYS[2])['ok'],
               redis.call('TYPE', KEYS[3])['ok']}
if not ((kinds[1] == 'none' or kinds[1] == 'hash') and (kinds[2] == 'none' or kinds[2] == 'zset')
    and (kinds[3] == 'none' or kinds[3] == 'zset')) then
  return {2, KEYS[1] .. ', ' .. KEYS[2] .. ' or ' .. KEYS[3] .. ' holds something leaderd did not write'}
end
if args.op == 'leave' then
  redis.call('HDEL', KEYS[1], args.identity)
  redis.call('ZREM', KEYS[2], args.identity)
  redis.call('ZREM', KEYS[3], args.identity)
  return {1}
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local reply = {now_ms}
local seen = redis.call('ZRANGEBYSCORE', KEYS[2], now_ms - args.member_ttl_ms, '+inf', 'WITHSCORES')
for i = 1, #seen, 2 do
  local presence = redis.call('HGET', KEYS[1], seen[i])
  if presence then
    table.insert(reply, seen[i])
    table.insert(reply, presence)
    table.insert(reply, tonumber(seen[i + 1]))
  end
end
return reply

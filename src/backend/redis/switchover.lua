-- The election's pending switchover: one request at a time, recorded in the
-- store so that it reaches the leader whichever candidate's daemon took it.
--
-- KEYS[1] switchover (JSON)
-- ARGV[1] JSON {op: 'request' | 'cancel' | 'get', record (text, request),
--               channel}
--
-- Returns {1}                 request recorded / cancel: one was pending
--         {0, record}         request: another is pending (nothing changed)
--         {0}                 cancel: nothing was pending
--         {1, record} / {0}   get: the pending request / none
--         {2, description}    the key holds something leaderd did not write
local args = cjson.decode(ARGV[1])
local current = redis.pcall('GET', KEYS[1])
if type(current) == 'table' then
  return {2, KEYS[1] .. ' is not a leaderd switchover; left alone'}
end
if args.op == 'get' then
  if current then
    return {1, current}
  end
  return {0}
elseif args.op == 'request' then
  if current then
    return {0, current}
  end
  redis.call('SET', KEYS[1], args.record)
  redis.call('PUBLISH', args.channel, 'switchover')
  return {1}
elseif args.op == 'cancel' then
  if current then
    redis.call('DEL', KEYS[1])
    redis.call('PUBLISH', args.channel, 'switchover')
    return {1}
  end
  return {0}
end
return {2, 'unknown operation'}

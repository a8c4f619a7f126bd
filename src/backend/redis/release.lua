-- Frees the lease only if it still holds exactly the value this term wrote
-- (compare-and-DEL), then wakes the waiting candidates through pub/sub.
--
-- KEYS[1] lock     KEYS[2] last released token   KEYS[3] handoff
-- KEYS[4] switchover    KEYS[5] vacant since    KEYS[6] preferred
-- KEYS[7] term: the lock value again (acquire.lua); removed with our term,
--         also when the lock itself was already gone
-- ARGV[1] JSON {
--   value: our lock value, also: another value that is also ours or ''
--          (quorum mode: the sealed form of a grant, when it is unknown
--          whether the seal was applied),
--   token, channel,
--   notice: the notice to publish, or '' to free the key silently (quorum
--           mode undoing a partial grant, which was never a term),
--   handoff: JSON text of a handover's handoff, or '' (only the candidate
--            it names, `to`, may acquire until it expires; one that carries
--            out a switchover names its id, `switchover`, and removes that
--            record: only that one, as another may have been asked for
--            since),
--   lease_ms
-- }
--
-- The released token tells followers that the lease ended on purpose, not
-- because the store lost it (see acquire.lua); it is recorded even where the
-- key is already gone (a server that restarted empty), so that a renewal
-- delayed in the network cannot recreate a released term there (renew.lua).
-- A released key leaderd did not write is left alone.
--
-- Returns {1}              released
--         {0}              the lease was not ours
--         {2, description} released, but the released-token key holds
--                          something leaderd did not write (left alone)
if redis.replicate_commands then redis.replicate_commands() end
local args = cjson.decode(ARGV[1])
local current = redis.pcall('GET', KEYS[1])
local function is_ours(value)
  return value == args.value or (args.also ~= '' and value == args.also)
end
local ours = is_ours(current)
if ours then
  redis.call('DEL', KEYS[1])
end
if is_ours(redis.pcall('GET', KEYS[7])) then
  redis.call('DEL', KEYS[7])
end
if args.notice == '' then
  return {ours and 1 or 0}
end
local warning = nil
local released = redis.pcall('GET', KEYS[2])
if type(released) == 'table' or (released ~= false and tonumber(released) == nil) then
  warning = KEYS[2] .. ' holds something leaderd did not write; left alone'
elseif not released or tonumber(released) < args.token then
  redis.pcall('SET', KEYS[2], string.format('%d', args.token))
end
if ours then
  -- The releasing candidate is not the one a vacancy waits for (it would
  -- take back the lease it just gave up, over those it gave it up to).
  local decoded, lock = pcall(cjson.decode, args.value)
  if decoded and type(lock) == 'table' and type(lock.holder) == 'string'
      and redis.call('TYPE', KEYS[6])['ok'] == 'zset' then
    redis.call('ZREM', KEYS[6], lock.holder)
  end
  if args.handoff ~= '' then
    redis.call('SET', KEYS[3], args.handoff, 'PX', args.lease_ms)
    local carried = cjson.decode(args.handoff).switchover
    local pending = redis.pcall('GET', KEYS[4])
    if type(carried) == 'string' and type(pending) == 'string' then
      local ok, record = pcall(cjson.decode, pending)
      if ok and type(record) == 'table' and record.id == carried then
        redis.call('DEL', KEYS[4])
      end
    end
  end
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('SET', KEYS[5], string.format('%d', now_ms), 'PX', args.lease_ms)
  redis.call('PUBLISH', args.channel, args.notice)
end
if warning then
  return {ours and 2 or 0, warning}
end
return {ours and 1 or 0}

-- wrk script: each connection waits WRK_DELAY_MS milliseconds after every
-- response before sending its next request, so that the request rate is
-- roughly connections / (delay + latency) instead of "as fast as possible".
-- Used to measure latency at a given load rather than at saturation.
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "1")

function delay()
  return delay_ms
end

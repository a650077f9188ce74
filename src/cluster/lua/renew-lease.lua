-- Joins the cluster or renews this node member's lease. Expiry is computed from the Redis
-- clock (TIME), so node clocks never need to agree.
-- KEYS[1] node leases ZSET (member -> expiry ms)
-- ARGV[1] node member id ("<nodeId>/<incarnation>")
-- ARGV[2] lease time to live, ms (nodeTimeoutMs)
-- ARGV[3] 'join' (add unconditionally) or 'renew' (only an existing, unexpired lease)
-- Returns {status, nowMs}: status 'ok'; 'reaped' (lease gone: a survivor reaped this
-- member); 'lapsed' (lease expired before this renewal: survivors may be reaping it now).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == 'renew' then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not score then return {'reaped', now} end
  if tonumber(score) <= now then return {'lapsed', now} end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return {'ok', now}

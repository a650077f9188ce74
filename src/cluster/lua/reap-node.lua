-- Claims the reaping of a dead node member. Exactly one caller can win: the ZREM happens
-- only while the lease is expired, and only once. The winner's token is kept for a minute, so
-- the same claim run again (ioredis re-sends a script whose reply died with its connection)
-- answers 'won' again instead of 'gone': otherwise nobody would reap the member.
-- KEYS[1] node leases ZSET
-- KEYS[2] reaped-by marker STRING of that member (its token, expires)
-- ARGV[1] node member id to reap
-- ARGV[2] claim token, unique per reap() call
-- Returns {status, nowMs}: 'won' (this caller reaps), 'alive' (lease not expired),
-- 'gone' (already reaped by another claim, or never joined).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  if redis.call('GET', KEYS[2]) == ARGV[2] then return {'won', now} end
  return {'gone', now}
end
if tonumber(score) > now then return {'alive', now} end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', 60000)
return {'won', now}

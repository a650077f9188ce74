-- Claims the reaping of a dead node member. Exactly one caller can win: the ZREM happens
-- only while the lease is expired, and only once.
-- KEYS[1] node leases ZSET
-- ARGV[1] node member id to reap
-- Returns {status, nowMs}: 'won' (this caller reaps), 'alive' (lease not expired),
-- 'gone' (already reaped by someone else, or never joined).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return {'gone', now} end
if tonumber(score) > now then return {'alive', now} end
redis.call('ZREM', KEYS[1], ARGV[1])
return {'won', now}

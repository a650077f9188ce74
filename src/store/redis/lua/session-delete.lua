-- Ends a persistent session (expiry, or Clean Start of a new incarnation). Refused when a
-- newer incarnation owns it.
-- KEYS[1] session HASH, KEYS[2] subscriptions HASH, KEYS[3] pending HASH,
-- KEYS[4] pending state HASH, KEYS[5] incoming QoS 2 HASH, KEYS[6] seen message ids ZSET
-- ARGV[1] epoch
-- Returns {'ok', deleted (0/1)} | {'stale'}
local stored = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '-1')
if stored > tonumber(ARGV[1]) then return {'stale'} end
return {'ok', math.min(1, redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]))}

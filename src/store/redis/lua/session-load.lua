-- Reads a client's whole persistent session in one consistent step.
-- KEYS[1] session HASH, KEYS[2] subscriptions HASH, KEYS[3] pending HASH,
-- KEYS[4] pending state HASH, KEYS[5] incoming QoS 2 HASH, KEYS[6] seen message ids ZSET
-- ARGV: none
-- Returns {'none'} | {'ok', epoch, expiryS, {sub key, sub, ...}, {seq, pending, ...},
--   {seq, state, ...}, {packet id, unrouted message id or '', ...}, {seen message id, ...}}
local h = redis.call('HMGET', KEYS[1], 'epoch', 'expiryS')
if not h[1] then return {'none'} end
return {'ok', h[1], h[2], redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]),
  redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[5]), redis.call('ZRANGE', KEYS[6], 0, -1)}

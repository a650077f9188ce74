-- One change to a session's subscriptions, incoming QoS 2 ids or expiry by the owning
-- incarnation.
-- KEYS[1] session HASH, KEYS[2] subscriptions HASH, KEYS[3] pending HASH,
-- KEYS[4] pending state HASH, KEYS[5] incoming QoS 2 HASH, KEYS[6] seen message ids ZSET
-- ARGV[1] epoch
-- ARGV[2] 'sub' | 'unsub' | 'qos2-add' | 'qos2-remove' | 'expire'
-- ARGV[3] sub/unsub: subscription key; qos2: packet id; expire: ms until the session
--         ends (all keys get a TTL), or '' to keep it (connected: PERSIST)
-- ARGV[4] sub: encoded subscription; qos2-add: id of a message not routed yet, '' once routed
-- Returns {'ok', changed (0/1)} | {'stale'}
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return {'stale'} end
local op = ARGV[2]
local changed = 1
if op == 'sub' then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
elseif op == 'unsub' then
  changed = redis.call('HDEL', KEYS[2], ARGV[3])
elseif op == 'qos2-add' then
  changed = redis.call('HSET', KEYS[5], ARGV[3], ARGV[4])
elseif op == 'qos2-remove' then
  changed = redis.call('HDEL', KEYS[5], ARGV[3])
elseif op == 'expire' then
  for i = 1, #KEYS do
    if ARGV[3] == '' then redis.call('PERSIST', KEYS[i]) else redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
  end
else
  return {'error'}
end
return {'ok', changed}

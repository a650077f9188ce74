-- DISCONNECT with reason 0x00 (or 3.1.1 DISCONNECT) on the owning node: the will is
-- discarded without being published [MQTT-3.1.2-10]. Only the current incarnation may act.
-- KEYS[1] client owner HASH
-- KEYS[2] client will HASH
-- ARGV[1] caller's epoch
-- Returns {'stale'} | {'cancelled'} | {'none'}
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return {'stale'} end
redis.call('HSET', KEYS[1], 'online', '0')
if redis.call('HGET', KEYS[2], 'epoch') == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return {'cancelled'}
end
return {'none'}

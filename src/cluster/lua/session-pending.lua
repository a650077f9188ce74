-- One change to a session's pending (outgoing QoS 1/2) messages by the owning incarnation:
-- append a message, record its packet id / PUBREC, or remove it (PUBACK, PUBCOMP, dropped).
-- KEYS[1] session HASH, KEYS[2] pending HASH, KEYS[3] pending state HASH
-- ARGV[1] epoch
-- ARGV[2] 'append' | 'state' | 'remove'
-- ARGV[3] append: encoded PendingMessage; state/remove: seq
-- ARGV[4] state: "packetId:released" (released 0/1)
-- Returns {'ok', seq} | {'none'} (state/remove of an unknown seq) | {'stale'}
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return {'stale'} end
if ARGV[2] == 'append' then
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('HSET', KEYS[2], seq, ARGV[3])
  return {'ok', seq}
end
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 0 then return {'none'} end
if ARGV[2] == 'state' then
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
else
  redis.call('HDEL', KEYS[2], ARGV[3])
  redis.call('HDEL', KEYS[3], ARGV[3])
end
return {'ok', tonumber(ARGV[3])}

-- One change to a session's pending (outgoing QoS 1/2) messages by the owning incarnation:
-- append a message, record its packet id / PUBREC, or remove it (PUBACK, PUBCOMP, dropped).
-- An appended message with an id is remembered in the seen set; a second copy of it (a dead
-- node's undelivered stream entry handed on after the session already got it) is refused.
-- Keys created here inherit the session's time to live (an offline session expires whole).
-- KEYS[1] session HASH, KEYS[2] pending HASH, KEYS[3] pending state HASH, KEYS[4] seen ZSET
-- ARGV[1] epoch
-- ARGV[2] 'append' | 'state' | 'remove'
-- ARGV[3] append: encoded PendingMessage; state/remove: seq
-- ARGV[4] state: "packetId:released" (released 0/1); append: message id or ''
-- ARGV[5], ARGV[6], ARGV[7] append: now (ms), how long ids are kept (ms), most ids kept
-- Returns {'ok', seq} | {'dup'} (append of a seen id) | {'none'} (state/remove of an
-- unknown seq) | {'stale'}
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return {'stale'} end
local function inherit_ttl(key)
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end
if ARGV[2] == 'append' then
  local id = ARGV[4]
  if id ~= '' then
    if redis.call('ZSCORE', KEYS[4], id) then return {'dup'} end
    local now = tonumber(ARGV[5])
    redis.call('ZADD', KEYS[4], now, id)
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[6]))
    local extra = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[7])
    if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[4], 0, extra - 1) end
    inherit_ttl(KEYS[4])
  end
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('HSET', KEYS[2], seq, ARGV[3])
  inherit_ttl(KEYS[2])
  return {'ok', seq}
end
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 0 then return {'none'} end
if ARGV[2] == 'state' then
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
  inherit_ttl(KEYS[3])
else
  redis.call('HDEL', KEYS[2], ARGV[3])
  redis.call('HDEL', KEYS[3], ARGV[3])
end
return {'ok', tonumber(ARGV[3])}

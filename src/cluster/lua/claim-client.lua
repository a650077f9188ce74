-- CONNECT on any node: this node member becomes the client's owner with a new epoch.
-- A will left in the record belongs to an older incarnation. Rule [MQTT-3.1.4-3] and
-- MQTT 5 3.1.3.2.2: it fires now when its delay is 0, when the new connection has Clean
-- Start, when the old session had expiry 0, or when its delay already ran out (dueAt <= now,
-- the sweeper was just slower); otherwise the reconnect cancels it. Either way it is deleted
-- here, so whoever receives it in this reply is the only one to publish it.
-- The client id belongs to the identity that claimed it last while that incarnation is
-- online, has a stored session or a pending will: another identity's claim changes nothing
-- and is refused (unless ARGV[7] allows takeover across identities). A record without an
-- identity (written before owners were recorded) belongs to nobody.
-- KEYS[1] client owner HASH (node, epoch, online, identity)
-- KEYS[2] client will HASH (rec, epoch, delayS, expiryS, dueAt)
-- KEYS[3] session HASH (exists while a persistent session is stored)
-- ARGV[1] claiming node member id
-- ARGV[2] clean start: '1' or '0'
-- ARGV[3] new will record (encoded WillRecord), '' for none
-- ARGV[4] new will delay, seconds
-- ARGV[5] new session expiry interval, seconds
-- ARGV[6] claiming identity (auth/session-owner.ts)
-- ARGV[7] takeover across identities allowed: '1' or '0'
-- Returns {'ok', epoch, previousNode, previousOnline ('1'/'0'), oldWill, oldWillOutcome, oldWillEpoch}
--   oldWill: the encoded record to fire now, or '' ; oldWillOutcome: 'none'|'fire'|'cancelled'
--   | {'not_owner'} when another identity holds the client id (nothing was changed)
local prev = redis.call('HMGET', KEYS[1], 'node', 'online', 'identity')
if ARGV[7] ~= '1' and prev[3] and prev[3] ~= ARGV[6] then
  if prev[2] == '1' or redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then
    return {'not_owner'}
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'online', '1', 'identity', ARGV[6])

local fire = ''
local outcome = 'none'
local old = redis.call('HMGET', KEYS[2], 'rec', 'delayS', 'expiryS', 'dueAt', 'epoch')
if old[1] then
  local due = tonumber(old[4])
  if ARGV[2] == '1' or tonumber(old[2]) == 0 or tonumber(old[3]) == 0 or (due and due <= now) then
    fire = old[1]
    outcome = 'fire'
  else
    outcome = 'cancelled'
  end
  redis.call('DEL', KEYS[2])
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], 'rec', ARGV[3], 'epoch', epoch, 'delayS', ARGV[4], 'expiryS', ARGV[5])
end
return {'ok', epoch, prev[1] or '', prev[2] or '0', fire, outcome, old[5] or '0'}

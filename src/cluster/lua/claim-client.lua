-- CONNECT on any node: this node member becomes the client's owner with a new epoch. One call
-- claims the clients of several CONNECTs (those of one event-loop turn), in order: the same
-- client id twice gets two epochs, the later one taking over from the earlier.
-- A will left in the record belongs to an older incarnation. Rule [MQTT-3.1.4-3] and
-- MQTT 5 3.1.3.2.2: it fires now when its delay is 0, when the new connection has Clean
-- Start, when the old session had expiry 0, or when its delay already ran out (dueAt <= now,
-- the sweeper was just slower); otherwise the reconnect cancels it. Either way it is deleted
-- here, so whoever receives it in this reply is the only one to publish it.
-- The client id belongs to the identity that claimed it last while that incarnation is
-- online, has a stored session or a pending will: another identity's claim changes nothing
-- and is refused (unless ARGV[2] allows takeover across identities). A record without an
-- identity (written before owners were recorded) belongs to nobody.
-- Clean Start ends the stored session here, in the same step: no later write of an older
-- incarnation lands in between, and the CONNECT needs no second round trip.
-- KEYS vary: ARGV[3] leading keys (0 or 1), then 8 per client, in the order of ARGV
-- KEYS[1] (when ARGV[3] is 1) the claiming member's reaper index SET: every client id is
--   added first, so the index is a superset of what the member owns. A Redis Cluster keeps it
--   in another slot than the clients': there the caller adds them before (ARGV[3] = 0)
-- then per client, from base b = ARGV[3] + 8 * (i - 1):
--   KEYS[b+1] client owner HASH (node, epoch, online, identity)
--   KEYS[b+2] client will HASH (rec, epoch, delayS, expiryS, dueAt)
--   KEYS[b+3] session HASH (exists while a persistent session is stored)
--   KEYS[b+4] .. KEYS[b+8] the session's subscriptions, pending, pending state, incoming
--   QoS 2 and seen ids (deleted with the session on Clean Start)
-- ARGV[1] claiming node member id
-- ARGV[2] takeover across identities allowed: '1' or '0'
-- ARGV[3] leading index keys: 1 or 0
-- then per client, 6 values: client id, clean start ('1'/'0'), new will record (encoded
--   WillRecord, '' for none), new will delay (s), new session expiry interval (s), claiming
--   identity (auth/session-owner.ts)
-- Returns one reply per client, in order, each
--   {'ok', epoch, previousNode, previousOnline ('1'/'0'), oldWill, oldWillOutcome, oldWillEpoch}
--   oldWill: the encoded record to fire now, or '' ; oldWillOutcome: 'none'|'fire'|'cancelled'
--   | {'not_owner'} when another identity holds the client id (nothing was changed for it)
local member = ARGV[1]
local anyIdentity = ARGV[2] == '1'
local lead = tonumber(ARGV[3])
local n = (#KEYS - lead) / 8
if lead == 1 then
  local ids = {}
  for i = 1, n do ids[i] = ARGV[3 + 6 * (i - 1) + 1] end
  redis.call('SADD', KEYS[1], unpack(ids))
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function claim(k, a)
  local owner, willKey, session = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local clean, rec, delayS, expiryS, identity = ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  local prev = redis.call('HMGET', owner, 'node', 'online', 'identity')
  if not anyIdentity and prev[3] and prev[3] ~= identity then
    if prev[2] == '1' or redis.call('EXISTS', willKey) == 1 or redis.call('EXISTS', session) == 1 then
      return {'not_owner'}
    end
  end
  local epoch = redis.call('HINCRBY', owner, 'epoch', 1)
  redis.call('HSET', owner, 'node', member, 'online', '1', 'identity', identity)

  local fire = ''
  local outcome = 'none'
  local old = redis.call('HMGET', willKey, 'rec', 'delayS', 'expiryS', 'dueAt', 'epoch')
  if old[1] then
    local due = tonumber(old[4])
    if clean == '1' or tonumber(old[2]) == 0 or tonumber(old[3]) == 0 or (due and due <= now) then
      fire = old[1]
      outcome = 'fire'
    else
      outcome = 'cancelled'
    end
    redis.call('DEL', willKey)
  end
  if rec ~= '' then
    redis.call('HSET', willKey, 'rec', rec, 'epoch', epoch, 'delayS', delayS, 'expiryS', expiryS)
  end
  if clean == '1' then
    redis.call('DEL', session, KEYS[k + 4], KEYS[k + 5], KEYS[k + 6], KEYS[k + 7], KEYS[k + 8])
  end
  return {'ok', epoch, prev[1] or '', prev[2] or '0', fire, outcome, old[5] or '0'}
end

local replies = {}
for i = 1, n do
  replies[i] = claim(lead + 8 * (i - 1), 3 + 6 * (i - 1))
end
return replies

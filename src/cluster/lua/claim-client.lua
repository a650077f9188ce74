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
-- A resume (a persistent session, not Clean Start, with no copy on the claiming node) fences,
-- loads and keeps the stored session in the same step, as session-fence, session-load,
-- session-save (of a session just restored, or of a new empty one) and session-change
-- 'expire' '' (PERSIST) did one after another: a fleet reconnecting to one node does its whole
-- Redis part of a CONNECT in one call per batch instead of five calls per client.
-- KEYS vary: ARGV[3] leading keys (0 or 1), then, when ARGV[4] is '' (a Redis Cluster: one
-- client per call, its keys declared for routing), 8 per client in the order of the clients
-- KEYS[1] (when ARGV[3] is 1) the claiming member's reaper index SET: every client id is
--   added first, so the index is a superset of what the member owns. A Redis Cluster keeps it
--   in another slot than the clients': there the caller adds them before (ARGV[3] = 0)
-- then per client, from base b = ARGV[3] + 8 * (i - 1) (or built as ARGV[4] .. id .. ending):
--   KEYS[b+1] client owner HASH (node, epoch, online, identity)
--   KEYS[b+2] client will HASH (rec, epoch, delayS, expiryS, dueAt)
--   KEYS[b+3] session HASH (exists while a persistent session is stored)
--   KEYS[b+4] .. KEYS[b+8] the session's subscriptions, pending, pending state, incoming
--   QoS 2 and seen ids (deleted with the session on Clean Start, read on a resume)
-- ARGV[1] claiming node member id
-- ARGV[2] takeover across identities allowed: '1' or '0'
-- ARGV[3] leading index keys: 1 or 0
-- ARGV[4] '' (the clients' keys are in KEYS), or on one Redis the text of each client key
--   before the client id (keys.ts claimClientKeyParts): the script builds the keys, so a
--   client costs the caller 7 arguments, not 15
-- ARGV[5] with ARGV[4]: the eight keys' endings after the client id, space-separated, in the
--   order above; else ''
-- then per client, 7 values from ARGV[6]: client id, clean start ('1'/'0'), new will record
--   (encoded WillRecord, '' for none), new will delay (s), new session expiry interval (s),
--   claiming identity (auth/session-owner.ts), resume (only with clean start '0' and an
--   expiry above 0; '0' none): '1' fence, load and keep the stored session under the new epoch
--   and expiry; '2' (the claiming node holds the session's copy and saves it whole after the
--   claim) only mark it as this epoch's claim, its epoch untouched (the copy's own appends in
--   flight still land); either way the session hash gets claim = the new epoch, and
--   session-save.lua of that epoch ('held') writes only while the mark is still there
-- Returns one reply per client, in order, each
--   {'ok', epoch, previousNode, previousOnline ('1'/'0'), oldWill, oldWillOutcome, oldWillEpoch,
--    stored, ...}
--   oldWill: the encoded record to fire now, or '' ; oldWillOutcome: 'none'|'fire'|'cancelled'
--   stored: '' (no resume asked) | 'none' (no stored session: an empty one is stored now)
--     | 'stale' (a newer epoch is stored: nothing of the session changed) | 'marked' (resume
--     '2': the stored session, or an empty one stored now, is marked) | 'ok' followed by
--     the session as session-load.lua returns it after its 'ok' (epoch, expiryS, subscriptions,
--     pending, pending state, incoming QoS 2, seen ids)
--   | {'not_owner'} when another identity holds the client id (nothing was changed for it)
local member = ARGV[1]
local anyIdentity = ARGV[2] == '1'
local lead = tonumber(ARGV[3])
local head = ARGV[4]
local ends = {}
for e in string.gmatch(ARGV[5], '%S+') do ends[#ends + 1] = e end
local PER = 7
local n = (#ARGV - 5) / PER
if lead == 1 then
  local ids = {}
  for i = 1, n do ids[i] = ARGV[5 + PER * (i - 1) + 1] end
  redis.call('SADD', KEYS[1], unpack(ids))
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- the i-th client's eight keys, in the order of the header
local function keysOf(i, id)
  local ks = {}
  if head ~= '' then
    for j = 1, 8 do ks[j] = head .. id .. ends[j] end
  else
    local b = lead + 8 * (i - 1)
    for j = 1, 8 do ks[j] = KEYS[b + j] end
  end
  return ks
end

-- a new empty session, as session-save.lua stores one (the seen ids are kept), marked as
-- this epoch's claim
local function emptySession(ks, epoch, expiryS)
  local session = ks[3]
  local seq = redis.call('HGET', session, 'seq') or '0'
  redis.call('DEL', session, ks[4], ks[5], ks[6], ks[7])
  redis.call('HSET', session, 'epoch', epoch, 'expiryS', expiryS, 'seq', seq, 'claim', epoch)
end

-- the stored session of a resume ('1', load): fenced at the new epoch (an older incarnation's
-- appends are refused from now on), read, then kept under the new epoch and expiry, without a
-- time to live while connected. Of a reconnect to the node holding its copy ('2'): only
-- marked as this epoch's claim, its epoch untouched (the copy's appends in flight still land;
-- the copy is saved whole after the claim). Either way a newer incarnation's is left alone,
-- and none stored gets an empty one. The outcome goes into the client's reply from reply[8] on
local function resume(ks, epoch, expiryS, reply, load)
  local session = ks[3]
  local stored = redis.call('HGET', session, 'epoch')
  if stored and tonumber(stored) > epoch then
    reply[8] = 'stale'
    return
  end
  if not stored then
    emptySession(ks, epoch, expiryS)
    reply[8] = load and 'none' or 'marked'
  elseif not load then
    redis.call('HSET', session, 'claim', epoch)
    reply[8] = 'marked'
    return
  else
    redis.call('HSET', session, 'epoch', epoch, 'claim', epoch)
    reply[8] = 'ok'
    reply[9] = epoch
    reply[10] = redis.call('HGET', session, 'expiryS')
    reply[11] = redis.call('HGETALL', ks[4])
    reply[12] = redis.call('HGETALL', ks[5])
    reply[13] = redis.call('HGETALL', ks[6])
    reply[14] = redis.call('HGETALL', ks[7])
    reply[15] = redis.call('ZRANGE', ks[8], 0, -1)
    redis.call('HSET', session, 'expiryS', expiryS)
  end
  if load then
    for j = 3, 8 do redis.call('PERSIST', ks[j]) end
  end
end

local function claim(i)
  local a = 5 + PER * (i - 1)
  local ks = keysOf(i, ARGV[a + 1])
  local owner, willKey, session = ks[1], ks[2], ks[3]
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
  local reply = {'ok', epoch, prev[1] or '', prev[2] or '0', fire, outcome, old[5] or '0', ''}
  if clean == '1' then
    redis.call('DEL', session, ks[4], ks[5], ks[6], ks[7], ks[8])
  elseif (ARGV[a + 7] == '1' or ARGV[a + 7] == '2') and tonumber(expiryS) > 0 then
    resume(ks, epoch, expiryS, reply, ARGV[a + 7] == '1')
  end
  return reply
end

local replies = {}
for i = 1, n do
  replies[i] = claim(i)
end
return replies

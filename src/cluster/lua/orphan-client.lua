-- A survivor that won reap(deadMember) processes clients the dead member owned, several per
-- call (a batch of the dead member's index): 10,000 wills of a crashed node go in a few dozen
-- calls, not one round trip and one command each. Nothing happens to a client unless its
-- owner is still that member (it may have reconnected elsewhere). The client goes offline,
-- owned (offline) by the reaper, which adopts its persistent session; its will is scheduled
-- exactly as on an abnormal disconnect (an already scheduled one keeps its dueAt and is
-- re-reported, for the due index). The claim is a new incarnation: the owner's epoch goes up
-- by one, and a stored session is fenced at it, so whatever the dead member still writes for
-- the client under the old epoch is refused as stale — a member reaped while it still served
-- its clients (the promoted replica of a Redis failover lacked its latest renewals) or commands
-- it queued while Redis was away that run after the reaper loaded the session. Before, they
-- landed behind the reaper's load at the same epoch: the adopted copy lacked them, and a QoS 2
-- PUBLISH the dead member had routed was routed again under a new id when the client
-- retransmitted it to the reaper (delivered twice). The will record keeps the epoch it was
-- registered under. Each reply says whether the client has a stored persistent session: the
-- reaper loads only those (a fleet of clean sessions costs no session reads).
-- The claim's token is kept in the owner record (with the epoch it took), and a fired will in
-- the client's marker for a minute, so the same call run again (ioredis re-sends a script
-- whose reply died with its connection) answers as the first run did instead of 'not_owner':
-- otherwise the fired wills of the whole batch would be lost and the scheduled ones never
-- enter the due index.
-- KEYS vary: ARGV[3] leading keys (0 or 1), then, when ARGV[5] is '' (a Redis Cluster: one
-- client per call, its keys declared for routing), 4 per client in the order of the ids
-- KEYS[1] (when ARGV[3] is 1) the reaper's own index SET: every client id is added first, so
--   the index is a superset of what the reaper owns. A Redis Cluster keeps it in another slot
--   than the clients': there the caller adds them before (ARGV[3] = 0)
-- then per client, from base b = ARGV[3] + 4 * (i - 1) (or built as ARGV[5] .. id .. ending):
--   KEYS[b+1] client owner HASH (node, epoch, online, identity; orphan = "<token>:<epoch>" of
--     the last orphan claim)
--   KEYS[b+2] client will HASH (rec, epoch, delayS, expiryS, dueAt)
--   KEYS[b+3] client's will-claim marker HASH (orphan, orphanRec, orphanWillEpoch: the will
--     this script fired; token and rec are claim-due-will's; expires)
--   KEYS[b+4] session HASH (exists while a persistent session is stored; its epoch is set to
--     the claim's)
-- ARGV[1] dead node member id
-- ARGV[2] reaper member id
-- ARGV[3] leading index keys: 1 or 0
-- ARGV[4] claim token, unique per batch (one call)
-- ARGV[5] '' (the clients' keys are in KEYS), or on one Redis the text of each client key
--   before the client id (keys.ts orphanClientKeyParts): the script builds the keys, so a
--   batch of 250 clients is 257 arguments, not 1,257
-- ARGV[6] with ARGV[5]: the four keys' endings after the client id, space-separated, in the
--   order above (owner, will, marker, session); else ''
-- then per client, 1 value: ARGV[6 + i] client id
-- Returns one reply per client, in order, each (session: 1 when a persistent session is stored, else 0)
--   {'not_owner'} | {'none', session} | {'fire', rec, willEpoch, session} | {'scheduled', dueAt, willEpoch, session}
--   | {'not_owner', rec, willEpoch}: a re-sent claim whose client reconnected since the first
--   run took its will: the caller still fires it (nobody else can)
local dead, reaper, token = ARGV[1], ARGV[2], ARGV[4]
local lead = tonumber(ARGV[3])
local head = ARGV[5]
local ends = {}
for e in string.gmatch(ARGV[6], '%S+') do ends[#ends + 1] = e end
local n = #ARGV - 6
if lead == 1 then
  local ids = {}
  for i = 1, n do ids[i] = ARGV[6 + i] end
  redis.call('SADD', KEYS[1], unpack(ids))
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokenAt = token .. ':'

-- the i-th client's keys: owner, will, will-claim marker, session
local function keysOf(i)
  if head ~= '' then
    local base = head .. ARGV[6 + i]
    return base .. ends[1], base .. ends[2], base .. ends[3], base .. ends[4]
  end
  local b = lead + 4 * (i - 1)
  return KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 4]
end

local function orphan(i)
  local owner, willKey, marker, sessionKey = keysOf(i)
  local function session() return redis.call('EXISTS', sessionKey) end
  local o = redis.call('HMGET', owner, 'node', 'epoch', 'orphan')
  if o[1] ~= dead then
    -- not the dead member's: it connected elsewhere, or this claim ran before (o[3] is its token)
    if not o[3] or string.sub(o[3], 1, #tokenAt) ~= tokenAt then return {'not_owner'} end
    -- the same incarnation, still the reaper's: nothing happened since the first run
    local same = o[1] == reaper and o[3] == tokenAt .. (o[2] or '')
    local m = redis.call('HMGET', marker, 'orphan', 'orphanRec', 'orphanWillEpoch')
    if m[1] == token and m[2] then
      if same then return {'fire', m[2], m[3], session()} end
      return {'not_owner', m[2], m[3]}
    end
    if not same then return {'not_owner'} end
    -- the first run's outcome again: the will record (or its absence) tells it
  else
    local epoch = redis.call('HINCRBY', owner, 'epoch', 1)
    redis.call('HSET', owner, 'online', '0', 'node', reaper, 'orphan', tokenAt .. epoch)
    if session() == 1 then redis.call('HSET', sessionKey, 'epoch', epoch) end
  end
  local w = redis.call('HMGET', willKey, 'rec', 'epoch', 'delayS', 'expiryS', 'dueAt')
  if not w[1] then return {'none', session()} end
  if w[5] then return {'scheduled', tonumber(w[5]), w[2], session()} end
  local delay = math.min(tonumber(w[3]), tonumber(w[4]))
  if delay <= 0 then
    redis.call('DEL', willKey)
    redis.call('HSET', marker, 'orphan', token, 'orphanRec', w[1], 'orphanWillEpoch', w[2])
    redis.call('PEXPIRE', marker, 60000)
    return {'fire', w[1], w[2], session()}
  end
  local due = now + delay * 1000
  redis.call('HSET', willKey, 'dueAt', due)
  return {'scheduled', due, w[2], session()}
end

local replies = {}
for i = 1, n do
  replies[i] = orphan(i)
end
return replies

-- Replaces a client's whole persistent session (CONNECT of a new incarnation, or a full
-- checkpoint). Refused when a newer incarnation already saved. Pending messages get new
-- sequence numbers (the counter never goes back, so an old ack cannot hit a new entry).
-- KEYS[1] session HASH (epoch, expiryS, seq; claim: see the last ARGV)
-- KEYS[2] subscriptions HASH
-- KEYS[3] pending HASH (seq -> encoded PendingMessage)
-- KEYS[4] pending state HASH (seq -> "packetId:released")
-- KEYS[5] incoming QoS 2 HASH (packet id -> id of a message not routed yet, or '')
-- KEYS[6] seen message ids ZSET: kept (the ids stay seen across incarnations); the ids of
--   the pending messages written here are added (a checkpoint after failed appends)
-- ARGV[1] epoch, ARGV[2] expiry interval s,
-- ARGV[3] n subscriptions, then n pairs (key, encoded subscription),
-- then m = pending count, then m triples (encoded pending, state or '', message id or ''),
-- then q = incoming QoS 2 count, then q pairs (packet id, unrouted message id or ''),
-- then now (ms, the score of ids added to the seen set),
-- then (last) '1' when the session must still carry this epoch's claim mark (field claim,
--   set by claim-client.lua for a resume or a reconnect to the node holding the session's
--   copy): a session whose mark is gone or another was ended (a Clean Start, also one claimed
--   in the same claim call) or claimed by a newer incarnation since, and must not be written
--   back; else ''
-- Returns {'ok', firstSeq} (pending i has seq firstSeq + i) | {'stale'}
local stored = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '-1')
local epoch = tonumber(ARGV[1])
if stored > epoch then return {'stale'} end
if ARGV[#ARGV] == '1' and tonumber(redis.call('HGET', KEYS[1], 'claim') or '-1') ~= epoch then return {'stale'} end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
local i = 3
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2
end
local m = tonumber(ARGV[i]); i = i + 1
local first = seq + 1
local ids = {}
for _ = 1, m do
  seq = seq + 1
  redis.call('HSET', KEYS[3], seq, ARGV[i])
  if ARGV[i + 1] ~= '' then redis.call('HSET', KEYS[4], seq, ARGV[i + 1]) end
  if ARGV[i + 2] ~= '' then ids[#ids + 1] = ARGV[i + 2] end
  i = i + 3
end
local q = tonumber(ARGV[i]); i = i + 1
for _ = 1, q do
  redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 1]); i = i + 2
end
local now = ARGV[i]
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[6], 'NX', now, id) end
redis.call('HSET', KEYS[1], 'epoch', epoch, 'expiryS', ARGV[2], 'seq', seq)
return {'ok', first}

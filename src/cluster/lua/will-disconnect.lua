-- Abnormal disconnect seen by the owning node. Only the current incarnation may act.
-- Delay 0 (after min with session expiry): the will is deleted and returned, the caller
-- publishes it. Otherwise dueAt = now + min(delay, session expiry) (Redis clock) is stored
-- and the caller adds the client to the due-will index (a separate key, an index only).
-- KEYS[1] client owner HASH
-- KEYS[2] client will HASH
-- ARGV[1] caller's epoch
-- ARGV[2] session expiry interval now in force, seconds
-- Returns {'stale'} | {'none'} | {'fire', rec, willEpoch} | {'scheduled', dueAt, willEpoch}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return {'stale'} end
redis.call('HSET', KEYS[1], 'online', '0')
local w = redis.call('HMGET', KEYS[2], 'rec', 'epoch', 'delayS', 'dueAt')
if not w[1] or w[2] ~= ARGV[1] then return {'none'} end
if w[4] then return {'scheduled', tonumber(w[4]), w[2]} end
local delay = math.min(tonumber(w[3]), tonumber(ARGV[2]))
if delay <= 0 then
  redis.call('DEL', KEYS[2])
  return {'fire', w[1], w[2]}
end
local due = now + delay * 1000
redis.call('HSET', KEYS[2], 'dueAt', due, 'expiryS', ARGV[2])
return {'scheduled', due, w[2]}

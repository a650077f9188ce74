-- A survivor that won reap(deadMember) processes one client the dead member owned. Nothing
-- happens unless the owner is still that member (the client may have reconnected elsewhere).
-- The client goes offline, owned (offline) by the reaper, which adopts its persistent session;
-- its will is scheduled exactly as on an abnormal disconnect (an already scheduled one keeps
-- its dueAt and is re-reported, for the due index). The epoch does not change.
-- KEYS[1] client owner HASH
-- KEYS[2] client will HASH
-- ARGV[1] dead node member id
-- ARGV[2] reaper member id
-- Returns {'not_owner'} | {'none'} | {'fire', rec, willEpoch} | {'scheduled', dueAt, willEpoch}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[1] then return {'not_owner'} end
redis.call('HSET', KEYS[1], 'online', '0', 'node', ARGV[2])
local w = redis.call('HMGET', KEYS[2], 'rec', 'epoch', 'delayS', 'expiryS', 'dueAt')
if not w[1] then return {'none'} end
if w[5] then return {'scheduled', tonumber(w[5]), w[2]} end
local delay = math.min(tonumber(w[3]), tonumber(w[4]))
if delay <= 0 then
  redis.call('DEL', KEYS[2])
  return {'fire', w[1], w[2]}
end
local due = now + delay * 1000
redis.call('HSET', KEYS[2], 'dueAt', due)
return {'scheduled', due, w[2]}

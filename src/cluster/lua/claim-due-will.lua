-- A node sweeping the due-will index claims one will. Exactly one caller gets it: the
-- record is deleted in the same step that returns it.
-- KEYS[1] client will HASH
-- ARGV[1] epoch of the will, as recorded in the index entry
-- Returns {'fire', rec} | {'not_due', dueAt} | {'none'} (gone, other epoch, or not scheduled:
-- the index entry is stale and can be dropped)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = redis.call('HMGET', KEYS[1], 'rec', 'epoch', 'dueAt')
if not w[1] or w[2] ~= ARGV[1] or not w[3] then return {'none'} end
if tonumber(w[3]) > now then return {'not_due', tonumber(w[3])} end
redis.call('DEL', KEYS[1])
return {'fire', w[1]}

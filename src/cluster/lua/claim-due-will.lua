-- A node sweeping the due-will index claims one will. Exactly one claim gets it: the record
-- is deleted in the same step that returns it. The claim's token and the record are kept for
-- a minute, so the same claim run again (ioredis re-sends a script whose reply died with its
-- connection) answers 'fire' again instead of 'none': otherwise the will would never fire.
-- KEYS[1] client will HASH
-- KEYS[2] client's will-claim marker HASH (token, rec; expires)
-- ARGV[1] epoch of the will, as recorded in the index entry
-- ARGV[2] claim token, unique per claim
-- Returns {'fire', rec} | {'not_due', dueAt} | {'none'} (gone, other epoch, or not scheduled:
-- the index entry is stale and can be dropped)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = redis.call('HMGET', KEYS[1], 'rec', 'epoch', 'dueAt')
if not w[1] or w[2] ~= ARGV[1] or not w[3] then
  local m = redis.call('HMGET', KEYS[2], 'token', 'rec')
  if m[1] == ARGV[2] and m[2] then return {'fire', m[2]} end
  return {'none'}
end
if tonumber(w[3]) > now then return {'not_due', tonumber(w[3])} end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], 'token', ARGV[2], 'rec', w[1])
redis.call('PEXPIRE', KEYS[2], 60000)
return {'fire', w[1]}

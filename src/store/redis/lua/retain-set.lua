-- Stores or (empty message) deletes the retained message of a topic, fenced by writer
-- incarnation, and announces the change on the retained channel from inside the script so
-- that every node sees changes in the order Redis applied them.
-- Fencing rule: a write by (clientId C, epoch e) is refused when the topic's last write
-- (message or delete, deletes are remembered as tombstones for ARGV[6] ms) was made by the
-- same C with an epoch greater than e. Writes by other clients are last-writer-wins;
-- broker-originated writes (C = '') are never fenced. An unfenced write (ARGV[3] = '') is
-- always applied and keeps the recorded epoch of the same writer.
-- KEYS[1] retained messages HASH (topic -> "<seq>\n<encoded message>")
-- KEYS[2] retained writers HASH (topic -> "<epoch>\n<clientId>")
-- KEYS[3] retained tombstones ZSET (topic -> deletedAt ms)
-- KEYS[4] retained change counter
-- ARGV[1] topic
-- ARGV[2] writer client id ('' = broker)
-- ARGV[3] writer epoch ('' = unfenced)
-- ARGV[4] encoded message, '' to delete
-- ARGV[5] channel to announce on
-- ARGV[6] how long deletes keep fencing, ms
-- Returns {'ok', seq} (seq 0: delete of nothing, nothing announced) | {'fenced', storedEpoch}
-- Announces "S<seq>\n<encoded message>" or "D<seq>\n<topic>".
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local topic = ARGV[1]
local writer = ARGV[2]

local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[6]), 'LIMIT', 0, 16)
for _, tp in ipairs(old) do
  if redis.call('HEXISTS', KEYS[1], tp) == 0 then redis.call('HDEL', KEYS[2], tp) end
  redis.call('ZREM', KEYS[3], tp)
end

local epoch = 0
local meta = redis.call('HGET', KEYS[2], topic)
if meta then
  local nl = string.find(meta, '\n', 1, true)
  local storedEpoch = tonumber(string.sub(meta, 1, nl - 1))
  local storedWriter = string.sub(meta, nl + 1)
  if writer ~= '' and storedWriter == writer then
    if ARGV[3] == '' then
      epoch = storedEpoch
    elseif storedEpoch > tonumber(ARGV[3]) then
      return {'fenced', storedEpoch}
    end
  end
end
if ARGV[3] ~= '' and writer ~= '' then epoch = math.max(epoch, tonumber(ARGV[3])) end

if ARGV[4] == '' then
  local existed = redis.call('HDEL', KEYS[1], topic)
  if writer ~= '' then
    redis.call('HSET', KEYS[2], topic, epoch .. '\n' .. writer)
    redis.call('ZADD', KEYS[3], now, topic)
  else
    redis.call('HDEL', KEYS[2], topic)
  end
  if existed == 0 then return {'ok', 0} end
  local seq = redis.call('INCR', KEYS[4])
  redis.call('PUBLISH', ARGV[5], 'D' .. seq .. '\n' .. topic)
  return {'ok', seq}
end

local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], topic, seq .. '\n' .. ARGV[4])
redis.call('HSET', KEYS[2], topic, epoch .. '\n' .. writer)
redis.call('ZREM', KEYS[3], topic)
redis.call('PUBLISH', ARGV[5], 'S' .. seq .. '\n' .. ARGV[4])
return {'ok', seq}

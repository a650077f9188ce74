-- A new incarnation fences the stored session before loading it: from now on the older
-- incarnation's writes (appendPending of a copy held by another node) are refused as stale,
-- so nothing can be appended between this node's load and its save.
-- KEYS[1] session HASH
-- ARGV[1] new epoch
-- Returns {'ok'} | {'none'} (no stored session) | {'stale'} (a newer epoch is stored)
local stored = redis.call('HGET', KEYS[1], 'epoch')
if not stored then return {'none'} end
if tonumber(stored) > tonumber(ARGV[1]) then return {'stale'} end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1])
return {'ok'}

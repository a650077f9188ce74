-- A node that lost its lease and joined again as a new member keeps the sessions it still
-- holds, unless a reaper took them first: the client's owner moves from the old member to
-- the new one. The epoch does not change (the session is the same incarnation).
-- KEYS[1] client owner HASH (node, epoch, online)
-- ARGV[1] the node's old member id
-- ARGV[2] its new member id
-- Returns {'ok', online ('1'/'0'), epoch} (also when the new member owns it already: a
-- connection since the rejoin) | {'moved'} (owned by another member now: a reaper, or a
-- newer connection elsewhere)
local h = redis.call('HMGET', KEYS[1], 'node', 'online', 'epoch')
if h[1] ~= ARGV[1] and h[1] ~= ARGV[2] then return {'moved'} end
redis.call('HSET', KEYS[1], 'node', ARGV[2])
return {'ok', h[2] or '0', h[3] or '0'}

-- Console (fleet view): a connection of a client ended. Recorded only for the incarnation the
-- info record describes: an older connection ending late must not mark a newer one ended.
-- KEYS[1] client info HASH (epoch, node, username, roles, proto, connectedAt, endedAt, end)
-- ARGV[1] epoch of the connection that ended
-- ARGV[2] when, ms since epoch
-- ARGV[3] 'normal' (DISCONNECT that discards the will) or 'abnormal'
-- Returns 1 when recorded, 0 when the record is of another incarnation (or absent)
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'endedAt', ARGV[2], 'end', ARGV[3])
return 1

-- Makes a bus member's stream (and its consumer group) again after it vanished, only while the
-- member's lease is still in the leases ZSET: Redis lost the stream, not the member. Without
-- the lease the member was reaped, and a stream made again would take forwards that
-- NOMKSTREAM refuses for a dead member, acknowledged to their publishers and read by nobody.
-- One script, so a reap cannot fall between the check and the create (one Redis only: in a
-- Redis Cluster the two keys are in different slots and bus.ts checks and creates apart).
-- KEYS[1] node leases ZSET
-- KEYS[2] the member's bus stream
-- ARGV[1] node member id
-- ARGV[2] consumer group name
-- Returns {status}: 'created' (stream and group made), 'exists' (the group is there: someone
-- made it first), 'gone' (no lease, the member was reaped: nothing made).
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {'gone'} end
local ok = redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[2], '$', 'MKSTREAM')
if type(ok) == 'table' and ok.err then
  if string.find(ok.err, 'BUSYGROUP', 1, true) then return {'exists'} end
  return redis.error_reply(ok.err)
end
return {'created'}

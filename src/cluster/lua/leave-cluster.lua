-- A node leaving on purpose (shutdown): marks its lease expired so that a survivor reaps it
-- at once (its clients' wills, routes and bus stream are handled by the normal reap path).
-- Only an existing lease is touched, so a reaped node cannot resurrect itself.
-- KEYS[1] node leases ZSET
-- ARGV[1] node member id
-- Returns {status}: 'ok' (marked expired) or 'gone' (no lease).
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 0, ARGV[1])
  return {'ok'}
end
return {'gone'}

-- Reads ahead, for a survivor, the will records a member's reaping would fire, while the
-- member is overdue but not yet dead (ClientRegistry.prefetchWills): one step of an SSCAN of
-- its client index and the will of each id found, in one call, so reading 10,000 records costs
-- the survivor about ten calls, not 10,000 commands. Read-only: nothing is claimed, the
-- reaping's orphan-client call still decides what fires. On one Redis only (the will keys are
-- built from the ids, like orphan-client's).
-- KEYS[1] the member's client index SET (keys.ts nodeClients)
-- ARGV[1] SSCAN cursor ('0' to begin)
-- ARGV[2] SSCAN COUNT
-- ARGV[3] the text of a client's will HASH key before its client id (keys.ts willKeyParts)
-- ARGV[4] the text after the client id
-- Returns {next cursor, clientId, rec, clientId, rec, ...}: of the ids this step found, those
--   whose will orphan-client would fire at once (delay 0, not already scheduled)
local scan = redis.call('SSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local out = {scan[1]}
local head, tail = ARGV[3], ARGV[4]
for _, id in ipairs(scan[2]) do
  local w = redis.call('HMGET', head .. id .. tail, 'rec', 'delayS', 'expiryS', 'dueAt')
  -- as orphan-client.lua decides: fired when min(delayS, expiryS) <= 0 and not scheduled
  if w[1] and not w[4] and math.min(tonumber(w[2]), tonumber(w[3])) <= 0 then
    out[#out + 1] = id
    out[#out + 1] = w[1]
  end
end
return out

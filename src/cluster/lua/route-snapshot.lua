-- A consistent read of one member's filter set with its version.
-- KEYS[1] member's route SET
-- KEYS[2] member's route version counter
-- ARGV: none
-- Returns {'ok', version, filter...}
local out = {'ok', tonumber(redis.call('GET', KEYS[2]) or '0')}
for _, f in ipairs(redis.call('SMEMBERS', KEYS[1])) do out[#out + 1] = f end
return out

-- Changes one node member's published filter set and announces the change with the set's
-- new version, in the order Redis applied it (mirrors drop announcements older than their
-- snapshot). Only the member itself adds/removes; a reaper clears a dead member.
-- KEYS[1] member's route SET (filters, shared ones as "$share/<group>/<filter>")
-- KEYS[2] member's route version counter
-- ARGV[1] 'add' | 'remove' | 'clear'
-- ARGV[2] filter ('' for clear)
-- ARGV[3] member id
-- ARGV[4] channel to announce on
-- Returns {'ok', version, changed (0/1)}
-- Announces "<A|R|C><version>\n<member>\n<filter>".
local changed
if ARGV[1] == 'add' then
  changed = redis.call('SADD', KEYS[1], ARGV[2])
elseif ARGV[1] == 'remove' then
  changed = redis.call('SREM', KEYS[1], ARGV[2])
else
  changed = redis.call('DEL', KEYS[1])
end
if changed == 0 and ARGV[1] ~= 'clear' then
  return {'ok', tonumber(redis.call('GET', KEYS[2]) or '0'), 0}
end
local v = redis.call('INCR', KEYS[2])
local op = 'A'
if ARGV[1] == 'remove' then op = 'R' elseif ARGV[1] == 'clear' then op = 'C' end
redis.call('PUBLISH', ARGV[4], op .. v .. '\n' .. ARGV[3] .. '\n' .. ARGV[2])
if ARGV[1] == 'clear' then redis.call('PEXPIRE', KEYS[2], 600000) end
return {'ok', v, 1}

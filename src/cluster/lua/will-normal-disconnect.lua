-- DISCONNECT with reason 0x00 (or 3.1.1 DISCONNECT) on the owning node: the will is
-- discarded without being published [MQTT-3.1.2-10]. Only the current incarnation may act.
-- One call settles the disconnects of several clients (those of one round trip), in order.
-- KEYS vary: 2 per client, in the order of ARGV
-- KEYS[1] client owner HASH (KEYS[2i-1] for client i)
-- KEYS[2] client will HASH (KEYS[2i])
-- ARGV[1] caller's epoch (ARGV[i] for client i)
-- Returns one reply per client, in order: {'stale'} | {'cancelled'} | {'none'}
local replies = {}
for i = 1, #ARGV do
  local owner, will, epoch = KEYS[2 * i - 1], KEYS[2 * i], ARGV[i]
  if redis.call('HGET', owner, 'epoch') ~= epoch then
    replies[i] = {'stale'}
  else
    redis.call('HSET', owner, 'online', '0')
    if redis.call('HGET', will, 'epoch') == epoch then
      redis.call('DEL', will)
      replies[i] = {'cancelled'}
    else
      replies[i] = {'none'}
    end
  end
end
return replies

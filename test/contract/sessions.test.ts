import { after, before } from 'node:test';
import { sessionsContract } from './sessions.contract.js';
import { MemorySessionStore } from '../../src/store/memory/sessions.js';
import { RedisSessionStore } from '../../src/store/redis/sessions.js';
import { VigilRedis } from '../../src/cluster/redis.js';
import { ClusterKeys } from '../../src/cluster/keys.js';
import { randomPrefix, startRedis, type TestRedis } from '../helpers/redis.js';
import type { Clock } from '../../src/clock.js';

sessionsContract('memory', async () => {
  let now = 1_000_000;
  const clock: Clock = { now: () => now, setTimeout: () => ({ cancel() {} }) };
  return {
    store: new MemorySessionStore(clock),
    close: async () => {},
    advance: async (ms) => {
      now += ms;
    },
  };
});

let single: TestRedis;
before(async () => {
  single = await startRedis();
});
after(() => single?.stop());
sessionsContract('Redis', async () => {
  const redis = new VigilRedis({ target: { url: single.url } });
  return {
    store: new RedisSessionStore({ redis, keys: new ClusterKeys(randomPrefix('ses')) }),
    close: () => redis.close(),
    advance: (ms) => new Promise((r) => setTimeout(r, ms)),
  };
});

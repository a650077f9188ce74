// The SessionStore contract over Redis, its one implementation (why there is no memory one:
// src/store/types.ts, SessionStore).
import { after, before } from 'node:test';
import { sessionsContract } from './sessions.contract.js';
import { RedisSessionStore } from '../../src/store/redis/sessions.js';
import { VigilRedis } from '../../src/redis/connection.js';
import { StoreKeys } from '../../src/store/redis/keys.js';
import { randomPrefix, startRedis, type TestRedis } from '../helpers/redis.js';

let single: TestRedis;
before(async () => {
  single = await startRedis();
});
after(() => single?.stop());
sessionsContract('Redis', async () => {
  const redis = new VigilRedis({ target: { url: single.url } });
  return {
    store: new RedisSessionStore({ redis, keys: new StoreKeys(randomPrefix('ses')) }),
    close: () => redis.close(),
    advance: (ms) => new Promise((r) => setTimeout(r, ms)),
  };
});

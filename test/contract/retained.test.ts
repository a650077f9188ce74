import { after, before, describe } from 'node:test';
import { retainedContract } from './retained.contract.js';
import { MemoryRetainedStore } from '../../src/store/memory/retained.js';
import { RedisRetainedStore } from '../../src/store/redis/retained.js';
import { VigilRedis, type RedisTarget } from '../../src/redis/connection.js';
import { StoreKeys } from '../../src/store/redis/keys.js';
import { randomPrefix, startRedis, startRedisCluster, type TestRedis, type TestRedisCluster } from '../helpers/redis.js';

retainedContract('memory', async () => ({ store: new MemoryRetainedStore(), close: async () => {} }));

async function redisHarness(target: RedisTarget) {
  const redis = new VigilRedis({ target });
  const store = new RedisRetainedStore({ redis, keys: new StoreKeys(randomPrefix('ret')) });
  await store.start();
  return {
    store,
    async close() {
      await store.stop();
      await redis.close();
    },
  };
}

let single: TestRedis;
before(async () => {
  single = await startRedis();
});
after(() => single?.stop());
retainedContract('Redis', () => redisHarness({ url: single.url }));

describe('Redis Cluster', { timeout: 90000 }, () => {
  let cluster: TestRedisCluster;
  before(async () => {
    cluster = await startRedisCluster();
  });
  after(() => cluster?.stop());
  retainedContract('Redis Cluster', () => redisHarness({ clusterNodes: cluster.nodes }));
});

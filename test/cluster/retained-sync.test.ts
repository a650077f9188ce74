// Retained mirrors on several nodes stay in step with Redis: announcements in Redis order,
// a late-starting node loads everything, a node whose subscription dropped reloads.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { RedisRetainedStore } from '../../src/store/redis/retained.js';
import { Closer, message, newKeys, sleep, waitFor } from './support.js';

describe('retained mirrors across nodes', { timeout: 60000 }, () => {
  let redis: TestRedis;
  const closer = new Closer();
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await closer.closeAll();
    await redis.stop();
  });

  async function node(keys: ReturnType<typeof newKeys>): Promise<RedisRetainedStore> {
    const store = new RedisRetainedStore({ redis: closer.redis({ url: redis.url }), keys });
    await store.start();
    closer.add(store, (s) => s.stop());
    return store;
  }

  const snapshot = (s: RedisRetainedStore) =>
    s
      .match('#', 0)
      .map((m) => `${m.topic}=${m.payload.toString()}`)
      .sort()
      .join(',');

  it('propagates sets and deletes; a node started later loads everything', async () => {
    const keys = newKeys();
    const a = await node(keys);
    const b = await node(keys);
    await a.set(message('x/1', 'one'));
    await b.set(message('x/2', 'two'));
    await waitFor(() => a.count() === 2 && b.count() === 2, 3000, 'both mirrors');
    await a.set(message('x/1', ''));
    await waitFor(() => b.count() === 1, 3000, 'delete propagated');
    const c = await node(keys);
    assert.equal(snapshot(c), 'x/2=two');
  });

  it('converges under concurrent writers', async () => {
    const keys = newKeys();
    const nodes = [await node(keys), await node(keys), await node(keys)];
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 300; i++) {
      const n = nodes[i % 3];
      const topic = `k/${i % 7}`;
      writes.push(n.set(message(topic, i % 11 === 0 ? '' : `v${i}`, { origin: `w${i % 3}` })));
    }
    await Promise.all(writes);
    const late = await node(keys);
    await waitFor(() => nodes.every((n) => snapshot(n) === snapshot(late)), 3000, 'convergence');
  });

  it('reloads after its subscription connection dropped', async () => {
    const keys = newKeys();
    const a = await node(keys);
    const b = await node(keys);
    await a.set(message('r/1', 'before'));
    await waitFor(() => b.count() === 1, 3000, 'first');
    const admin = redis.client();
    await admin.client('KILL', 'TYPE', 'pubsub');
    await a.set(message('r/2', 'during'));
    await a.set(message('r/1', ''));
    await sleep(50);
    await waitFor(() => snapshot(b) === 'r/2=during', 5000, 'reload after reconnect');
  });
});

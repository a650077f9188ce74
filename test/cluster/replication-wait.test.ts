// VigilRedis.replicated(): acknowledgements that wait for Redis WAIT. A real master, and a
// real replica started part-way: without a replica every WAIT times out (counted once per
// WAIT, not per write); with one, the writes of a turn are confirmed by one WAIT; a
// reconnection between the writes and the WAIT fails them (WAIT on a new connection says
// nothing about writes made on the old one).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { VigilRedis, ReplicationTimeoutError } from '../../src/redis/connection.js';
import { createMetrics, type Metrics } from '../../src/metrics.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { waitFor } from './support.js';

let master: TestRedis;
let replica: TestRedis | undefined;
let metrics: Metrics;
let redis: VigilRedis;

async function waitCalls(): Promise<number> {
  const c = master.client();
  const info = String(await c.info('commandstats'));
  c.disconnect();
  return Number(/cmdstat_wait:calls=(\d+)/.exec(info)?.[1] ?? 0);
}

async function timeouts(): Promise<number> {
  return (await metrics.redisWaitTimeoutsTotal.get()).values.reduce((n, v) => n + v.value, 0);
}

before(async () => {
  master = await startRedis();
  metrics = createMetrics('test', { processMetrics: false });
  redis = new VigilRedis({ target: { url: master.url }, metrics, commandTimeoutMs: 10_000, waitReplicas: 1, waitTimeoutMs: 2000 }); // generous: the machine may be loaded
  await waitFor(() => redis.client.status === 'ready', 10_000, 'connected');
});
after(async () => {
  await redis?.close();
  await replica?.stop();
  await master?.stop();
});

describe('acknowledgement after replication (WAIT)', () => {
  test('no replica: the writes of one turn share one WAIT, which times out: rejected, counted once', async () => {
    const before = await waitCalls();
    const since = redis.generation;
    await Promise.all(Array.from({ length: 50 }, (_, i) => redis.client.set(`wait-test:${i}`, 'v')));
    const results = await Promise.allSettled(Array.from({ length: 50 }, () => redis.replicated(since)));
    assert.ok(results.every((r) => r.status === 'rejected' && r.reason instanceof ReplicationTimeoutError), 'every caller is refused');
    assert.equal((await waitCalls()) - before, 1, 'one WAIT for the whole turn');
    assert.equal(await timeouts(), 1, 'one timeout counted');
  });

  test('with a replica: confirmed by one WAIT per turn', async () => {
    replica = await startRedis({ replicaOf: master.port });
    await waitFor(async () => {
      const c = master.client();
      const info = String(await c.info('replication'));
      c.disconnect();
      return /slave0:.*state=online/.test(info);
    }, 20_000, 'replica online');
    const before = await waitCalls();
    const since = redis.generation;
    await Promise.all(Array.from({ length: 100 }, (_, i) => redis.client.set(`wait-test:${i}`, 'w')));
    await Promise.all(Array.from({ length: 100 }, () => redis.replicated(since)));
    assert.equal((await waitCalls()) - before, 1, 'one WAIT for 100 writes');
    const r = replica.client();
    assert.equal(await r.get('wait-test:99'), 'w', 'the replica has the writes');
    r.disconnect();
    // a later turn gets a WAIT of its own
    await redis.client.set('wait-test:later', 'x');
    await redis.replicated(redis.generation);
    assert.equal((await waitCalls()) - before, 2);
  });

  test('the connection changed between the writes and the WAIT: rejected', async () => {
    const since = redis.generation;
    await redis.client.set('wait-test:gen', 'v');
    const failed = await timeouts();
    redis.client.disconnect(true); // reconnects at once
    await waitFor(() => redis.client.status === 'ready' && redis.generation !== since, 10_000, 'reconnected');
    await assert.rejects(redis.replicated(since), ReplicationTimeoutError);
    assert.equal(await timeouts(), failed + 1);
    await redis.replicated(redis.generation); // the new connection confirms its own writes
  });

  test('off (waitReplicas 0): resolves at once, no WAIT sent', async () => {
    const plain = new VigilRedis({ target: { url: master.url } });
    try {
      const before = await waitCalls();
      await plain.client.set('wait-test:off', 'v');
      await plain.replicated(plain.generation);
      assert.equal(await waitCalls(), before);
    } finally {
      await plain.close();
    }
  });
});

// Retained snapshots across nodes: 10,000 retained messages published on one node reach a
// subscriber on another node whole (its mirror of Redis, read by a cursor), with
// VIGIL_MAX_QUEUED at its default, each topic once.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { FleetClient, publishRetained } from '../helpers/fleet.js';

const N = 10_000;
const topicOf = (i: number) => `fleet/${i}/state`;
const payloadOf = (i: number) => `up ${i}`;

describe('retained snapshot of messages published on another node', { timeout: 120000 }, () => {
  let redis: TestRedis;
  let a: VigilNode;
  let b: VigilNode;
  const opened: FleetClient[] = [];
  before(async () => {
    redis = await startRedis();
    const prefix = randomPrefix('rs');
    // a generous lease: this test is about delivery, not failover, and runs on a busy machine
    [a, b] = await Promise.all(['a', 'b'].map((nodeId) => startNode({ redisUrl: redis.url, prefix, nodeId, env: { VIGIL_NODE_TIMEOUT_MS: '5000', VIGIL_HEARTBEAT_MS: '500' } })));
    await waitUntil(async () => (await a.ready()) && (await b.ready()), 10000, 'nodes ready');
  });
  after(async () => {
    for (const c of opened) c.close();
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
  });

  it(`a subscriber on node b gets all ${N} retained messages published on node a, each once`, async () => {
    await publishRetained(a.port, N, topicOf, payloadOf);
    // b's mirror follows Redis through announcements; its gauge is sampled once a second
    await waitUntil(async () => (await b.metric('vigil_retained_messages')) === N, 30000, `node b mirroring ${N} retained messages`);
    const sub = await FleetClient.connect(b.port, 5, { clientId: 'rs-monitor' });
    opened.push(sub);
    await sub.subscribe([{ topic: 'fleet/+/state', qos: 1 }]);
    await sub.topics(N, 60000);
    await waitUntil(async () => (await b.metric('vigil_retained_snapshots_ended_total', { how: 'complete' })) === 1, 10000, 'snapshot complete');
    assert.equal(sub.byTopic.size, N);
    for (let i = 0; i < N; i++) {
      const got = sub.byTopic.get(topicOf(i));
      assert.equal(got?.length, 1, topicOf(i));
      assert.equal(got[0].payload, payloadOf(i));
      assert.equal(got[0].retain, true);
      assert.equal(got[0].qos, 1);
    }
    assert.equal(await b.metric('vigil_messages_dropped_total'), 0);
  });
});

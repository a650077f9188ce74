// Three Vigil processes on one real Redis: the node holding 20 clients with QoS 1 wills
// (3.1.1 and 5.0) is SIGKILLed; a survivor reaps it and every will reaches every
// subscriber on the other nodes exactly once, within VIGIL_NODE_TIMEOUT_MS + 1 s of the kill.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool, sleep, type TestClient } from '../helpers/mqtt.js';

const NODE_TIMEOUT_MS = 1500; // the helper's default VIGIL_NODE_TIMEOUT_MS
const BOUND_MS = NODE_TIMEOUT_MS + 1000;
const WILL_CLIENTS = 20;

let redis: TestRedis;
let victim: VigilNode;
let s1: VigilNode;
let s2: VigilNode;
const clients = new ClientPool();

before(async () => {
  redis = await startRedis();
  const prefix = randomPrefix('wf');
  [victim, s1, s2] = await Promise.all(['v', 's1', 's2'].map((nodeId) => startNode({ redisUrl: redis.url, prefix, nodeId })));
  await waitUntil(async () => (await victim.ready()) && (await s1.ready()) && (await s2.ready()), 5000, 'nodes ready');
});
after(async () => {
  await clients.closeAll();
  await Promise.all([victim?.kill('SIGKILL'), s1?.stop(), s2?.stop()]);
  await redis?.stop();
});

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

describe('wills on node failure', () => {
  test(`SIGKILL of the node holding ${WILL_CLIENTS} clients with wills: every will reaches every subscriber once, within ${BOUND_MS} ms`, async () => {
    const subscribers: { client: TestClient; receivedAt: Map<string, number[]> }[] = [];
    for (const [i, node] of [s1, s2, s1].entries()) {
      const client = await clients.connect(node.url, { protocolVersion: i === 1 ? 4 : 5, clientId: `wf-sub-${i}` });
      const receivedAt = new Map<string, number[]>();
      client.mqtt.on('message', (topic) => receivedAt.set(topic, [...(receivedAt.get(topic) ?? []), Date.now()]));
      await client.mqtt.subscribeAsync('will/#', { qos: 1 });
      subscribers.push({ client, receivedAt });
    }
    await sleep(300); // the routes reach the victim through Redis (wills are published by a survivor anyway)

    const topics: string[] = [];
    for (let i = 0; i < WILL_CLIENTS; i++) {
      const version = i % 2 === 0 ? 4 : 5;
      const topic = `will/${version}/${i}`;
      topics.push(topic);
      await clients.connect(victim.url, { protocolVersion: version, clientId: `wf-dying-${i}`, will: { topic, payload: Buffer.from(`gone ${i}`), qos: 1, retain: false } });
    }
    assert.equal(subscribers.reduce((n, s) => n + s.client.messages.length, 0), 0, 'no will before the kill');

    const killedAt = Date.now();
    await victim.kill('SIGKILL');
    await waitUntil(() => subscribers.every((s) => topics.every((t) => s.receivedAt.has(t))), BOUND_MS + 3000, 'every will at every subscriber');
    await sleep(500); // room for duplicates to show up

    const latencies: number[] = [];
    for (const [i, s] of subscribers.entries()) {
      for (const topic of topics) {
        const times = s.receivedAt.get(topic) ?? [];
        assert.equal(times.length, 1, `subscriber ${i} got the will on ${topic} ${times.length} times`);
        latencies.push(times[0] - killedAt);
      }
      const payloads = s.client.messages.map((m) => m.payload).sort();
      assert.deepEqual(payloads, topics.map((_, n) => `gone ${n}`).sort());
      assert.ok(s.client.messages.every((m) => m.packet.qos === 1), 'delivered at QoS 1');
    }
    latencies.sort((x, y) => x - y);
    const p50 = percentile(latencies, 50);
    const p99 = percentile(latencies, 99);
    console.log(`will failover: ${latencies.length} deliveries, p50 ${p50} ms, p99 ${p99} ms, max ${latencies[latencies.length - 1]} ms (node timeout ${NODE_TIMEOUT_MS} ms)`);
    assert.ok(latencies[latencies.length - 1] <= BOUND_MS, `slowest will ${latencies[latencies.length - 1]} ms after the kill, bound ${BOUND_MS} ms`);
    const fired = (await s1.metric('vigil_wills_fired_total')) + (await s2.metric('vigil_wills_fired_total'));
    assert.equal(fired, WILL_CLIENTS, 'the survivors published each will once between them');
  });
});

// The core cross-node behaviour against a local 3-master Redis Cluster instead of one
// redis-server (VIGIL_REDIS_CLUSTER_NODES): QoS 1 publish/subscribe across two Vigil
// processes, retained messages across nodes, and a will published by the survivor when a
// node is SIGKILLed. Every per-client script stays in one slot ({prefix:c:<id>} hash tags).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedisCluster, randomPrefix, type TestRedisCluster } from '../helpers/redis.js';
import { drained, startNode, waitForRoutes, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool } from '../helpers/mqtt.js';

let rc: TestRedisCluster;
let a: VigilNode;
let b: VigilNode;
const clients = new ClientPool();

before(async () => {
  rc = await startRedisCluster();
  const prefix = randomPrefix('rc');
  const redisClusterNodes = rc.nodes.join(',');
  [a, b] = await Promise.all([startNode({ redisClusterNodes, prefix, nodeId: 'a' }), startNode({ redisClusterNodes, prefix, nodeId: 'b' })]);
  await waitUntil(async () => (await a.ready()) && (await b.ready()), 10000, 'nodes ready');
});
after(async () => {
  await clients.closeAll();
  await Promise.all([a?.kill('SIGKILL'), b?.stop()]);
  await rc?.stop();
});

describe('on a Redis Cluster', () => {
  for (const version of [4, 5] as const) {
    test(`MQTT ${version === 5 ? '5.0' : '3.1.1'} QoS 1 across nodes: a subscriber on B gets what is published on A, in order, once`, async () => {
      const topic = `rc/v${version}`;
      const sub = await clients.connect(b.url, { protocolVersion: version, clientId: `rc-sub-${version}` });
      await sub.mqtt.subscribeAsync(topic, { qos: 1 });
      const pub = await clients.connect(a.url, { protocolVersion: version, clientId: `rc-pub-${version}` });
      await waitForRoutes(pub, sub);
      for (let i = 0; i < 50; i++) await pub.mqtt.publishAsync(topic, `m${i}`, { qos: 1 });
      const got = await drained(pub, sub, topic, 1);
      assert.deepEqual(got.map((m) => m.payload), Array.from({ length: 50 }, (_, i) => `m${i}`), 'each once, in order');
    });
  }

  test('a retained message published on A is delivered on subscribe on B', async () => {
    const pub = await clients.connect(a.url, { protocolVersion: 5, clientId: 'rc-ret-pub' });
    await pub.mqtt.publishAsync('rc/ret/x', 'kept', { qos: 1, retain: true });
    // stored and announced: a subscription on B gets it (probe subscriptions until one does)
    await waitUntil(async () => {
      const probe = await clients.connect(b.url, { protocolVersion: 4, clientId: `rc-ret-probe-${Date.now()}` });
      await probe.mqtt.subscribeAsync('rc/ret/#', { qos: 1 });
      return probe.waitForMessages(1, 500).then(() => true, () => false);
    }, 20_000, 'the retained message on B');
    const sub = await clients.connect(b.url, { protocolVersion: 4, clientId: 'rc-ret-sub' });
    await sub.mqtt.subscribeAsync('rc/ret/#', { qos: 1 });
    const [m] = await sub.waitForMessages(1, 20_000);
    assert.equal(m.payload, 'kept');
    assert.equal(m.packet.retain, true);
  });

  test('SIGKILL of node A: the will of its client reaches the subscriber on B once', async () => {
    const sub = await clients.connect(b.url, { protocolVersion: 5, clientId: 'rc-will-sub' });
    await sub.mqtt.subscribeAsync('rc/will/#', { qos: 1 });
    for (const version of [4, 5] as const) {
      await clients.connect(a.url, { protocolVersion: version, clientId: `rc-dying-${version}`, will: { topic: `rc/will/${version}`, payload: Buffer.from('gone'), qos: 1, retain: false } });
    }
    const killedAt = Date.now();
    await a.kill('SIGKILL');
    const wills = await sub.waitForMessages(2, 30_000);
    const latency = Date.now() - killedAt;
    console.log(`redis cluster: wills delivered ${latency} ms after the kill (node timeout 1500 ms)`);
    assert.deepEqual(wills.map((m) => m.topic).sort(), ['rc/will/4', 'rc/will/5']);
    // the reaper that fired them has finished (logged on B): a second copy could only come from a second reap
    await waitUntil(() => b.logs.some((l) => l.msg === 'dead node reaped'), 20_000, 'the reap of A finished on B');
    assert.equal(sub.messages.length, 2, 'each will once');
  });
});

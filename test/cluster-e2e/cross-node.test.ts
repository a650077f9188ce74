// Two Vigil processes on one real Redis: publish/subscribe across nodes for QoS 0/1/2 and
// both protocol versions, shared subscriptions, retained messages and takeover.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { drained, startNode, waitForRoutes, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool } from '../helpers/mqtt.js';
import { StoreKeys } from '../../src/store/redis/keys.js';

let redis: TestRedis;
let prefix: string;
let a: VigilNode;
let b: VigilNode;
const clients = new ClientPool();

before(async () => {
  redis = await startRedis();
  prefix = randomPrefix('xn');
  [a, b] = await Promise.all([startNode({ redisUrl: redis.url, prefix, nodeId: 'a' }), startNode({ redisUrl: redis.url, prefix, nodeId: 'b' })]);
  await waitUntil(async () => (await a.ready()) && (await b.ready()), 5000, 'nodes ready');
});
after(async () => {
  await clients.closeAll();
  await Promise.all([a?.stop(), b?.stop()]);
  await redis?.stop();
});

describe('cross-node publish/subscribe', () => {
  for (const version of [4, 5] as const) {
    for (const qos of [0, 1, 2] as const) {
      test(`MQTT ${version === 5 ? '5.0' : '3.1.1'} QoS ${qos}: a subscriber on node B gets what is published on node A, once`, async () => {
        const topic = `xn/v${version}/q${qos}`;
        const sub = await clients.connect(b.url, { protocolVersion: version, clientId: `sub-${version}-${qos}` });
        await sub.mqtt.subscribeAsync(topic, { qos });
        const pub = await clients.connect(a.url, { protocolVersion: version, clientId: `pub-${version}-${qos}` });
        await waitForRoutes(pub, sub); // the route reaches node A through Redis
        for (let i = 0; i < 20; i++) await pub.mqtt.publishAsync(topic, `m${i}`, { qos });
        const got = await drained(pub, sub, topic, qos);
        assert.deepEqual(got.map((m) => m.payload), Array.from({ length: 20 }, (_, i) => `m${i}`), 'each once, in order');
        assert.ok((await a.metric('vigil_cross_node_messages_total', { direction: 'out' })) > 0);
      });
    }
  }

  test('a shared subscription with members on both nodes gives each message to exactly one member', async () => {
    const m1 = await clients.connect(a.url, { protocolVersion: 5, clientId: 'sh-a' });
    const m2 = await clients.connect(b.url, { protocolVersion: 5, clientId: 'sh-b' });
    await m1.mqtt.subscribeAsync('$share/g/jobs/#', { qos: 1 });
    await m2.mqtt.subscribeAsync('$share/g/jobs/#', { qos: 1 });
    const pub = await clients.connect(a.url, { protocolVersion: 5, clientId: 'sh-pub' });
    await waitForRoutes(pub, m2); // B's member of the group is known on A
    for (let i = 0; i < 40; i++) await pub.mqtt.publishAsync(`jobs/${i}`, `j${i}`, { qos: 1 });
    const jobs = () => [...m1.messages, ...m2.messages].filter((m) => m.topic.startsWith('jobs/'));
    await waitUntil(() => jobs().length >= 40, 20_000, '40 jobs');
    // 40 distinct payloads among the first 40 = no job went to both members
    const all = jobs().map((m) => m.payload).sort();
    assert.equal(all.length, 40);
    assert.equal(new Set(all).size, 40, 'each job once');
    const byMember = (c: typeof m1) => c.messages.filter((m) => m.topic.startsWith('jobs/')).length;
    assert.ok(byMember(m1) > 0 && byMember(m2) > 0, `both members got work (${byMember(m1)}/${byMember(m2)})`);
  });

  test('retained messages published on one node are delivered on subscribe on the other', async () => {
    const pub = await clients.connect(a.url, { protocolVersion: 4, clientId: 'ret-pub' });
    await pub.mqtt.publishAsync('ret/x', 'kept', { qos: 1, retain: true });
    // stored in Redis (announced to every node by the same script), then subscribe on B
    const check = redis.client();
    await waitUntil(async () => (await check.hexists(new StoreKeys(prefix).retainedMessages, 'ret/x')) === 1, 20_000, 'the retained message in Redis');
    check.disconnect();
    const sub = await clients.connect(b.url, { protocolVersion: 5, clientId: 'ret-sub' });
    await sub.mqtt.subscribeAsync('ret/#', { qos: 1 });
    const [m] = await sub.waitForMessages(1, 20_000);
    assert.equal(m.payload, 'kept');
    assert.equal(m.packet.retain, true);
  });

  test('takeover across nodes: the connection on A is closed (5.0 0x8E) when the client id connects on B', async () => {
    const first = await clients.connect(a.url, { protocolVersion: 5, clientId: 'roamer', clean: false, properties: { sessionExpiryInterval: 60 } });
    await first.mqtt.subscribeAsync('roam/#', { qos: 1 });
    const kicked = first.waitForDisconnect(20_000);
    const second = await clients.connect(b.url, { protocolVersion: 5, clientId: 'roamer', clean: false, properties: { sessionExpiryInterval: 60 } });
    assert.equal((await kicked).reasonCode, 0x8e);
    assert.equal(second.connack.sessionPresent, true, 'the session moved with its subscriptions');
    const pub = await clients.connect(a.url, { protocolVersion: 5, clientId: 'roam-pub' });
    await waitForRoutes(pub, second); // its routes are now B's, as known on A
    await pub.mqtt.publishAsync('roam/1', 'found you', { qos: 1 });
    const [m] = await second.waitForMessages(1, 20_000, 'roam/1');
    assert.equal(m.payload, 'found you');
  });
});

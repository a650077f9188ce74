// Delivery-time authorization across nodes (issue 12): a message forwarded from node A is
// delivered on node B only if the subscriber may receive its topic under node B's policy.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool, sleep } from '../helpers/mqtt.js';
import { tempDir, type TempDir } from '../helpers/jwt.js';

let redis: TestRedis;
let dir: TempDir;
let a: VigilNode;
let b: VigilNode;
const clients = new ClientPool();

before(async () => {
  redis = await startRedis();
  dir = await tempDir();
  // auth=none: every client holds the role "anonymous"
  const open = await dir.write('open.json', { roles: { anonymous: { publish: ['#'], subscribe: ['#'] } } });
  const guarded = await dir.write('guarded.json', { roles: { anonymous: { publish: ['#'], subscribe: ['#'], deny: { subscribe: ['xa/secret/#'] } } } });
  const prefix = randomPrefix('xacl');
  [a, b] = await Promise.all([
    startNode({ redisUrl: redis.url, prefix, nodeId: 'a', env: { VIGIL_ACL: open } }),
    startNode({ redisUrl: redis.url, prefix, nodeId: 'b', env: { VIGIL_ACL: guarded } }),
  ]);
  await waitUntil(async () => (await a.ready()) && (await b.ready()), 20_000, 'nodes ready');
});
after(async () => {
  await clients.closeAll();
  await Promise.all([a?.stop(), b?.stop()]);
  await redis?.stop();
  await dir?.remove();
});

describe('delivery authorization across nodes', () => {
  test('a message forwarded to a subscriber the receiving node does not allow is not delivered', async () => {
    const sub = await clients.connect(b.url, { protocolVersion: 5, clientId: 'xacl-sub' }, 10_000);
    await sub.mqtt.subscribeAsync('xa/#', { qos: 1 });
    await sleep(300); // the route reaches node A through Redis
    const pub = await clients.connect(a.url, { protocolVersion: 4, clientId: 'xacl-pub' }, 10_000);
    await pub.mqtt.publishAsync('xa/secret/1', 'hidden', { qos: 1 });
    await pub.mqtt.publishAsync('xa/open/1', 'shown', { qos: 1 });
    await sub.waitForMessages(1, 20_000, 'xa/open/1');
    await waitUntil(async () => (await b.metric('vigil_messages_dropped_total', { reason: 'not_authorized' })) === 1, 20_000, 'denied on node B');
    assert.deepEqual(sub.messages.map((m) => m.topic), ['xa/open/1']);
    assert.ok((await a.metric('vigil_cross_node_messages_total', { direction: 'out' })) >= 2, 'both were forwarded');
  });
});

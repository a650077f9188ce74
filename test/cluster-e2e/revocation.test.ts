// Revocation is cluster-wide: revoked on node A through the admin API, the subject's
// connection on node B is closed and its will is denied. The time it took is reported, not
// asserted (a loaded machine decides that, not the code).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool } from '../helpers/mqtt.js';

const ADMIN = 'k'.repeat(40);
let redis: TestRedis;
let a: VigilNode;
let b: VigilNode;
const clients = new ClientPool();

before(async () => {
  redis = await startRedis();
  const prefix = randomPrefix('rv');
  const env = { VIGIL_ADMIN_TOKEN: ADMIN };
  [a, b] = await Promise.all([startNode({ redisUrl: redis.url, prefix, nodeId: 'a', env }), startNode({ redisUrl: redis.url, prefix, nodeId: 'b', env })]);
});
after(async () => {
  await clients.closeAll();
  await Promise.all([a?.stop(), b?.stop()]);
  await redis?.stop();
});

test('a revocation on one node disconnects the subject on another and blocks its will', async () => {
  const watcher = await clients.connect(a.url, { protocolVersion: 5, clientId: 'watcher' });
  await watcher.mqtt.subscribeAsync('state/#', { qos: 1 });
  const dev = await clients.connect(b.url, { protocolVersion: 5, clientId: 'dev7', username: 'dev7', will: { topic: 'state/dev7', payload: Buffer.from('down'), qos: 1, retain: false } });
  const disconnected = dev.waitForDisconnect(20_000);
  const t0 = Date.now();
  const res = await fetch(`http://127.0.0.1:${a.metricsPort}/admin/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify({ subject: 'dev7' }) });
  assert.ok(res.ok, `revoke answered ${res.status}`);
  assert.equal((await disconnected).reasonCode, 0x87);
  const elapsed = Date.now() - t0;
  process.stdout.write(`# revocation reached the other node in ${elapsed} ms\n`);
  // the will is decided once, on B: denied (counted) means it is never published
  await waitUntil(async () => (await b.metric('vigil_wills_denied_total', { reason: 'revoked' })) === 1, 20_000, 'will denied on node B');
  assert.equal(watcher.messages.length, 0, 'no will');
  // and the subject cannot connect on either node
  await assert.rejects(clients.connect(a.url, { protocolVersion: 5, clientId: 'dev7b', username: 'dev7' }));
});

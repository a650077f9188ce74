// A will read ahead is still authorized when it fires (cluster e2e, real processes, SIGKILL):
// node A, holding a client with a will, is killed; the survivor B reads and decodes A's wills
// while A is overdue (read-wills-ahead.lua); the client's identity is revoked on B before the
// reaping; the reaping takes the will from what it read ahead, and the revocation blocks it
// there (log line + metric), as for any will: nothing is published.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { logged, startNode, upForNodeTimeout, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool } from '../helpers/mqtt.js';

const ADMIN = 'k'.repeat(40);
let redis: TestRedis;
let a: VigilNode;
let b: VigilNode;
const clients = new ClientPool();

before(async () => {
  redis = await startRedis();
  const prefix = randomPrefix('wpr');
  // a node timeout long enough for the revocation to land between the read ahead (A overdue
  // after 1.5 heartbeats) and the reaping (A's lease lapsed); its order is checked below
  const env = { VIGIL_ADMIN_TOKEN: ADMIN, VIGIL_NODE_TIMEOUT_MS: '4000' };
  [a, b] = await Promise.all([startNode({ redisUrl: redis.url, prefix, nodeId: 'wpr-a', env }), startNode({ redisUrl: redis.url, prefix, nodeId: 'wpr-b', env })]);
});
after(async () => {
  await clients.closeAll();
  await Promise.all([a?.stop(), b?.stop()]);
  await redis?.stop();
});

test('a will read ahead for an overdue node, whose identity is revoked before the reaping, is denied when it fires', async () => {
  const watcher = await clients.connect(b.url, { protocolVersion: 5, clientId: 'wpr-watch' });
  await watcher.mqtt.subscribeAsync('state/#', { qos: 1 });
  // a second device on A whose will is allowed: the reaping did fire what it read ahead
  await clients.connect(a.url, { protocolVersion: 5, clientId: 'wpr-ok', username: 'wpr-ok', will: { topic: 'state/wpr-ok', payload: Buffer.from('down'), qos: 1, retain: false } });
  await clients.connect(a.url, { protocolVersion: 5, clientId: 'wpr-dev', username: 'wpr-dev', will: { topic: 'state/wpr-dev', payload: Buffer.from('down'), qos: 1, retain: false } });
  // B reads ahead only once it has been a cluster owner for a node timeout
  await upForNodeTimeout(b, 4000);

  await a.kill('SIGKILL');
  await waitUntil(() => logged(b, 'wills of an overdue node read ahead').some((l) => l.wills === 2), 30_000, 'B read both wills of A ahead');
  assert.equal(logged(b, 'dead node reaped').length, 0, 'read ahead while A is overdue, before its reaping');

  const res = await fetch(`http://127.0.0.1:${b.metricsPort}/admin/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify({ subject: 'wpr-dev' }) });
  assert.ok(res.ok, `revoke answered ${res.status}`);
  assert.equal(logged(b, 'reaping dead node').length, 0, 'the revocation is in force before the reaping begins (else this run shows nothing: raise the node timeout)');

  await waitUntil(() => logged(b, 'dead node reaped').length === 1, 30_000, 'A reaped by B');
  const reaped = logged(b, 'dead node reaped')[0];
  assert.equal(reaped.fired, 2, 'both wills claimed');
  assert.equal(reaped.prefetched, 2, 'both fired from the records read ahead');
  await waitUntil(async () => (await b.metric('vigil_wills_denied_total', { reason: 'revoked' })) === 1, 20_000, 'the revoked identity\'s will denied');
  const denied = logged(b, 'will denied');
  assert.deepEqual(denied.map((l) => [l.clientId, l.reason]), [['wpr-dev', 'revoked']], 'a log line for the denied will');
  await waitUntil(() => watcher.messages.some((m) => m.topic === 'state/wpr-ok'), 20_000, 'the allowed will published');
  assert.deepEqual(watcher.messages.map((m) => m.topic), ['state/wpr-ok'], 'the revoked identity\'s will is never published');
});

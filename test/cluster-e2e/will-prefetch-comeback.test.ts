// A node that is overdue but comes back loses nothing to the wills read ahead (cluster e2e,
// real processes): node A is stopped (SIGSTOP) until the survivor B has read its wills ahead
// (read-wills-ahead.lua), then continued (SIGCONT) before its lease runs out. A renews, its
// clients stay connected, no will fires; one client then disconnects normally (its will is
// dropped, as always); when A is SIGKILLed later the remaining client's will fires once, and
// the normally disconnected client's never does, read ahead or not.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { logged, startNode, upForNodeTimeout, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool } from '../helpers/mqtt.js';
import { ClusterKeys } from '../../src/cluster/keys.js';

let redis: TestRedis;
let a: VigilNode;
let b: VigilNode;
let keys: ClusterKeys;
const clients = new ClientPool();

before(async () => {
  redis = await startRedis();
  const prefix = randomPrefix('wpc');
  keys = new ClusterKeys(prefix);
  // A's stop must outlast the read ahead (1.5 heartbeats late) and end well inside its lease
  const env = { VIGIL_NODE_TIMEOUT_MS: '3000' };
  [a, b] = await Promise.all([startNode({ redisUrl: redis.url, prefix, nodeId: 'wpc-a', env }), startNode({ redisUrl: redis.url, prefix, nodeId: 'wpc-b', env })]);
});
after(async () => {
  try {
    process.kill(a.pid, 'SIGCONT');
  } catch {
    // already gone
  }
  await clients.closeAll();
  await Promise.all([a?.stop(), b?.stop()]);
  await redis?.stop();
});

test('an overdue node that renews again keeps its clients and wills; a later crash fires each remaining will once', async () => {
  const watcher = await clients.connect(b.url, { protocolVersion: 5, clientId: 'wpc-watch' });
  await watcher.mqtt.subscribeAsync('state/#', { qos: 1 });
  const willOf = (id: string) => ({ topic: `state/${id}`, payload: Buffer.from('down'), qos: 1 as const, retain: false });
  const stays = await clients.connect(a.url, { protocolVersion: 5, clientId: 'wpc-stays', will: willOf('wpc-stays') });
  const leaves = await clients.connect(a.url, { protocolVersion: 5, clientId: 'wpc-leaves', will: willOf('wpc-leaves') });
  // B reads ahead only once it has been a cluster owner for a node timeout
  await upForNodeTimeout(b, 3000);

  process.kill(a.pid, 'SIGSTOP');
  try {
    await waitUntil(() => logged(b, 'wills of an overdue node read ahead').some((l) => l.wills === 2), 20_000, 'B read both wills of A ahead');
  } finally {
    process.kill(a.pid, 'SIGCONT');
  }
  assert.equal(logged(b, 'reaping dead node').length, 0, 'A came back before its lease ran out (else this run shows nothing: raise the node timeout)');

  // A serves its clients again: a message from its client reaches B's watcher
  await stays.mqtt.publishAsync('state/probe', 'alive', { qos: 1 });
  await waitUntil(() => watcher.messages.some((m) => m.topic === 'state/probe'), 20_000, 'a message through A after it came back');
  assert.equal(await b.ready(), true);
  // a normal DISCONNECT drops the will [MQTT-3.1.2-10], whatever B read ahead
  await leaves.mqtt.endAsync();
  const r = redis.client();
  await waitUntil(async () => (await r.exists(keys.clientWill('wpc-leaves'))) === 0, 20_000, 'the normal disconnect recorded (its will record deleted)');
  assert.equal(await r.exists(keys.clientWill('wpc-stays')), 1);

  await a.kill('SIGKILL');
  await waitUntil(() => logged(b, 'dead node reaped').length === 1, 30_000, 'A reaped by B');
  const reaped = logged(b, 'dead node reaped')[0];
  assert.equal(reaped.fired, 1, 'one will claimed: the connected client\'s');
  await waitUntil(() => watcher.messages.some((m) => m.topic === 'state/wpc-stays'), 20_000, 'the remaining client\'s will');
  // a probe after the reaping: any second copy of a will would have come before it
  const probe = await clients.connect(b.url, { protocolVersion: 5, clientId: 'wpc-probe' });
  await probe.mqtt.publishAsync('state/probe2', 'x', { qos: 1 });
  await waitUntil(() => watcher.messages.some((m) => m.topic === 'state/probe2'), 20_000, 'the probe after the reaping');
  assert.deepEqual(watcher.messages.map((m) => m.topic).filter((t) => t.startsWith('state/wpc')), ['state/wpc-stays'], 'each will once, the normally disconnected client\'s never');
});

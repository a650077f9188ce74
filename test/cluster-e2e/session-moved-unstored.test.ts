// A message that reached a persistent session's node but not Redis is not lost when the
// client resumes on another node meanwhile. Node A reaches Redis through a TCP proxy: right
// after A's bus reader got a QoS 1 message for an offline session held on A, the proxy cuts
// A off, so the message's journal append fails and it exists only in A's memory (its bus entry
// stays pending). The client resumes on node B from what Redis has (without the message).
// 1. A keeps its lease across the cut: when A is back, the checkpoint of its copy is refused
//    (fenced), and the message must follow the session to B rather than be dropped as already
//    seen.
// 2. A loses its lease during the cut (as every node does while Sentinel promotes a new
//    master) and renews it once back: settling the sessions it held, A finds the client taken
//    by B, and the message must follow the session to B rather than end with A's copy (the
//    sentinel-failover e2e lost QoS 2 messages this way).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { offlineSubscriber, startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { ClientPool } from '../helpers/mqtt.js';

let redis: TestRedis;
let proxy: TcpProxy;
const nodes: VigilNode[] = [];
const clients = new ClientPool();

before(async () => {
  redis = await startRedis();
  proxy = await startTcpProxy(redis.port);
});
after(async () => {
  await clients.closeAll();
  await Promise.all(nodes.map((n) => n.kill('SIGKILL')));
  await proxy?.close();
  await redis?.stop();
});

/** Node A behind the proxy, node B direct, on a fresh prefix. */
async function pair(name: string, env: Record<string, string>): Promise<[VigilNode, VigilNode]> {
  const prefix = randomPrefix(name);
  const started = await Promise.all([startNode({ redisUrl: `redis://127.0.0.1:${proxy.port}`, prefix, nodeId: 'a', env }), startNode({ redisUrl: redis.url, prefix, nodeId: 'b', env })]);
  nodes.push(...started);
  const [a, b] = started;
  await waitUntil(async () => (await a.ready()) && (await b.ready()), 10_000, 'nodes ready');
  return [a, b];
}

/** A message for the offline session on A reaches A's reader, then A is cut off; the client resumes on B. */
async function onlyOnA(a: VigilNode, b: VigilNode, name: string, payload: string) {
  const { pub, session } = await offlineSubscriber(clients, a, b, name, `${name}/t`);
  const cut = proxy.cutAllAfterReply(payload);
  await pub.mqtt.publishAsync(`${name}/t`, payload, { qos: 1 }); // PUBACK: it is in A's bus stream
  await cut; // A's reader has it; A's append of it cannot reach Redis
  const resumed = await clients.connect(b.url, session, 10_000);
  assert.equal(resumed.connack.sessionPresent, true);
  // A gave up on the append (its connection refused, not merely re-sent once it is back)
  await waitUntil(() => a.logs.some((l) => l.msg === 'cluster operation failed' && l.what === 'pending'), 10_000, "A's failed append");
  return resumed;
}

describe('a session resumed elsewhere while its node could not store a message', { timeout: 60_000 }, () => {
  test('the message only the old node had follows the session to the new one', async () => {
    // a lease long enough that A keeps it across the cut: no reaper takes A's bus stream (that
    // path delivers the pending entry by itself); the message must come from A's own copy
    const [a, b] = await pair('mu', { VIGIL_HEARTBEAT_MS: '250', VIGIL_NODE_TIMEOUT_MS: '8000' });
    const resumed = await onlyOnA(a, b, 'mu', 'only-on-a');
    proxy.release();
    await waitUntil(() => resumed.messages.some((m) => m.payload === 'only-on-a'), 20_000, 'the message at the session resumed on B');
  });

  test('when the old node lost its lease meanwhile, the message follows the session once it renews', async () => {
    // A gives up ownership 7 s after its last renewal but its lease runs 10 s: released when it
    // gave up, A renews at its next heartbeat before anyone could reap it (a reaper would
    // deliver the pending entry by itself), so the message must come from A's own copy
    const [a, b] = await pair('ml', { VIGIL_HEARTBEAT_MS: '3000', VIGIL_NODE_TIMEOUT_MS: '10000' });
    const resumed = await onlyOnA(a, b, 'ml', 'only-on-a-unleased');
    await waitUntil(() => a.logs.some((l) => l.msg === 'cluster ownership lost, closing every connection'), 15_000, 'A without its lease');
    proxy.release();
    await waitUntil(() => a.logs.some((l) => l.msg === 'sessions kept across the lease loss'), 15_000, 'A settling what it held');
    const settled = a.logs.find((l) => l.msg === 'sessions kept across the lease loss')!;
    assert.equal(settled.lost, 1, `A found the client taken by B: ${JSON.stringify(settled)}`);
    await waitUntil(() => resumed.messages.some((m) => m.payload === 'only-on-a-unleased'), 20_000, 'the message at the session resumed on B');
  });
});

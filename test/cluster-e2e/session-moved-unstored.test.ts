// A message that reached a persistent session's node but not Redis is not lost when the
// client resumes on another node meanwhile. Node A reaches Redis through a TCP proxy: right
// after A's bus reader got a QoS 1 message for an offline session held on A, the proxy cuts
// A off, so the message's journal append fails and it exists only in A's memory (its bus entry
// stays pending). The client resumes on node B from what Redis has (without the message); when
// A is back, the checkpoint of its copy is refused (fenced), and the message must follow the
// session to B rather than be dropped as already seen.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { offlineSubscriber, startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { ClientPool } from '../helpers/mqtt.js';

let redis: TestRedis;
let proxy: TcpProxy;
let a: VigilNode;
let b: VigilNode;
const clients = new ClientPool();

before(async () => {
  redis = await startRedis();
  proxy = await startTcpProxy(redis.port);
  const prefix = randomPrefix('mu');
  // a lease long enough that A keeps it across the cut: no reaper takes A's bus stream (that
  // path delivers the pending entry by itself); the message must come from A's own copy
  const env = { VIGIL_HEARTBEAT_MS: '250', VIGIL_NODE_TIMEOUT_MS: '8000' };
  [a, b] = await Promise.all([
    startNode({ redisUrl: `redis://127.0.0.1:${proxy.port}`, prefix, nodeId: 'a', env }),
    startNode({ redisUrl: redis.url, prefix, nodeId: 'b', env }),
  ]);
  await waitUntil(async () => (await a.ready()) && (await b.ready()), 10_000, 'nodes ready');
});
after(async () => {
  await clients.closeAll();
  await Promise.all([a?.kill('SIGKILL'), b?.kill('SIGKILL')]);
  await proxy?.close();
  await redis?.stop();
});

describe('a session resumed elsewhere while its node could not store a message', { timeout: 60_000 }, () => {
  test('the message only the old node had follows the session to the new one', async () => {
    const { pub, session } = await offlineSubscriber(clients, a, b, 'mu', 'mu/t');

    const cut = proxy.cutAllAfterReply('only-on-a');
    await pub.mqtt.publishAsync('mu/t', 'only-on-a', { qos: 1 }); // PUBACK: it is in A's bus stream
    await cut; // A's reader has it; A's append of it cannot reach Redis

    const resumed = await clients.connect(b.url, session, 10_000);
    assert.equal(resumed.connack.sessionPresent, true);
    // A gave up on the append (its connection refused, not merely re-sent once it is back)
    await waitUntil(() => a.logs.some((l) => l.msg === 'cluster operation failed' && l.what === 'pending'), 10_000, "A's failed append");
    proxy.release();
    await waitUntil(() => resumed.messages.some((m) => m.payload === 'only-on-a'), 20_000, 'the message at the session resumed on B');
  });
});

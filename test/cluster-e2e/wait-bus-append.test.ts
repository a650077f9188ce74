// With VIGIL_REDIS_WAIT_REPLICAS, a node that stores a forwarded QoS 1 message in a persistent
// session (journal append) acknowledges the bus entry only once a replica has the append. Before,
// the append counted as stored when the master answered: a failover that lost it brought the
// bus entry back on the new master, and the node dropped it as a copy it had already seen, so
// a client resuming from the new master never got the message. A real master and replica; the
// replica is killed, so no WAIT can succeed, then started again.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { offlineSubscriber, startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool } from '../helpers/mqtt.js';

let master: TestRedis;
let replica: TestRedis;
let a: VigilNode;
let b: VigilNode;
let prefix: string;
const clients = new ClientPool();

before(async () => {
  master = await startRedis();
  replica = await startRedis({ replicaOf: master.port });
  const probe = master.client();
  await waitUntil(async () => (await probe.info('replication')).includes('state=online'), 20_000, 'replica online');
  prefix = randomPrefix('wb');
  const env = { VIGIL_REDIS_WAIT_REPLICAS: '1', VIGIL_REDIS_WAIT_TIMEOUT_MS: '200'};
  [a, b] = await Promise.all(['a', 'b'].map((nodeId) => startNode({ redisUrl: master.url, prefix, nodeId, env })));
  await waitUntil(async () => (await a.ready()) && (await b.ready()), 10_000, 'nodes ready');
});
after(async () => {
  await clients.closeAll();
  await Promise.all([a?.kill('SIGKILL'), b?.kill('SIGKILL')]);
  await replica?.stop();
  await master?.stop();
});

describe('WAIT for a forwarded message stored in a session', { timeout: 60_000 }, () => {
  test('the bus entry stays pending while no replica has the append; the message arrives once one has', async () => {
    const { pub, session } = await offlineSubscriber(clients, a, b, 'wb', 'wb/t');
    const before = await a.metric('vigil_redis_wait_timeouts_total');

    await replica.kill();
    // B forwards it (the entry is in A's stream) but cannot acknowledge it: no replica
    void pub.mqtt.publishAsync('wb/t', 'needs-a-replica', { qos: 1 }).catch(() => undefined);
    await waitUntil(async () => (await a.metric('vigil_redis_wait_timeouts_total')) > before, 20_000, "A's WAIT for the append");
    const probe = master.client();
    const streams = (await probe.keys(`${prefix}*`)).filter((k) => k.includes(':n:a/') && k.endsWith(':bus'));
    assert.equal(streams.length, 1, "A's bus stream");
    const [pending] = (await probe.xpending(streams[0], 'vigil')) as [number];
    assert.ok(pending >= 1, 'the bus entry is not acknowledged while no replica has the append');

    await replica.restart();
    const resumed = await clients.connect(b.url, session, 10_000);
    await waitUntil(() => resumed.messages.some((m) => m.payload === 'needs-a-replica'), 20_000, 'the message at the resumed session');
  });
});

// With VIGIL_REDIS_WAIT_REPLICAS, a node that stores a forwarded QoS 1 message in a persistent
// session (journal append) acknowledges the bus entry only once a replica has the append. Before,
// the append counted as stored when the master answered: a failover that lost it brought the
// bus entry back on the new master, and the node dropped it as a copy it had already seen, so
// a client resuming from the new master never got the message. The same holds for the release
// of an incoming QoS 2 packet id: PUBCOMP, which frees the id for a new message, waits until a
// replica has the release. A real master and replica; the replica is killed, so no WAIT can
// succeed, then started again.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { offlineSubscriber, startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool } from '../helpers/mqtt.js';
import { RawClient } from '../helpers/raw-client.js';

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

async function replicaOnline(): Promise<void> {
  const probe = master.client();
  try {
    await waitUntil(async () => (await probe.info('replication')).includes('state=online'), 20_000, 'replica online');
  } finally {
    probe.disconnect();
  }
}

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

  test('PUBCOMP waits until a replica has the release of the packet id; withheld (connection closed) while none has it', async () => {
    await replicaOnline();
    const sub = await clients.connect(b.url, { clientId: 'wb-q2-sub', clean: true }, 10_000);
    await sub.mqtt.subscribeAsync('wb/q2', { qos: 2 });
    const session = { clientId: 'wb-q2-pub', protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 300 } } as const;
    const { client: first } = await RawClient.connect(a.port, 5, session);
    first.send({ cmd: 'publish', topic: 'wb/q2', payload: Buffer.from('one'), qos: 2, messageId: 7, retain: false, dup: false });
    assert.equal(((await first.next('pubrec', 20_000)) as { reasonCode?: number }).reasonCode ?? 0, 0);

    const before = await a.metric('vigil_redis_wait_timeouts_total');
    await replica.kill();
    first.send({ cmd: 'pubrel', messageId: 7 });
    // the release reached the master only: no PUBCOMP, the connection is closed instead
    await first.waitForClose(20_000);
    assert.deepEqual(first.pending('pubcomp'), [], 'no PUBCOMP before a replica has the release');
    assert.ok((await a.metric('vigil_redis_wait_timeouts_total')) > before, 'the failed WAIT is counted');

    await replica.restart();
    await replicaOnline();
    // the client sends PUBREL again on reconnect: the id was still in use, now released
    const { client: again, connack } = await RawClient.connect(a.port, 5, { ...session, clean: false });
    assert.equal(connack.sessionPresent, true);
    again.send({ cmd: 'pubrel', messageId: 7 });
    assert.equal(((await again.next('pubcomp', 20_000)) as { reasonCode?: number }).reasonCode ?? 0, 0, 'PUBCOMP success: the id was still in use');
    // the id is free everywhere: a new message under it, from the session resumed on B, is routed
    again.close();
    const { client: onB } = await RawClient.connect(b.port, 5, { ...session, clean: false });
    onB.send({ cmd: 'publish', topic: 'wb/q2', payload: Buffer.from('two'), qos: 2, messageId: 7, retain: false, dup: false });
    await onB.next('pubrec', 20_000);
    onB.send({ cmd: 'pubrel', messageId: 7 });
    await onB.next('pubcomp', 20_000);
    await waitUntil(() => sub.messages.some((m) => m.payload === 'two'), 20_000, 'the second message under id 7 delivered');
    assert.equal(sub.messages.filter((m) => m.payload === 'one').length, 1, 'the first message once');
    onB.close();
  });
});

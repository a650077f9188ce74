// Persistent sessions survive the crash of their node (two Vigil processes on one real
// Redis): a subscriber's session lives on node A, a publisher on node B sends N QoS 1 (or 2)
// messages, each acknowledged; node A is SIGKILLed and the subscriber resumes on node B.
// Every acknowledged message is delivered (QoS 1: at least once, duplicates counted;
// QoS 2: exactly once, with the PUBREL state carried over).
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IPublishPacket, IPubrelPacket } from 'mqtt-packet';
import { Redis } from 'ioredis';
import { startRedis, randomPrefix, type TestRedis } from '../helpers/redis.js';
import { startNode, waitUntil, type VigilNode } from '../helpers/cluster.js';
import { ClientPool, sleep } from '../helpers/mqtt.js';
import { RawClient } from '../helpers/raw-client.js';
import { ClusterKeys } from '../../src/cluster/keys.js';

const N = 30;

let redis: TestRedis;
let probe: Redis;
let a: VigilNode;
let b: VigilNode;
let keys: ClusterKeys;
const clients = new ClientPool();
const raws: RawClient[] = [];

before(async () => {
  redis = await startRedis();
  probe = redis.client();
});
// every test kills its node A: each gets two fresh nodes and its own key prefix
async function startPair(): Promise<void> {
  const prefix = randomPrefix('sr');
  keys = new ClusterKeys(prefix);
  [a, b] = await Promise.all([startNode({ redisUrl: redis.url, prefix, nodeId: 'a' }), startNode({ redisUrl: redis.url, prefix, nodeId: 'b' })]);
  await waitUntil(async () => (await a.ready()) && (await b.ready()), 5000, 'nodes ready');
}
afterEach(async () => {
  await clients.closeAll();
  for (const r of raws.splice(0)) r.close();
  await Promise.all([a?.kill('SIGKILL'), b?.stop()]);
});
after(async () => {
  await redis?.stop();
});

/** The pending queue of a session as stored in Redis (what another node resumes from). */
const storedPending = (clientId: string) => probe.hlen(keys.sessionPending(clientId));

/** Publishes N messages on node B, each acknowledged (PUBACK / PUBCOMP) before the next. */
async function publishAll(topic: string, qos: 1 | 2): Promise<string[]> {
  const pub = await clients.connect(b.url, { protocolVersion: 5, clientId: `pub-${topic.replace(/\W/g, '-')}` });
  const acked: string[] = [];
  for (let i = 0; i < N; i++) {
    await pub.mqtt.publishAsync(topic, `m${i}`, { qos });
    acked.push(`m${i}`);
  }
  return acked;
}

function countBy(payloads: string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const p of payloads) counts.set(p, (counts.get(p) ?? 0) + 1);
  return counts;
}

describe('persistent sessions resume on another node after a crash', () => {
  test('MQTT 5.0 (session expiry 300), subscriber offline: every PUBACKed QoS 1 message is delivered after resuming on B', async () => {
    await startPair();
    const clientId = 'sr-v5-offline';
    const opts = { protocolVersion: 5 as const, clientId, clean: false, properties: { sessionExpiryInterval: 300 } };
    const sub = await clients.connect(a.url, opts);
    await sub.mqtt.subscribeAsync('sr/v5', { qos: 1 });
    await sub.mqtt.endAsync(); // normal DISCONNECT: the session stays on A
    await sleep(300); // the route reaches B
    const acked = await publishAll('sr/v5', 1);
    await waitUntil(async () => (await storedPending(clientId)) === N, 5000, `A to queue ${N} messages in Redis`);
    await a.kill('SIGKILL');

    const back = await clients.connect(b.url, opts);
    assert.equal(back.connack.sessionPresent, true);
    await back.waitForMessages(N, 5000);
    await sleep(300);
    const counts = countBy(back.messages.map((m) => m.payload));
    const duplicates = back.messages.length - counts.size;
    console.log(`session resume (5.0, offline): ${acked.length} acked, ${counts.size} distinct delivered, ${duplicates} duplicates`);
    assert.deepEqual([...counts.keys()].sort(), [...acked].sort(), 'every acknowledged message');
    assert.deepEqual(back.messages.slice(0, N).map((m) => m.payload), acked, 'in order');
  });

  test('MQTT 3.1.1 (clean session 0), subscriber withholding PUBACKs: every QoS 1 message is resent on B with DUP', async () => {
    await startPair();
    const clientId = 'sr-v4-noack';
    const { client: raw } = await RawClient.connect(a.port, 4, { clientId, clean: false });
    raws.push(raw);
    raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'sr/v4', qos: 1 }] });
    await raw.next('suback');
    await sleep(300);
    const acked = await publishAll('sr/v4', 1);
    await waitUntil(() => raw.pending('publish').length === N, 5000, `${N} PUBLISHes at the raw subscriber`);
    await waitUntil(async () => (await storedPending(clientId)) === N, 5000, `A to queue ${N} messages in Redis`);
    await sleep(200); // the packet ids written as sent (markPending) land in Redis
    await a.kill('SIGKILL');

    const back = await clients.connect(b.url, { protocolVersion: 4, clientId, clean: false });
    assert.equal(back.connack.sessionPresent, true);
    await back.waitForMessages(N, 5000);
    await sleep(300);
    const counts = countBy(back.messages.map((m) => m.payload));
    const duplicates = back.messages.length - counts.size;
    const dupFlagged = back.messages.filter((m) => m.packet.dup).length;
    console.log(`session resume (3.1.1, unacked): ${acked.length} acked, ${counts.size} distinct redelivered, ${duplicates} duplicates, ${dupFlagged} with DUP`);
    assert.deepEqual([...counts.keys()].sort(), [...acked].sort(), 'every acknowledged message');
    assert.equal(dupFlagged, back.messages.length, 'resent messages carry DUP [MQTT-3.3.1-1]');
  });

  test('MQTT 5.0 QoS 2: PUBRECed messages get only a PUBREL on B, the others are resent once — no message twice', async () => {
    await startPair();
    const clientId = 'sr-v5-qos2';
    const connect = { clientId, clean: false, properties: { sessionExpiryInterval: 300 } };
    const { client: raw } = await RawClient.connect(a.port, 5, connect);
    raws.push(raw);
    raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'sr/q2', qos: 2 }] });
    await raw.next('suback');
    await sleep(300);
    const acked = await publishAll('sr/q2', 2);
    await waitUntil(() => raw.pending('publish').length === N, 5000, `${N} PUBLISHes at the raw subscriber`);
    // the first half is received (PUBREC: delivered to the application), the rest is not
    const first = raw.pending('publish').splice(0) as IPublishPacket[];
    raw.received.length = 0;
    const delivered = first.slice(0, N / 2);
    for (const p of delivered) raw.send({ cmd: 'pubrec', messageId: p.messageId! });
    await waitUntil(() => raw.pending('pubrel').length === N / 2, 3000, 'PUBREL for every PUBREC');
    await sleep(300); // the released state lands in Redis
    await a.kill('SIGKILL');

    const { client: again, connack } = await RawClient.connect(b.port, 5, connect);
    raws.push(again);
    assert.equal(connack.sessionPresent, true);
    await waitUntil(() => again.pending('pubrel').length + again.pending('publish').length >= N, 5000, 'the resent session state');
    await sleep(300);
    const pubrels = again.pending('pubrel') as IPubrelPacket[];
    const resent = again.pending('publish') as IPublishPacket[];
    console.log(`session resume (5.0 QoS 2): ${delivered.length} PUBRECed before the crash → ${pubrels.length} PUBREL on B; ${N - delivered.length} unacknowledged → ${resent.length} PUBLISH on B`);
    assert.deepEqual(pubrels.map((p) => p.messageId).sort(), delivered.map((p) => p.messageId).sort(), 'a PUBREL for each PUBRECed message [MQTT-4.4.0-1]');
    assert.ok(resent.every((p) => p.dup && p.qos === 2), 'resent with DUP at QoS 2');
    const all = [...delivered, ...resent].map((p) => String(p.payload));
    assert.equal(all.length, N, 'no message delivered twice');
    assert.deepEqual([...all].sort(), [...acked].sort());
  });

  test('a node dies holding 600 offline persistent sessions: the survivor adopts every one, and a message published after the reap is stored for each', async () => {
    await startPair();
    const M = 600; // more than two adoption batches
    const ids = Array.from({ length: M }, (_, i) => `sr-adopt-${i}`);
    const session = { protocolVersion: 5 as const, clean: false, properties: { sessionExpiryInterval: 300 } };
    for (let i = 0; i < M; i += 50) {
      await Promise.all(ids.slice(i, i + 50).map(async (clientId) => {
        const c = await clients.connect(a.url, { ...session, clientId }, 20_000);
        await c.mqtt.subscribeAsync('sr/adopt', { qos: 1 });
        await c.mqtt.endAsync();
      }));
    }
    await waitUntil(async () => (await a.metric('vigil_sessions_current', { state: 'offline' })) >= M, 20_000, 'the sessions offline on A');
    await a.kill('SIGKILL');
    await waitUntil(() => b.logs.some((l) => l.msg === 'dead node reaped'), 30_000, 'B reaps A');
    const line = b.logs.find((l) => l.msg === 'sessions of a dead node adopted') as { adopted?: number; failed?: number } | undefined;
    assert.equal(line?.adopted, M, 'every session adopted');
    assert.equal(line?.failed, 0, 'no adoption failed');
    assert.ok((await b.metric('vigil_sessions_current', { state: 'offline' })) >= M, 'offline on B');

    const pub = await clients.connect(b.url, { protocolVersion: 5, clientId: 'sr-adopt-pub' });
    await pub.mqtt.publishAsync('sr/adopt', 'after-reap', { qos: 1 });
    // PUBACKed, so stored in every adopted session's queue in Redis
    const stored = await Promise.all(ids.map((clientId) => storedPending(clientId)));
    assert.deepEqual(ids.filter((_, i) => stored[i] !== 1), [], 'one message stored for every session');
    const back = await clients.connect(b.url, { ...session, clientId: ids[M - 1] });
    assert.equal(back.connack.sessionPresent, true);
    await back.waitForMessages(1, 10_000);
    assert.equal(back.messages[0].payload, 'after-reap');
  });
});

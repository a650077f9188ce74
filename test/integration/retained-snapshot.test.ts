// Retained snapshots without truncation: a subscription whose filter matches N retained
// messages gets all N, paced by the in-flight window (the client's Receive Maximum) and the
// socket, never cut by the session queue limit (VIGIL_MAX_QUEUED, at its default here). A
// snapshot is a cursor over the store: a slow subscriber holds a window's worth, not N. What
// happens on a change, an unsubscribe, a new subscribe and a disconnect mid-snapshot is in
// README "Retained snapshots".
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, uniqueId } from '../helpers/mqtt.js';
import { FleetClient, publishRetained } from '../helpers/fleet.js';
import { waitUntil } from '../helpers/cluster.js';
import type { Channel } from '../../src/protocol/channel.js';

const N = 10_000;
const topicOf = (i: number) => `fleet/${i}/state`;
const payloadOf = (i: number) => `up ${i}`;
/** 10,000 × 2 KiB: more than loopback socket buffers absorb, so the broker's own buffer fills. */
const bigTopicOf = (i: number) => `big/${i}`;
const bigPayloadOf = (i: number) => `${i}:`.padEnd(2048, '.');
const OUTPUT_BUFFER = 64 * 1024;

function channelOf(b: TestBroker, clientId: string): Channel {
  const ch = ([...b.server.broker.connections] as Channel[]).find((c) => c.clientId === clientId);
  assert.ok(ch, `connection of ${clientId}`);
  return ch;
}

/** Every one of the N topics arrived once, with its payload and RETAIN 1. */
function assertAllOnce(c: FleetClient, topic = topicOf, payload = payloadOf): void {
  assert.equal(c.byTopic.size, N);
  for (let i = 0; i < N; i++) {
    const got = c.byTopic.get(topic(i));
    assert.ok(got, `topic ${topic(i)}`);
    assert.equal(got.length, 1, `${topic(i)} once`);
    assert.equal(got[0].payload, payload(i));
    assert.equal(got[0].retain, true); // [MQTT-3.3.1-8]
  }
}

describe('retained snapshots of 10,000 topics', { timeout: 120000 }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  const opened: FleetClient[] = [];
  const connect = async (version: 4 | 5, extra: Parameters<typeof FleetClient.connect>[2] = {}) => {
    const c = await FleetClient.connect(broker.port, version, { clientId: uniqueId('snap'), ...extra });
    opened.push(c);
    return c;
  };
  const ended = (how: string) => broker.metric('vigil_retained_snapshots_ended_total', { how });

  before(async () => {
    // the default queue limit (1,000), a small socket buffer so back-pressure is reached early
    broker = await startBroker({ outputBufferBytes: OUTPUT_BUFFER });
    assert.equal(broker.server.config.maxQueued, 1000);
    await publishRetained(broker.port, N, topicOf, payloadOf);
    await publishRetained(broker.port, N, bigTopicOf, bigPayloadOf, 0);
    assert.equal(broker.server.broker.deps.retained.count(), 2 * N);
  });
  after(async () => {
    for (const c of opened) c.close();
    await pool.closeAll();
    await broker.close();
  });

  it('an mqtt.js subscriber (3.1.1 and 5.0, QoS 1) gets every one of them, nothing dropped', async () => {
    for (const protocolVersion of [4, 5] as const) {
      const sub = await pool.connect(broker.url, { protocolVersion, clientId: uniqueId('mqttjs') });
      await sub.mqtt.subscribeAsync('fleet/+/state', { qos: 1 });
      const got = await sub.waitForMessages(N, 60000);
      assert.equal(new Set(got.map((m) => m.topic)).size, N);
      assert.ok(got.every((m) => m.packet.retain && m.packet.qos === 1));
    }
    assert.equal(await broker.metric('vigil_messages_dropped_total'), 0);
  });

  it('QoS 0 under socket back-pressure: none dropped, the socket buffer stays near its limit', async () => {
    const c = await connect(5);
    c.socket.pause(); // not read: the broker's socket buffer fills
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'big/#', qos: 0 }] });
    const ch = channelOf(broker, c.clientId);
    await waitUntil(() => ch.io.bufferedBytes >= OUTPUT_BUFFER, 20000, 'the socket buffer to fill');
    // it stays there: the snapshot waits for the socket instead of encoding on or dropping
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setTimeout(r, 50));
      assert.ok(ch.io.bufferedBytes < OUTPUT_BUFFER + 4096, `buffered ${ch.io.bufferedBytes}`);
    }
    assert.ok(c.publishes < N / 2, `${c.publishes} read before the stall`);
    assert.equal(ch.session!.snapshotsRunning, 1);
    assert.equal(ch.session!.queued, 0);
    c.socket.resume();
    await c.topics(N, 60000);
    assertAllOnce(c, bigTopicOf, bigPayloadOf);
    assert.equal(await broker.metric('vigil_messages_dropped_total', { reason: 'backpressure_qos0' }), 0);
  });

  it("a subscriber that does not acknowledge holds the client's Receive Maximum in flight, no more, and nothing queued", async () => {
    const c = await connect(5, { properties: { receiveMaximum: 10 } });
    c.autoAck = false;
    await c.subscribe([{ topic: 'fleet/+/state', qos: 1 }]);
    await c.until(() => c.unacked.length === 10 || undefined, 10000, '10 in flight');
    const session = channelOf(broker, c.clientId).session!;
    // the window is full: the snapshot waits at its cursor, the session queue stays empty
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(c.publishes, 10);
    assert.equal(session.inflight.size, 10);
    assert.equal(session.queued, 0);
    assert.equal(session.snapshotsRunning, 1);
    // acknowledging 10 at a time lets exactly 10 more out, all the way to the last
    while (c.byTopic.size < N) {
      const before = c.publishes;
      c.ackAll();
      await c.until(() => c.publishes === Math.min(N, before + 10) || undefined, 10000, `messages after ${before}`);
    }
    assert.equal(c.maxUnacked, 10);
    assertAllOnce(c);
    c.ackAll();
    await waitUntil(() => session.snapshotsRunning === 0, 5000, 'snapshot complete');
  });

  it('many stalled subscribers at once: the broker holds a window and a socket buffer each, then serves them all', async () => {
    const clients = await Promise.all(Array.from({ length: 8 }, (_, i) => connect(i % 2 ? 5 : 4)));
    for (const c of clients) {
      c.autoAck = false;
      await c.subscribe([{ topic: 'fleet/#', qos: 1 }]);
    }
    const sessions = clients.map((c) => channelOf(broker, c.clientId).session!);
    await waitUntil(() => sessions.every((s) => s.inflight.size === 100), 20000, 'every window full');
    for (const s of sessions) {
      assert.equal(s.queued, 0);
      assert.equal(s.snapshotsRunning, 1);
    }
    for (const c of clients) c.autoAck = true;
    for (const c of clients) c.ackAll();
    for (const c of clients) await c.topics(N, 60000);
    for (const c of clients) assertAllOnce(c);
  });

  it('a topic changed during the snapshot arrives with its new value, never the old one after it', async () => {
    const c = await connect(5, { properties: { receiveMaximum: 1 } });
    c.autoAck = false;
    await c.subscribe([{ topic: 'fleet/+/state', qos: 1 }]);
    await c.until(() => c.unacked.length === 1 || undefined, 10000, 'first message');
    const changed = topicOf(N - 1);
    const pub = await pool.connect(broker.url, { clientId: uniqueId('changer') });
    await pub.mqtt.publishAsync(changed, 'changed', { qos: 1, retain: true });
    c.autoAck = true;
    c.ackAll();
    await c.topics(N, 60000);
    await c.until(() => (c.byTopic.get(changed)?.length ?? 0) >= 2 || undefined, 10000, 'live and snapshot copies');
    assert.deepEqual(c.byTopic.get(changed)!.map((g) => g.payload), ['changed', 'changed']);
    // put it back for the other tests
    await pub.mqtt.publishAsync(changed, payloadOf(N - 1), { qos: 1, retain: true });
  });

  it('UNSUBSCRIBE stops the snapshot: only what was in flight completes [MQTT-3.10.4-2]', async () => {
    const c = await connect(5, { properties: { receiveMaximum: 5 } });
    c.autoAck = false;
    await c.subscribe([{ topic: 'fleet/+/state', qos: 1 }]);
    await c.until(() => c.unacked.length === 5 || undefined, 10000, '5 in flight');
    const before = await ended('unsubscribed');
    c.send({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['fleet/+/state'] });
    await c.next('unsuback');
    c.ackAll();
    await waitUntil(async () => (await ended('unsubscribed')) === before + 1, 5000, 'snapshot ended as unsubscribed');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(c.publishes, 5);
  });

  it('a new SUBSCRIBE of the same filter restarts the snapshot; it ends complete', async () => {
    const c = await connect(5, { properties: { receiveMaximum: 5 } });
    c.autoAck = false;
    await c.subscribe([{ topic: 'fleet/+/state', qos: 1 }]);
    await c.until(() => c.unacked.length === 5 || undefined, 10000, '5 in flight');
    const replaced = await ended('replaced');
    await c.subscribe([{ topic: 'fleet/+/state', qos: 1, rh: 0 }], 2);
    assert.equal(await ended('replaced'), replaced + 1);
    c.autoAck = true;
    c.ackAll();
    await c.topics(N, 60000);
    // the first 5 came twice (once per subscribe), the rest once
    assert.equal(c.publishes, N + 5);
  });

  it('a persistent session disconnected mid-snapshot gets its in-flight messages again, not the rest', async () => {
    const clientId = uniqueId('persistent');
    const c = await connect(5, { clientId, clean: false, properties: { sessionExpiryInterval: 300, receiveMaximum: 5 } });
    c.autoAck = false;
    await c.subscribe([{ topic: 'fleet/+/state', qos: 1 }]);
    await c.until(() => c.unacked.length === 5 || undefined, 10000, '5 in flight');
    const before = await ended('disconnected');
    const firstFive = [...c.byTopic.keys()];
    c.close();
    await waitUntil(async () => (await ended('disconnected')) === before + 1, 5000, 'snapshot ended as disconnected');
    const again = await connect(5, { clientId, clean: false, properties: { sessionExpiryInterval: 0 } });
    await again.until(() => again.byTopic.size === 5 || undefined, 10000, 'the 5 in flight again');
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual([...again.byTopic.keys()], firstFive);
    assert.ok([...again.byTopic.values()].every(([g]) => g.dup)); // [MQTT-4.4.0-1]
    assert.equal(again.publishes, 5);
  });
});

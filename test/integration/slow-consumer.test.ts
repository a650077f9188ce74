// Slow consumers: a raw TCP subscriber subscribes and then stops reading (socket paused,
// never read) while a publisher floods it. The broker's memory for that connection stays
// bounded — the socket buffer near VIGIL_OUTPUT_BUFFER_BYTES, QoS 0 dropped past it
// (backpressure_qos0), QoS 1 waiting in a session queue of at most VIGIL_MAX_QUEUED with the
// overflow policy applied — and a well-behaved subscriber keeps being served throughout.
import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import mqttPacket from 'mqtt-packet';
import type { IPublishPacket } from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep, uniqueId } from '../helpers/mqtt.js';
import { RawClient } from '../helpers/raw-client.js';
import type { Channel } from '../../src/protocol/channel.js';
import type { Config } from '../../src/config.js';

const OUTPUT_BUFFER = 64 * 1024;
const MAX_QUEUED = 100;
const PAYLOAD = 8 * 1024;
/** 16 MiB in total: more than loopback socket buffers absorb, so the broker's buffer must fill. */
const FLOOD = 2000;

describe('slow consumers', { timeout: 30000 }, () => {
  const pool = new ClientPool();
  const raws: RawClient[] = [];
  let broker: TestBroker | undefined;
  afterEach(async () => {
    await pool.closeAll();
    for (const r of raws.splice(0)) r.close();
    await broker?.close();
    broker = undefined;
  });

  async function setup(overrides: Partial<Config>) {
    broker = await startBroker({ outputBufferBytes: OUTPUT_BUFFER, maxQueued: MAX_QUEUED, ...overrides });
    return broker;
  }

  /** A subscriber that subscribes, then never reads again. */
  async function stalledSubscriber(b: TestBroker, clientId: string, qos: 0 | 1): Promise<RawClient> {
    const { client } = await RawClient.connect(b.port, 5, { clientId });
    raws.push(client);
    client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'flood/#', qos }] });
    await client.next('suback');
    client.socket.pause();
    return client;
  }

  function channelOf(b: TestBroker, clientId: string): Channel | undefined {
    return ([...b.server.broker.connections] as Channel[]).find((c) => c.clientId === clientId);
  }

  /** Publishes FLOOD numbered messages ("<seq>" + padding) from a raw client, in large writes. */
  async function flood(b: TestBroker, qos: 0 | 1, watch: (sent: number) => void, healthy: { messages: unknown[] }): Promise<void> {
    const { client } = await RawClient.connect(b.port, 5, { clientId: uniqueId('flooder') });
    raws.push(client);
    const chunk: Buffer[] = [];
    for (let seq = 0; seq < FLOOD; seq++) {
      const payload = Buffer.alloc(PAYLOAD, 0x2e);
      payload.write(`${seq}:`);
      const packet: IPublishPacket = { cmd: 'publish', topic: `flood/${seq % 10}`, payload, qos, retain: false, dup: false, ...(qos > 0 ? { messageId: (seq % 65535) + 1 } : {}) };
      chunk.push(mqttPacket.generate(packet, { protocolVersion: 5 }));
      if (chunk.length === 50 || seq === FLOOD - 1) {
        if (!client.socket.write(Buffer.concat(chunk.splice(0)))) await new Promise((r) => client.socket.once('drain', r));
        watch(seq + 1);
        // paced to what a healthy consumer reads: it must never fall behind by more than a chunk
        const deadline = Date.now() + 5000;
        while (healthy.messages.length < seq + 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 1));
        watch(seq + 1);
      }
    }
    // wait until the broker has read everything we sent (QoS 1: every PUBACK is back)
    if (qos === 1) {
      const deadline = Date.now() + 10000;
      while (client.pending('puback').length < FLOOD && Date.now() < deadline) await sleep(20);
      assert.equal(client.pending('puback').length, FLOOD, 'every QoS 1 publish acknowledged to the publisher');
    } else {
      client.send({ cmd: 'pingreq' });
      await client.next('pingresp', 10000);
    }
  }

  it('QoS 0: the socket buffer stays bounded, messages past it are dropped (backpressure_qos0), a healthy subscriber is served', async () => {
    const b = await setup({});
    const good = await pool.connect(b.url, { protocolVersion: 5, clientId: uniqueId('good') });
    await good.mqtt.subscribeAsync('flood/#', { qos: 0 });
    await good.mqtt.subscribeAsync('health/#', { qos: 1 });
    await stalledSubscriber(b, 'slow-q0', 0);
    let maxBuffered = 0;
    const watch = () => (maxBuffered = Math.max(maxBuffered, channelOf(b, 'slow-q0')?.io.bufferedBytes ?? 0));
    await flood(b, 0, watch, good);

    const dropped = await b.metric('vigil_messages_dropped_total', { reason: 'backpressure_qos0' });
    process.stdout.write(`# QoS 0 flood: ${FLOOD} x ${PAYLOAD} B, dropped for backpressure ${dropped}, max buffered ${maxBuffered} B, healthy subscriber got ${good.messages.length}\n`);
    assert.ok(dropped > FLOOD / 2, `most messages to the stalled subscriber are dropped (${dropped})`);
    // one event-loop turn may add what it routes after the check: a few messages at most
    assert.ok(maxBuffered <= OUTPUT_BUFFER + 16 * (PAYLOAD + 64), `socket buffer bounded (${maxBuffered} B)`);
    assert.ok(channelOf(b, 'slow-q0'), 'a stalled QoS 0 subscriber is not disconnected');

    // the healthy subscriber got the whole flood and is still served
    assert.equal(good.messages.length, FLOOD);
    const probe = await pool.connect(b.url, { protocolVersion: 4, clientId: uniqueId('probe') });
    await probe.mqtt.publishAsync('health/ok', 'still here', { qos: 1 });
    await good.waitForMessages(1, 3000, 'health/ok');
  });

  it('QoS 1 with queueOverflow=disconnect: the queue fills to maxQueued, then the stalled subscriber is disconnected', async () => {
    const b = await setup({ queueOverflow: 'disconnect', maxInflight: 1000 });
    const good = await pool.connect(b.url, { protocolVersion: 5, clientId: uniqueId('good') });
    await good.mqtt.subscribeAsync('flood/#', { qos: 1 });
    await stalledSubscriber(b, 'slow-q1d', 1);
    const session = b.server.broker.sessions.get('slow-q1d')!;
    let maxQueued = 0;
    let maxBuffered = 0;
    let closedAfter = -1;
    const watch = (published: number) => {
      maxQueued = Math.max(maxQueued, session.queued);
      const ch = channelOf(b, 'slow-q1d');
      maxBuffered = Math.max(maxBuffered, ch?.io.bufferedBytes ?? 0);
      if (closedAfter < 0 && (!ch || ch.state === 'closing' || ch.state === 'closed')) closedAfter = published;
    };
    await flood(b, 1, watch, good);

    const hits = await b.metric('vigil_limit_hits_total', { limit: 'max_queued' });
    const queueFull = await b.metric('vigil_messages_dropped_total', { reason: 'queue_full' });
    process.stdout.write(`# QoS 1 disconnect: max queued ${maxQueued}, in flight ${session.inflight.size}, max buffered ${maxBuffered} B, closed after ~${closedAfter} published, max_queued hits ${hits}, queue_full drops ${queueFull}\n`);
    assert.ok(maxQueued <= MAX_QUEUED, `queue bounded by maxQueued (${maxQueued})`);
    assert.ok(maxBuffered <= OUTPUT_BUFFER + 16 * (PAYLOAD + 64), `socket buffer bounded (${maxBuffered} B)`);
    assert.equal(hits, 1, 'vigil_limit_hits_total{limit="max_queued"} counted once, for the one connection cut');
    assert.ok(queueFull >= 1);
    assert.ok(closedAfter > 0, 'the stalled subscriber was disconnected during the flood');
    // the socket goes within the transport's 2 s grace for a peer that never reads
    const deadline = Date.now() + 4000;
    while (channelOf(b, 'slow-q1d') && Date.now() < deadline) await sleep(50);
    assert.equal(channelOf(b, 'slow-q1d'), undefined, 'connection gone');

    // the healthy QoS 1 subscriber got every message, in order
    const got = await good.waitForMessages(FLOOD, 10000);
    assert.deepEqual(got.map((m) => Number(m.payload.split(':')[0])), Array.from({ length: FLOOD }, (_, i) => i));
  });

  it('QoS 1 with queueOverflow=drop-oldest: drops are counted as queue_full; on resuming the subscriber gets the newest maxQueued', async () => {
    const b = await setup({ queueOverflow: 'drop-oldest', maxInflight: 1000 });
    const good = await pool.connect(b.url, { protocolVersion: 5, clientId: uniqueId('good') });
    await good.mqtt.subscribeAsync('flood/#', { qos: 1 });
    const slow = await stalledSubscriber(b, 'slow-q1o', 1);
    const session = b.server.broker.sessions.get('slow-q1o')!;
    let maxQueued = 0;
    let maxBuffered = 0;
    const watch = () => {
      maxQueued = Math.max(maxQueued, session.queued);
      maxBuffered = Math.max(maxBuffered, channelOf(b, 'slow-q1o')?.io.bufferedBytes ?? 0);
    };
    await flood(b, 1, watch, good);
    const inflight = session.inflight.size;
    const queueFull = await b.metric('vigil_messages_dropped_total', { reason: 'queue_full' });
    process.stdout.write(`# QoS 1 drop-oldest: queued ${session.queued} (max ${maxQueued}), in flight ${inflight}, max buffered ${maxBuffered} B, queue_full drops ${queueFull}\n`);
    assert.equal(session.queued, MAX_QUEUED);
    assert.ok(maxQueued <= MAX_QUEUED);
    assert.ok(maxBuffered <= OUTPUT_BUFFER + 16 * (PAYLOAD + 64), `socket buffer bounded (${maxBuffered} B)`);
    assert.ok(inflight < 1000, `the socket buffer, not the in-flight window, held back QoS 1 (${inflight} in flight)`);
    assert.equal(queueFull, FLOOD - inflight - MAX_QUEUED, 'every message neither in flight nor queued was dropped and counted');
    assert.ok(channelOf(b, 'slow-q1o'), 'still connected');

    // resume reading, acknowledging everything
    const seen: number[] = [];
    const ackAll = () => {
      for (const p of slow.received.splice(0)) {
        if (p.cmd !== 'publish') continue;
        seen.push(Number(String(p.payload).split(':')[0]));
        slow.send({ cmd: 'puback', messageId: p.messageId! });
      }
    };
    slow.socket.resume();
    const deadline = Date.now() + 10000;
    while (seen.length < inflight + MAX_QUEUED && Date.now() < deadline) {
      ackAll();
      await sleep(10);
    }
    ackAll();
    await sleep(100);
    ackAll();
    assert.equal(seen.length, inflight + MAX_QUEUED, 'what was in flight, then the queue');
    assert.deepEqual(seen.slice(0, inflight), Array.from({ length: inflight }, (_, i) => i), 'the in-flight window: the first messages');
    assert.deepEqual(seen.slice(inflight), Array.from({ length: MAX_QUEUED }, (_, i) => FLOOD - MAX_QUEUED + i), 'the queue: the newest maxQueued');

    const got = await good.waitForMessages(FLOOD, 10000);
    assert.equal(got.length, FLOOD, 'the healthy subscriber got every message');
  });
});

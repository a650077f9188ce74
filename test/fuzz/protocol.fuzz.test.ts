// Hostile input, in process: random and mutated byte streams go through the real transport
// and channel. The broker must never throw, must answer per spec (close, 5.0 DISCONNECT),
// and must keep serving a well-behaved client over a real socket throughout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';
import type { Packet } from 'mqtt-packet';
import mqtt from 'mqtt';
import { startBroker } from '../helpers/broker.js';
import { MemoryStream } from '../helpers/memory-stream.js';

const RUNS = Number(process.env.VIGIL_FUZZ_RUNS ?? 300);

const valid = (v: 4 | 5): Packet[] => [
  { cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clientId: `fz${v}`, clean: true, keepalive: 30, will: { topic: 'w/t', payload: Buffer.from('down'), qos: 1, retain: false } } as Packet,
  { cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'f/#', qos: 2 }] } as Packet,
  { cmd: 'publish', topic: 'f/a', payload: Buffer.from('hello'), qos: 1, messageId: 2, retain: false, dup: false } as Packet,
  { cmd: 'publish', topic: 'f/b', payload: Buffer.from('x'), qos: 2, messageId: 3, retain: true, dup: false } as Packet,
  { cmd: 'pubrel', messageId: 3 } as Packet,
  { cmd: 'unsubscribe', messageId: 4, unsubscriptions: ['f/#'] } as Packet,
  { cmd: 'pingreq' } as Packet,
  { cmd: 'disconnect' } as Packet,
];

function encodeAll(v: 4 | 5): Buffer[] {
  return valid(v).map((p) => mqttPacket.generate(p, { protocolVersion: v }));
}

test('fuzz: random and mutated packet streams never crash the broker', { timeout: 120_000 }, async () => {
  const broker = await startBroker({ maxPacketSize: 4096 });
  const errors: unknown[] = [];
  const onError = (e: unknown) => errors.push(e);
  process.on('uncaughtException', onError);
  process.on('unhandledRejection', onError);
  const watcher = await mqtt.connectAsync(broker.url, { clientId: 'watcher', protocolVersion: 5 });
  try {
    await watcher.subscribeAsync('health/#', { qos: 1 });
    const captures = [...encodeAll(4), ...encodeAll(5)];
    const mutation = fc.record({
      base: fc.integer({ min: 0, max: captures.length - 1 }),
      edits: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
      cut: fc.option(fc.nat()),
      prefixConnect: fc.boolean(),
      split: fc.nat({ max: 7 }),
      extra: fc.uint8Array({ maxLength: 64 }),
    });
    let iterations = 0;
    await fc.assert(
      fc.asyncProperty(mutation, async (m) => {
        iterations++;
        const stream = new MemoryStream();
        broker.server.attachStream(stream, 'fuzz');
        const v = m.base < captures.length / 2 ? 4 : 5;
        const bytes = Buffer.from(captures[m.base]);
        for (const [pos, val] of m.edits) bytes[pos % bytes.length] = val;
        const body = m.cut === null ? bytes : bytes.subarray(0, m.cut % (bytes.length + 1));
        const all = Buffer.concat([m.prefixConnect ? encodeAll(v)[0] : Buffer.alloc(0), body, Buffer.from(m.extra)]);
        // deliver in a few chunks, as a network would
        const step = Math.max(1, Math.ceil(all.length / (m.split + 1)));
        for (let i = 0; i < all.length; i += step) stream.feed(all.subarray(i, i + step));
        await new Promise((r) => setImmediate(r));
        stream.destroy();
        await new Promise((r) => setImmediate(r));
      }),
      { numRuns: RUNS },
    );
    // random garbage, not derived from valid packets
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 512 }), async (garbage) => {
        iterations++;
        const stream = new MemoryStream();
        broker.server.attachStream(stream, 'fuzz');
        stream.feed(Buffer.from(garbage));
        await new Promise((r) => setImmediate(r));
        stream.destroy();
      }),
      { numRuns: RUNS },
    );
    assert.deepEqual(errors, [], 'no uncaught errors');
    // the well-behaved client is still served
    const got = new Promise<string>((resolve) => watcher.once('message', (_t, p) => resolve(p.toString())));
    const probe = await mqtt.connectAsync(broker.url, { clientId: 'probe' });
    await probe.publishAsync('health/ok', 'still here', { qos: 1 });
    assert.equal(await got, 'still here');
    await probe.endAsync();
    process.stdout.write(`# fuzz iterations: ${iterations}\n`);
  } finally {
    process.off('uncaughtException', onError);
    process.off('unhandledRejection', onError);
    await watcher.endAsync();
    await broker.close();
  }
});

test('answers per spec: garbage before CONNECT closes without a reply; 5.0 malformed packet gets DISCONNECT 0x81', async () => {
  const broker = await startBroker();
  try {
    const a = new MemoryStream();
    broker.server.attachStream(a, 'fuzz');
    a.feed(Buffer.from([0x30, 0x02, 0x00, 0x00])); // PUBLISH before CONNECT [MQTT-3.1.0-1]
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(a.written.length, 0);
    assert.ok(a.destroyed || a.ended);

    const b = new MemoryStream();
    broker.server.attachStream(b, 'fuzz');
    b.feed(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clientId: 'm5', clean: true, keepalive: 0 } as Packet, { protocolVersion: 5 }));
    await new Promise((r) => setTimeout(r, 20));
    b.feed(Buffer.from([0x62, 0x02, 0x00])); // truncated... then bad flags on a PUBREL
    b.feed(Buffer.from([0x01, 0x60, 0x02, 0x00, 0x01]));
    await new Promise((r) => setTimeout(r, 20));
    const packets = b.packets(5);
    assert.equal(packets[0].cmd, 'connack');
    const last = packets[packets.length - 1];
    assert.equal(last.cmd, 'disconnect');
    assert.equal((last as { reasonCode?: number }).reasonCode, 0x81);
  } finally {
    await broker.close();
  }
});

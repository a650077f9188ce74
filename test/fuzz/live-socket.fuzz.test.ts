// Hostile input over real TCP: many raw sockets to a broker listening on 127.0.0.1 send
// random and mutated byte streams (fast-check generated; VIGIL_FUZZ_RUNS connections, 200 by
// default), several at a time, while a well-behaved mqtt.js publisher and subscriber keep
// exchanging QoS 1 messages. The broker must not throw, must answer per spec (nothing but
// a close for a stream that does not start with CONNECT; only well-formed packets ever), must
// release every connection, and must keep serving the healthy clients throughout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';
import type { Packet } from 'mqtt-packet';
import { startBroker } from '../helpers/broker.js';
import { ClientPool, sleep } from '../helpers/mqtt.js';

const RUNS = Number(process.env.VIGIL_FUZZ_RUNS ?? 200);
const CONCURRENCY = 25;
const SEED = Number(process.env.VIGIL_FUZZ_SEED ?? Date.now() % 2 ** 31);

const valid = (v: 4 | 5): Packet[] => [
  { cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clientId: `lf${v}`, clean: true, keepalive: 30, will: { topic: 'lw/t', payload: Buffer.from('down'), qos: 1, retain: false } } as Packet,
  { cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'lf/#', qos: 2 }] } as Packet,
  { cmd: 'publish', topic: 'lf/a', payload: Buffer.from('hello'), qos: 1, messageId: 2, retain: false, dup: false } as Packet,
  { cmd: 'publish', topic: 'lf/b', payload: Buffer.from('x'), qos: 2, messageId: 3, retain: true, dup: false } as Packet,
  { cmd: 'pubrel', messageId: 3 } as Packet,
  { cmd: 'unsubscribe', messageId: 4, unsubscriptions: ['lf/#'] } as Packet,
  { cmd: 'pingreq' } as Packet,
  { cmd: 'disconnect' } as Packet,
];
const encoded = { 4: valid(4).map((p) => mqttPacket.generate(p, { protocolVersion: 4 })), 5: valid(5).map((p) => mqttPacket.generate(p, { protocolVersion: 5 })) };

/** One hostile connection's byte stream and how it is cut into writes. */
const streamArb = fc.oneof(
  // a valid session prefix with mutations, truncation and trailing garbage
  fc
    .record({
      version: fc.constantFrom(4 as const, 5 as const),
      packets: fc.array(fc.nat({ max: 7 }), { minLength: 1, maxLength: 5 }),
      withConnect: fc.boolean(),
      edits: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
      cut: fc.option(fc.nat()),
      extra: fc.uint8Array({ maxLength: 64 }),
      writes: fc.integer({ min: 1, max: 8 }),
    })
    .map((m) => {
      const parts = [...(m.withConnect ? [encoded[m.version][0]] : []), ...m.packets.map((i) => encoded[m.version][i])];
      const bytes = Buffer.concat(parts);
      for (const [pos, val] of m.edits) bytes[pos % bytes.length] = val;
      const body = m.cut === null ? bytes : bytes.subarray(0, Math.max(1, m.cut % (bytes.length + 1)));
      return { bytes: Buffer.concat([body, Buffer.from(m.extra)]), writes: m.writes };
    }),
  // plain garbage
  fc.record({ bytes: fc.uint8Array({ minLength: 1, maxLength: 512 }).map((a) => Buffer.from(a)), writes: fc.integer({ min: 1, max: 4 }) }),
);

interface Outcome {
  readonly input: Buffer;
  readonly output: Buffer;
  readonly closedByServer: boolean;
}

/**
 * Sends the stream in a few writes, then waits briefly for the server to answer or close —
 * longer when a close is what the test expects, so a loaded machine cannot fail it.
 */
function hostileConnection(port: number, input: Buffer, writes: number): Promise<Outcome> {
  const expectClose = input[0] !== 0x10 && completeFirstPacket(input);
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const out: Buffer[] = [];
    let closedByServer = false;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ input, output: Buffer.concat(out), closedByServer });
    };
    const timer = setTimeout(finish, expectClose ? 5000 : 400);
    socket.on('data', (d) => out.push(d));
    socket.on('error', () => undefined);
    socket.on('end', () => (closedByServer = true));
    socket.on('close', () => {
      closedByServer = closedByServer || !done;
      finish();
    });
    socket.once('connect', async () => {
      const step = Math.max(1, Math.ceil(input.length / writes));
      for (let i = 0; i < input.length && !socket.destroyed; i += step) {
        socket.write(input.subarray(i, i + step));
        await new Promise((r) => setImmediate(r));
      }
    });
  });
}

/** Everything the server wrote must be a sequence of well-formed packets (of either version). */
function wellFormed(bytes: Buffer): boolean {
  if (bytes.length === 0) return true;
  return ([4, 5] as const).some((protocolVersion) => {
    const parser = mqttPacket.parser({ protocolVersion });
    let ok = true;
    let consumed = 0;
    parser.on('error', () => (ok = false));
    parser.on('packet', (p: Packet) => (consumed += packetLength(p)));
    try {
      parser.parse(bytes);
    } catch {
      return false;
    }
    return ok && consumed === bytes.length;
  });
}

/** Whether the input holds a whole first packet (fixed header, remaining length and body). */
function completeFirstPacket(input: Buffer): boolean {
  let length = 0;
  for (let i = 1, mul = 1; i < Math.min(input.length, 5); i++, mul *= 128) {
    length += (input[i] & 0x7f) * mul;
    if ((input[i] & 0x80) === 0) return 1 + i + length <= input.length;
  }
  return input.length >= 5; // five length bytes: malformed, refused at once
}

function packetLength(p: Packet): number {
  const n = p.length ?? 0;
  return 1 + (n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4) + n;
}

test('live sockets: hostile byte streams over TCP never crash the broker, which keeps serving', { timeout: 600_000 }, async () => {
  const broker = await startBroker({ maxPacketSize: 4096, connectTimeoutS: 2, authFailuresPerAddress: 0, authFailuresPerUsername: 0 });
  const errors: unknown[] = [];
  const onError = (e: unknown) => errors.push(e);
  process.on('uncaughtException', onError);
  process.on('unhandledRejection', onError);
  const pool = new ClientPool();
  try {
    const sub = await pool.connect(broker.url, { protocolVersion: 5, clientId: 'live-sub' });
    await sub.mqtt.subscribeAsync('live/seq', { qos: 1 });
    const pub = await pool.connect(broker.url, { protocolVersion: 4, clientId: 'live-pub' });
    const baseline = await broker.metric('vigil_connections_current');

    // healthy traffic throughout the fuzzing
    let published = 0;
    let fuzzing = true;
    const healthy = (async () => {
      while (fuzzing) {
        await pub.mqtt.publishAsync('live/seq', String(published), { qos: 1 });
        published++;
        await sleep(5);
      }
    })();

    const inputs = fc.sample(streamArb, { numRuns: RUNS, seed: SEED });
    let next = 0;
    let iterations = 0;
    const violations: string[] = [];
    const worker = async () => {
      while (next < inputs.length) {
        const { bytes, writes } = inputs[next++];
        const o = await hostileConnection(broker.port, bytes, writes);
        iterations++;
        if (!wellFormed(o.output)) violations.push(`malformed reply ${o.output.toString('hex').slice(0, 80)} to ${o.input.toString('hex').slice(0, 80)}`);
        // anything before CONNECT: close, and not a byte in reply [MQTT-3.1.0-1]; a partial first
        // packet is left to the connect timeout (checked below: every connection is released)
        if (o.input[0] !== 0x10 && o.output.length > 0) violations.push(`reply to a stream not starting with CONNECT: ${o.input.toString('hex').slice(0, 80)}`);
        if (o.input[0] !== 0x10 && completeFirstPacket(o.input) && !o.closedByServer) violations.push(`not closed after non-CONNECT first byte: ${o.input.toString('hex').slice(0, 80)}`);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    fuzzing = false;
    await healthy;

    // every hostile connection is released
    const deadline = Date.now() + 5000;
    while ((await broker.metric('vigil_connections_current')) > baseline && Date.now() < deadline) await sleep(50);
    const got = await sub.waitForMessages(published, 5000, 'live/seq');
    process.stdout.write(`# live-socket fuzz: ${iterations} connections (seed ${SEED}), healthy publishes ${published}, received ${got.length}, protocol errors ${await broker.metric('vigil_protocol_errors_total')}\n`);

    assert.deepEqual(errors, [], 'no uncaught errors');
    assert.deepEqual(violations.slice(0, 10), [], `answers per spec (seed ${SEED})`);
    assert.equal(iterations, RUNS);
    assert.equal(await broker.metric('vigil_connections_current'), baseline, 'every hostile connection released');
    assert.deepEqual(got.map((m) => Number(m.payload)), Array.from({ length: published }, (_, i) => i), 'the healthy subscriber got every message, in order');
    assert.ok(published > 0);
  } finally {
    process.off('uncaughtException', onError);
    process.off('unhandledRejection', onError);
    await pool.closeAll();
    await broker.close();
  }
});

// The strict framing layer (src/transport/strict-parser.ts) without a socket: what mqtt-packet
// lets through and the specs call malformed or a protocol error, with the reason code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';
import type { Packet } from 'mqtt-packet';
import { strictParser, type FramingError } from '../../src/transport/strict-parser.js';
import { str, u16, varint } from '../helpers/mqtt-bytes.js';

/** Parses a CONNECT (5.0 unless said) and then `bytes`: the packets, and the first error. */
function parse(bytes: Buffer, version: 4 | 5 = 5): { packets: Packet[]; error?: FramingError } {
  const parser = strictParser();
  const packets: Packet[] = [];
  let error: FramingError | undefined;
  parser.on('packet', (p: Packet) => packets.push(p));
  parser.on('error', (e: FramingError) => (error ??= e));
  parser.parse(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: true, clientId: 'c', keepalive: 0 }));
  parser.parse(bytes);
  return { packets: packets.slice(1), error };
}

const publish = (props: number[], topic = 'a/b', version: 4 | 5 = 5) =>
  Buffer.concat([
    Buffer.from([0x30, 2 + topic.length + (version === 5 ? 1 + props.length : 0) + 1]),
    Buffer.from([0, topic.length]),
    Buffer.from(topic, 'latin1'),
    version === 5 ? Buffer.from([props.length, ...props]) : Buffer.alloc(0),
    Buffer.from('x'),
  ]);

test('well-formed packets pass, Payload Format Indicator 0 and 1 as read', () => {
  const { packets, error } = parse(Buffer.concat([publish([0x01, 0x01]), publish([0x01, 0x00]), publish([])]));
  assert.equal(error, undefined);
  assert.deepEqual(packets.map((p) => (p as { properties?: { payloadFormatIndicator?: boolean } }).properties?.payloadFormatIndicator), [true, false, undefined]);
});

test('U+0000 in a string is malformed [MQTT-1.5.4-2, MQTT-1.5.3-2]', () => {
  for (const v of [4, 5] as const) {
    const { packets, error } = parse(publish([], 'a\u0000', v), v);
    assert.equal(packets.length, 0);
    assert.equal(error?.reasonCode, 0x81);
    assert.match(error!.message, /U\+0000/);
  }
});

test('ill-formed UTF-8 is malformed [MQTT-1.5.4-1]', () => {
  const { error } = parse(publish([], 'a\u00ff'));
  assert.equal(error?.reasonCode, 0x81);
});

test('a one-byte flag property other than 0 or 1 is a protocol error, not read as true', () => {
  const { packets, error } = parse(publish([0x01, 0x02]));
  assert.equal(packets.length, 0);
  assert.equal(error?.reasonCode, 0x82);
});

test('properties that overrun their length are malformed', () => {
  // length 2, then a 5-byte Message Expiry Interval
  const bytes = Buffer.from([0x30, 12, 0, 1, 0x61, 2, 0x02, 0, 0, 0, 10, 0x78, 0x78, 0x78]);
  const { error } = parse(bytes.subarray(0, 2 + 12));
  assert.equal(error?.reasonCode, 0x81);
});

test('bytes after the last field are malformed: PUBACK, PINGREQ, DISCONNECT (3.1.1)', () => {
  for (const bytes of [[0x40, 3, 0, 1, 0], [0xc0, 1, 0], [0xe0, 1, 0]]) {
    const { error } = parse(Buffer.from(bytes), 4);
    assert.equal(error?.reasonCode, 0x81, JSON.stringify(bytes));
  }
});

test('mqtt-packet\'s own refusals keep their cause; Retain Handling 3 is a 5.0 protocol error', () => {
  const sub = (options: number) => Buffer.from([0x82, 7, 0, 1, 0, 0, 1, 0x61, options]);
  assert.equal(parse(sub(0x30)).error?.reasonCode, 0x82);
  assert.equal(parse(sub(0xc0)).error?.reasonCode, 0x81);
});

test('connectVersion reports the level of a CONNECT being parsed', () => {
  const parser = strictParser();
  parser.on('error', () => undefined);
  const bytes = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: 'c', keepalive: 0 });
  bytes[9] |= 0x01; // reserved flag: the parse fails after the level byte
  parser.parse(bytes);
  assert.equal(parser.connectVersion, 5);
});

test('property: PUBLISH and acknowledgements read straight from the chunk equals the state machine, for any stream cut anywhere', () => {
  const topicArb = fc.constantFrom('a', 'a/b', 'fleet/s-1/state', 'ünï/温度', '😀/x', '');
  const publishArb = fc.record({
    cmd: fc.constant('publish' as const),
    topic: topicArb,
    qos: fc.constantFrom(0, 1, 2) as fc.Arbitrary<0 | 1 | 2>,
    retain: fc.boolean(),
    dup: fc.boolean(),
    messageId: fc.integer({ min: 1, max: 65_535 }),
    payloadLength: fc.constantFrom(0, 1, 5, 120, 200, 20_000),
    withProps: fc.boolean(),
  });
  const otherArb = fc.constantFrom<Record<string, unknown>>({ cmd: 'pingreq' }, { cmd: 'puback', messageId: 7 }, { cmd: 'pubrec', messageId: 8 }, { cmd: 'pubrel', messageId: 65_535 }, { cmd: 'pubcomp', messageId: 1 }, { cmd: 'puback', messageId: 3, reasonCode: 0x10 }, { cmd: 'subscribe', messageId: 9, subscriptions: [{ topic: 'a/#', qos: 1 }] });
  const stream = fc.array(fc.oneof({ weight: 4, arbitrary: publishArb }, { weight: 1, arbitrary: otherArb }), { minLength: 1, maxLength: 12 });
  const cuts = fc.array(fc.integer({ min: 1, max: 400 }), { minLength: 1, maxLength: 20 });
  const summary = (p: Record<string, unknown>) => JSON.stringify({ ...p, payload: p.payload ? Buffer.from(p.payload as Buffer).toString('hex') : p.payload, length: undefined });
  fc.assert(
    fc.property(fc.constantFrom(4, 5) as fc.Arbitrary<4 | 5>, stream, cuts, (version, packets, cutSizes) => {
      const bytes = Buffer.concat(
        packets.map((p) => {
          if (p.cmd !== 'publish') return mqttPacket.generate({ ...p, ...(version === 5 && String(p.cmd).startsWith('pub') && (p as Record<string, unknown>).reasonCode === undefined ? { reasonCode: 0 } : {}) } as never, { protocolVersion: version });
          const { payloadLength, withProps, messageId, ...rest } = p as { payloadLength: number; withProps: boolean; messageId: number; qos: number } & Record<string, unknown>;
          const packet: Record<string, unknown> = { ...rest, payload: Buffer.alloc(payloadLength, 0x61) };
          if (rest.qos > 0) packet.messageId = messageId;
          if (version === 5 && withProps) packet.properties = { contentType: 'text/plain' };
          return mqttPacket.generate(packet as never, { protocolVersion: version });
        }),
      );
      const connect = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version as 4 | 5, clean: true, clientId: 'c', keepalive: 0 });
      const chunks: Buffer[] = [];
      for (let at = 0, k = 0; at < bytes.length; k++) {
        const size = cutSizes[k % cutSizes.length];
        chunks.push(bytes.subarray(at, at + size));
        at += size;
      }
      const run = (parser: { on(e: string, f: (x: never) => void): void; parse(b: Buffer): number }) => {
        const out: string[] = [];
        parser.on('packet', (p: Record<string, unknown>) => out.push(summary(p)));
        parser.on('error', (e: Error) => out.push(`error ${e.message}`));
        parser.parse(connect);
        for (const c of chunks) parser.parse(c);
        return out;
      };
      const ours = run(strictParser() as never);
      const stock = run(mqttPacket.parser({ protocolVersion: 4 }) as never);
      assert.deepEqual(ours, stock);
      assert.equal(ours.length, packets.length + 1);
    }),
    { numRuns: 400 },
  );
});

test('property: a 3.1/3.1.1 CONNECT (and DISCONNECT, PINGREQ) read straight from the chunk equals the state machine and mqtt-packet, valid or not', () => {
  const text = fc.constantFrom('', 'c', 'storm-12345', 'ünï/温度', '😀', 'a\u0000b');
  const connectArb = fc.record({
    v3: fc.boolean(),
    flags: fc.integer({ min: 0, max: 255 }), // every combination, valid or not (reserved bit, will flags without will)
    keepalive: fc.integer({ min: 0, max: 65_535 }),
    clientId: text,
    willTopic: text,
    willPayload: fc.constantFrom('', 'offline', 'x'.repeat(300)),
    username: text,
    password: fc.constantFrom('', 'p', 'x'.repeat(1000)),
    // damage after encoding: a byte after the last field, a field length past the end, the
    // protocol name, ill-formed UTF-8 in the client id, a 5.0 or bridge-mode level
    damage: fc.constantFrom('none', 'none', 'none', 'trailing', 'overrun', 'protocol', 'badUtf8', 'level5', 'bridge'),
  });
  const tail = fc.array(fc.constantFrom(Buffer.from([0xe0, 0]), Buffer.from([0xc0, 0]), Buffer.from([0xe0, 1, 0]), Buffer.from([0x30, 5, 0, 1, 0x61, 0x78, 0x79])), { maxLength: 3 });
  const summary = (p: Record<string, unknown>) => JSON.stringify(p, (_k, v) => (v && typeof v === 'object' && v.type === 'Buffer' ? Buffer.from(v.data).toString('hex') : v));
  fc.assert(
    fc.property(connectArb, tail, fc.integer({ min: 1, max: 50 }), (c, rest, cut) => {
      const name = c.v3 ? 'MQIsdp' : 'MQTT';
      const level = c.damage === 'level5' ? 5 : c.damage === 'bridge' ? 0x84 : c.v3 ? 3 : 4;
      const id = Buffer.from(c.clientId);
      if (c.damage === 'badUtf8') id[0] = 0xff;
      const parts = [str(Buffer.from(c.damage === 'protocol' ? 'MQTX' : name)), Buffer.from([level, c.flags]), u16(c.keepalive), str(id)];
      if (c.flags & 0x04) parts.push(str(Buffer.from(c.willTopic)), str(Buffer.from(c.willPayload)));
      if (c.flags & 0x80) parts.push(str(Buffer.from(c.username)));
      if (c.flags & 0x40) parts.push(str(Buffer.from(c.password)));
      if (c.damage === 'trailing') parts.push(Buffer.from([0]));
      let body = Buffer.concat(parts);
      if (c.damage === 'overrun') body = body.subarray(0, body.length - 1);
      const bytes = Buffer.concat([Buffer.from([0x10]), varint(body.length), body, ...rest]);
      const run = (parser: { on(e: string, f: (x: never) => void): void; parse(b: Buffer): number }, chunk: number) => {
        const out: string[] = [];
        parser.on('packet', (p: Record<string, unknown>) => out.push(summary(p)));
        parser.on('error', (e: Error) => out.push(`error ${e.message}`));
        for (let at = 0; at < bytes.length; at += chunk) parser.parse(bytes.subarray(at, at + chunk));
        // up to the first error: the connection closes there (what a parser reads after it depends on the cuts)
        const firstError = out.findIndex((x) => x.startsWith('error '));
        return firstError < 0 ? out : out.slice(0, firstError + 1);
      };
      const whole = run(strictParser() as never, bytes.length);
      // one byte at a time never holds a whole packet: the state machine reads everything
      assert.deepEqual(whole, run(strictParser() as never, 1));
      assert.deepEqual(run(strictParser() as never, cut), whole);
      // where mqtt-packet has nothing to refuse that Vigil adds, it reads the same
      const clean = c.damage === 'none' && !bytes.includes(0xff) && ![c.clientId, c.willTopic, c.username].some((x) => x.includes('\u0000'));
      const trailingDisconnect = rest.some((b) => b[0] === 0xe0 && b[1] === 1); // Vigil refuses it, mqtt-packet does not
      if (clean && !trailingDisconnect && (c.flags & 0x01) === 0) assert.deepEqual(run(mqttPacket.parser({ protocolVersion: 4 }) as never, bytes.length), whole);
    }),
    { numRuns: 1000 },
  );
});

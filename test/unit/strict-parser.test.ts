// The strict framing layer (src/transport/strict-parser.ts) without a socket: what mqtt-packet
// lets through and the specs call malformed or a protocol error, with the reason code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import mqttPacket from 'mqtt-packet';
import type { Packet } from 'mqtt-packet';
import { strictParser, type FramingError } from '../../src/transport/strict-parser.js';

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

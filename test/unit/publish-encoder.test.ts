// The outgoing PUBLISH encoder: its own writer for PUBLISH packets without properties must
// produce exactly the bytes mqtt-packet's generate() does, at every Remaining Length size
// boundary, for 3.1, 3.1.1 and 5.0, every QoS, RETAIN and DUP, and non-ASCII topics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import mqttPacket, { type IPublishPacket } from 'mqtt-packet';
import { OutgoingPublish, forClient } from '../../src/protocol/publish-encoder.js';
import type { StoredMessage } from '../../src/store/types.js';

function message(topic: string, payloadLength: number, extra: Partial<StoredMessage> = {}): StoredMessage {
  const payload = Buffer.alloc(payloadLength);
  for (let i = 0; i < payloadLength; i++) payload[i] = (i * 31) & 0xff;
  return { topic, payload, qos: 2, retain: false, origin: 'pub', ...extra };
}

function reference(m: StoredMessage, version: number, qos: 0 | 1 | 2, retain: boolean, packetId: number, dup: boolean): Buffer {
  const packet: IPublishPacket = { cmd: 'publish', topic: m.topic, payload: m.payload, qos, retain, dup };
  if (qos > 0) packet.messageId = packetId;
  if (version === 5) packet.properties = {};
  return mqttPacket.generate(packet, { protocolVersion: version as 3 | 4 | 5 });
}

// Remaining Length crosses from 1 to 2 bytes at 128, 2 to 3 at 16,384, 3 to 4 at 2,097,152.
const headerBytes = (topic: string, qos: number, v5: boolean) => 2 + Buffer.byteLength(topic) + (qos > 0 ? 2 : 0) + (v5 ? 1 : 0);

test('packets without properties are byte-for-byte what mqtt-packet generates', () => {
  const topics = ['a', 'fleet/server-17/dvs/server/state', 'ünïcødé/温度/😀'];
  for (const version of [3, 4, 5]) {
    for (const topic of topics) {
      for (const qos of [0, 1, 2] as const) {
        const fixed = headerBytes(topic, qos, version === 5);
        const sizes = [0, 1, 127 - fixed, 128 - fixed, 16_383 - fixed, 16_384 - fixed, 2_097_151 - fixed, 2_097_152 - fixed];
        for (const size of sizes) {
          for (const retain of [false, true]) {
            const m = message(topic, size);
            const form = new OutgoingPublish(m, 0).encode(version, qos, retain);
            for (const [packetId, dup] of qos > 0 ? ([[1, false], [513, true], [65_535, false]] as const) : ([[0, false]] as const)) {
              const ours = forClient(form, packetId, dup, 0);
              const theirs = reference(m, version, qos, retain, packetId, dup);
              assert.ok(ours.equals(theirs), `v${version} qos ${qos} retain ${retain} size ${size} id ${packetId} dup ${dup} topic ${topic}`);
            }
          }
        }
      }
    }
  }
});

test('the bytes parse back to the same message', () => {
  const m = message('a/b/ç', 300);
  const parsed: IPublishPacket[] = [];
  const parser = mqttPacket.parser({ protocolVersion: 5 });
  parser.on('packet', (p) => parsed.push(p as IPublishPacket));
  parser.on('error', (err) => assert.fail(err));
  parser.parse(forClient(new OutgoingPublish(m, 0).encode(5, 1, true), 42, false, 0));
  assert.equal(parsed.length, 1);
  assert.equal(parsed[0].topic, 'a/b/ç');
  assert.equal(parsed[0].qos, 1);
  assert.equal(parsed[0].retain, true);
  assert.equal(parsed[0].messageId, 42);
  assert.ok(Buffer.from(parsed[0].payload).equals(m.payload));
});

test('5.0 packets that carry properties, an expiry or an alias still go through mqtt-packet', () => {
  const withProps = message('t', 5, { properties: { contentType: 'text/plain', userProperties: { a: '1' } } });
  const bytes = forClient(new OutgoingPublish(withProps, 0).encode(5, 0, false), 0, false, 0);
  const expected = mqttPacket.generate({ cmd: 'publish', topic: 't', payload: withProps.payload, qos: 0, retain: false, dup: false, properties: { contentType: 'text/plain', userProperties: { a: '1' } } }, { protocolVersion: 5 });
  assert.ok(bytes.equals(expected));

  const expiring = message('t', 5, { expiresAtMs: 10_500 });
  const out = forClient(new OutgoingPublish(expiring, 0).encode(5, 0, false), 0, false, 0);
  const withExpiry = mqttPacket.generate({ cmd: 'publish', topic: 't', payload: expiring.payload, qos: 0, retain: false, dup: false, properties: { messageExpiryInterval: 11 } }, { protocolVersion: 5 });
  assert.ok(out.equals(withExpiry));

  // an empty properties object is no properties
  const empty = message('t', 3, { properties: {} });
  assert.ok(forClient(new OutgoingPublish(empty, 0).encode(5, 0, false), 0, false, 0).equals(reference(empty, 5, 0, false, 0, false)));
});

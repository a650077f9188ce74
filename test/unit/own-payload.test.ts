// Messages kept for long (queued, retained) hold their own bytes, not a view that pins the
// socket chunk they were read from (src/store/own-payload.ts); so does a connection's will.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Session } from '../../src/broker/session.js';
import { OutgoingPublish } from '../../src/protocol/publish-encoder.js';
import { MemoryRetainedStore } from '../../src/store/memory/retained.js';
import type { StoredMessage } from '../../src/store/types.js';
import mqttPacket from 'mqtt-packet';
import { attachConnection } from '../../src/transport/connection.js';
import { createTestContext } from '../helpers/channel-context.js';
import { MemoryStream } from '../helpers/memory-stream.js';
import { BatchWriter, decodeEntry } from '../../src/cluster/bus-codec.js';

/** A 10-byte payload inside a 64 KiB "socket chunk". */
function fromChunk(topic: string, retain = false): StoredMessage {
  const chunk = Buffer.allocUnsafeSlow(64 * 1024).fill(0x61);
  return { topic, payload: chunk.subarray(100, 110), qos: 1, retain, origin: 'pub' };
}

test('a message queued for an offline session keeps only its own bytes', () => {
  const session = new Session('away', 300, { maxQueued: 100, maxQueuedBytes: 1 << 20, budget: { limit: 1 << 24, used: 0 }, overflow: 'drop-oldest' }, { dropped() {}, sent() {}, snapshotEnded() {} } as never, { receiveVerdicts: () => null } as never);
  const message = fromChunk('fleet/a/state');
  session.deliver(new OutgoingPublish(message, 0), 1, false, undefined);
  const [queued] = [...session.pendingMessages()];
  assert.equal(queued.message.payload.toString(), 'aaaaaaaaaa');
  assert.equal(queued.message.payload.buffer.byteLength, 10, 'the 64 KiB chunk is not kept alive');
});

test('a retained message keeps only its own bytes; a payload that is its whole buffer is not copied', () => {
  const store = new MemoryRetainedStore();
  store.set(fromChunk('fleet/b/state', true));
  const [kept] = store.match('fleet/+/state', 0);
  assert.equal(kept.payload.buffer.byteLength, 10);

  const whole = Buffer.allocUnsafeSlow(2000).fill(0x62);
  store.set({ topic: 'fleet/c/state', payload: whole, qos: 1, retain: true, origin: 'pub' });
  assert.equal(store.match('fleet/c/state', 0)[0].payload, whole, 'no copy when nothing is pinned');
});

test("a CONNECT's will keeps only its own bytes, not the socket chunk the CONNECT came in", async () => {
  const t = createTestContext();
  try {
    const stream = new MemoryStream();
    const ch = attachConnection(stream, t.ctx, 'memory');
    // one write: the CONNECT with a 4-byte will, then 60 KB of PUBLISH behind it
    const connect = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'will-own', keepalive: 0, will: { topic: 'fleet/will-own/state', payload: Buffer.from('down'), qos: 1, retain: true } });
    const publish = mqttPacket.generate({ cmd: 'publish', topic: 'bulk', payload: Buffer.alloc(60_000, 1), qos: 0, retain: false, dup: false });
    const chunk = Buffer.concat([connect, publish]);
    stream.feed(chunk);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(stream.packets().map((p) => [p.cmd, (p as { returnCode?: number }).returnCode]), [['connack', 0]]);
    const payload = ch.will!.message.payload;
    assert.equal(payload.toString(), 'down');
    assert.ok(payload.buffer.byteLength < 1024, `the will pins ${payload.buffer.byteLength} bytes`);
  } finally {
    t.close();
  }
});

test('a message read from a bus entry and queued keeps only its own bytes, not the Redis reply', () => {
  const w = new BatchWriter();
  for (let i = 0; i < 500; i++) w.add({ kind: 'publish', from: 'A/1', message: { topic: `fleet/${i}/state`, payload: Buffer.alloc(100, 0x61 + (i % 26)), qos: 1, retain: false, origin: `dev-${i}` }, normal: true, shared: [] });
  const { field, body } = w.finish();
  const entry = decodeEntry(Buffer.from(field), body)[7];
  assert.ok(entry.kind === 'publish');
  const session = new Session('away-bus', 300, { maxQueued: 100, maxQueuedBytes: 1 << 20, budget: { limit: 1 << 24, used: 0 }, overflow: 'drop-oldest' }, { dropped() {}, sent() {}, snapshotEnded() {} } as never, { receiveVerdicts: () => null } as never);
  session.deliver(new OutgoingPublish(entry.message, 0), 1, false, undefined);
  const [queued] = [...session.pendingMessages()];
  assert.equal(queued.message.payload.toString(), 'h'.repeat(100));
  assert.equal(queued.message.payload.buffer.byteLength, 100, `the ${body.buffer.byteLength}-byte entry is not kept alive`);
});

test('a payload decoded from a bus entry pins no more than a socket chunk would: a view into a small entry, a copy out of a large one', () => {
  const entryOf = (count: number) => {
    const w = new BatchWriter();
    for (let i = 0; i < count; i++) w.add({ kind: 'publish', from: 'A/1', message: { topic: `fleet/${i}/state`, payload: Buffer.alloc(100, 0x61 + (i % 26)), qos: 1, retain: false, origin: `dev-${i}` }, normal: true, shared: [] });
    // a reply that spanned socket reads is one buffer of the entry's own size
    const { field, body } = w.finish();
    const own = Buffer.allocUnsafeSlow(body.length);
    body.copy(own);
    return decodeEntry(Buffer.from(field), own);
  };
  // ~40 KiB: held in flight as a view, as a PUBLISH's payload is held in its chunk
  const small = entryOf(250)[3];
  assert.ok(small.kind === 'publish');
  assert.equal(small.message.payload.toString(), 'd'.repeat(100));
  assert.ok(small.message.payload.buffer.byteLength > 100 && small.message.payload.buffer.byteLength <= 64 * 1024, 'a view into the small entry');
  // ~1.6 MB: a message a subscriber never acknowledges must not keep the whole batch alive
  const large = entryOf(10_000)[3];
  assert.ok(large.kind === 'publish');
  assert.equal(large.message.payload.toString(), 'd'.repeat(100));
  assert.ok(large.message.payload.buffer.byteLength <= 64 * 1024, `the payload pins ${large.message.payload.buffer.byteLength} bytes, not the whole entry`);
});

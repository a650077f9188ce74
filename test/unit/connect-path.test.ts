// The connect path's cheap pieces keep their meaning: deferred metrics read exactly as
// prom-client counters would, and the connection's parser (no stream of its own) parses as
// mqtt-packet's does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import mqttPacket from 'mqtt-packet';
import type { Packet } from 'mqtt-packet';
import { createMetrics } from '../../src/metrics.js';
import { strictParser } from '../../src/transport/strict-parser.js';
import { attachConnection, lingeringStreams } from '../../src/transport/connection.js';
import { createTestContext } from '../helpers/channel-context.js';
import { MemoryStream } from '../helpers/memory-stream.js';

const pendingPacketLength = (parser: object) => (parser as { packet: { length: number } }).packet.length;

test('deferred counters and gauges are what a scrape and get() see', async () => {
  const m = createMetrics('unit', { processMetrics: false });
  m.connectOutcomesTotal.inc({ code: 'success', version: '4' });
  m.connectOutcomesTotal.inc({ code: 'success', version: '4' });
  m.connectOutcomesTotal.inc({ code: 'success', version: '5' });
  m.connectOutcomesTotal.inc({ code: 'not_authorized', version: '4' });
  const tcp = m.connectionsCurrent.bind({ listener: 'tcp' });
  tcp.inc();
  tcp.inc();
  tcp.dec();
  m.sessionsCurrent.set({ state: 'online' }, 7);
  m.sessionsCurrent.set({ state: 'online' }, 3);

  const outcomes = await m.connectOutcomesTotal.get();
  const value = (code: string, version: string) => outcomes.values.find((v) => v.labels.code === code && v.labels.version === version)?.value;
  assert.equal(value('success', '4'), 2);
  assert.equal(value('success', '5'), 1);
  assert.equal(value('not_authorized', '4'), 1);
  // read twice: counts are handed over once, never twice
  m.connectOutcomesTotal.inc({ code: 'success', version: '4' });
  const text = await m.registry.metrics();
  assert.match(text, /vigil_connect_outcomes_total\{code="success",version="4",node="unit"\} 3/);
  assert.match(text, /vigil_connections_current\{listener="tcp",node="unit"\} 1/);
  assert.match(text, /vigil_sessions_current\{state="online",node="unit"\} 3/);
});

test('the connection parser reads packets split anywhere, as mqtt-packet does, and is no stream', () => {
  const packets: Packet[] = [
    { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'lean-1', keepalive: 30, username: 'u', password: Buffer.from('p') },
    { cmd: 'publish', topic: 'a/b', payload: Buffer.alloc(300, 7), qos: 1, messageId: 9, retain: false, dup: false },
    { cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'x/#', qos: 1 }] },
    { cmd: 'disconnect' },
  ];
  const bytes = Buffer.concat(packets.map((p) => mqttPacket.generate(p)));
  const parser = strictParser();
  assert.ok(!((parser as unknown as { _list: unknown })._list instanceof Duplex), 'buffers in a plain BufferList');
  const seen: Packet[] = [];
  parser.on('packet', (p: Packet) => seen.push(p));
  let sawPending = false;
  for (let i = 0; i < bytes.length; i += 7) {
    parser.parse(bytes.subarray(i, i + 7));
    if (pendingPacketLength(parser) > 7) sawPending = true;
  }
  assert.ok(sawPending, 'the length of a packet still arriving is known from its header');
  assert.deepEqual(seen.map((p) => p.cmd), ['connect', 'publish', 'subscribe', 'disconnect']);
  assert.equal((seen[0] as { clientId: string }).clientId, 'lean-1');
  assert.equal((seen[1] as { payload: Buffer }).payload.length, 300);
  assert.equal(pendingPacketLength(parser), -1, 'between packets');
});

test('a connection that closes leaves the linger at once (closed sockets of a storm are not held for 2 s); the CONNECT is counted', async () => {
  const t = createTestContext();
  try {
    const before = lingeringStreams();
    const stream = new MemoryStream();
    attachConnection(stream, t.ctx, 'memory');
    stream.feed(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'linger-1', keepalive: 0 }));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(stream.packets().map((p) => [p.cmd, (p as { returnCode?: number }).returnCode]), [['connack', 0]]);
    const closed = new Promise((r) => stream.once('close', r));
    stream.feed(Buffer.from([0xe0, 0x00])); // DISCONNECT: the broker ends the stream
    assert.equal(lingeringStreams(), before + 1, 'ended, waiting for the peer');
    await closed;
    assert.equal(lingeringStreams(), before, 'closed: no longer held');
    const outcomes = await t.ctx.metrics.connectOutcomesTotal.get();
    assert.equal(outcomes.values.find((v) => v.labels.code === 'success' && v.labels.version === '4')?.value, 1);
  } finally {
    t.close();
  }
});

test('a closed stream that is still referenced keeps neither its channel nor its session alive', async () => {
  // V8 may pretenure sockets: a dead socket in the old generation lives until a major GC, and
  // whatever it points to is copied and promoted by every scavenge until then
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const t = createTestContext();
  try {
    const stream = new MemoryStream();
    const refs = await (async () => {
      const channel = attachConnection(stream, t.ctx, 'memory');
      stream.feed(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'let-go-1', keepalive: 0 }));
      await new Promise((r) => setImmediate(r));
      assert.equal(channel.state, 'connected');
      const closed = new Promise((r) => stream.once('close', r));
      stream.feed(Buffer.from([0xe0, 0x00]));
      await closed;
      return { channel: new WeakRef(channel), session: new WeakRef(channel.session!) };
    })();
    await new Promise((r) => setImmediate(r)); // WeakRefs hold their target to the end of the job that made them
    gc();
    assert.ok(stream.listenerCount('data') > 0, 'the stream keeps its listeners (shared functions)');
    assert.equal(refs.channel.deref(), undefined, 'the channel is garbage while the stream is alive');
    assert.equal(refs.session.deref(), undefined, 'so is the session');
  } finally {
    t.close();
  }
});

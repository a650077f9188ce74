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
import { releaseParser, strictParser } from '../../src/transport/strict-parser.js';
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

test("the CONNACK leaves when the CONNECT's chunk is parsed, not a tick later; writes outside a chunk still wait for the tick", async () => {
  const t = createTestContext();
  try {
    const stream = new MemoryStream();
    const channel = attachConnection(stream, t.ctx, 'memory');
    await new Promise((r) => setImmediate(r)); // the stream flows: a push is a 'data' event at once
    stream.feed(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'flush-1', keepalive: 0 }));
    // no await: the chunk's packets have been handled and what they wrote is with the stream
    assert.deepEqual(stream.packets().map((p) => p.cmd), ['connack']);
    channel.io.write(Buffer.from([0xd0, 0x00]));
    channel.io.write(Buffer.from([0xd0, 0x00]));
    assert.equal(stream.written.length, 1, 'a write outside a chunk is corked until the tick');
    await new Promise((r) => process.nextTick(r));
    assert.equal(stream.written.length, 3, 'both once the tick came (a socket takes them in one writev)');
    assert.deepEqual(stream.packets().map((p) => p.cmd), ['connack', 'pingresp', 'pingresp']);
  } finally {
    t.close();
  }
});

test('a session that never subscribed nor had messages in flight makes no Maps, also when it ends and when the sweep counts it', async () => {
  const t = createTestContext();
  try {
    const stream = new MemoryStream();
    const channel = attachConnection(stream, t.ctx, 'memory');
    stream.feed(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'no-maps-1', keepalive: 0 }));
    await new Promise((r) => setImmediate(r));
    const session = channel.session!;
    const maps = () => Object.values(session).filter((v) => v instanceof Map).length;
    assert.equal(maps(), 0, 'none at CONNECT');
    t.ctx.broker.sweep(t.ctx.clock.now());
    assert.equal(maps(), 0, 'none after the sweep counted the in-flight messages');
    const closed = new Promise((r) => stream.once('close', r));
    stream.feed(Buffer.from([0xe0, 0x00]));
    await closed;
    assert.equal(t.ctx.broker.sessions.get('no-maps-1'), undefined, 'the clean session ended');
    assert.equal(maps(), 0, 'none when it ended');
    // made on first use, and then the same map
    assert.equal(session.subscriptions, session.subscriptions);
    assert.equal(session.subscriptionCount, 0);
    assert.equal(maps(), 1);
  } finally {
    t.close();
  }
});

test('a released parser serves the next connection as a new one would: level 4, nothing buffered, no sink, no listeners', () => {
  const v5 = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: 'old-5', keepalive: 0, properties: { sessionExpiryInterval: 10 } });
  const half = mqttPacket.generate({ cmd: 'publish', topic: 'left/over', payload: Buffer.alloc(100, 1), qos: 0, retain: false, dup: false }, { protocolVersion: 5 });
  const used = strictParser();
  const oldPackets: Packet[] = [];
  used.sink = { packet: (p) => oldPackets.push(p), framingError: () => undefined };
  used.on('packet', () => assert.fail('a listener of the old connection'));
  used.parse(Buffer.concat([v5, half.subarray(0, 40)]));
  assert.deepEqual(oldPackets.map((p) => p.cmd), ['connect']);
  releaseParser(used);

  const next = strictParser();
  assert.equal(next, used, 'the released parser is the next one handed out');
  assert.equal(next.sink, undefined);
  const stream = Buffer.concat([
    mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'new-4', keepalive: 0 }),
    mqttPacket.generate({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('x'), qos: 1, messageId: 3, retain: false, dup: false }),
  ]);
  const fresh = strictParser();
  const parsed = (p: typeof next, cut: number) => {
    const out: Packet[] = [];
    p.sink = { packet: (packet) => out.push(packet), framingError: (err) => assert.fail(err.message) };
    p.parse(stream.subarray(0, cut));
    p.parse(stream.subarray(cut));
    return out;
  };
  // 3.1.1 reads the PUBLISH without properties: a parser left at level 5 would misread it
  assert.deepEqual(parsed(next, 5), parsed(fresh, 5));
  assert.equal(next.listenerCount('packet'), 0);
  // released after whole packets only (the state machine's packet untouched): new again
  const whole = strictParser();
  assert.deepEqual(parsed(whole, stream.length).map((p) => p.cmd), ['connect', 'publish']);
  releaseParser(whole);
  const again = strictParser();
  assert.equal(again, whole);
  assert.deepEqual(parsed(again, 9), parsed(strictParser(), 9));
});

test("a chunk that writes once writes straight to the stream, uncorked; one that writes more gets them in one writev", async () => {
  class Counting extends MemoryStream {
    corks = 0;
    readonly batches: number[] = [];
    override cork(): void {
      this.corks++;
      super.cork();
    }
    override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
      this.batches.push(chunks.length);
      for (const c of chunks) this.written.push(c.chunk);
      cb();
    }
  }
  const t = createTestContext();
  try {
    const stream = new Counting();
    attachConnection(stream, t.ctx, 'memory');
    await new Promise((r) => setImmediate(r));
    stream.feed(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'straight-1', keepalive: 0 }));
    assert.equal(stream.corks, 0, 'the CONNACK alone: no cork');
    assert.deepEqual(stream.packets().map((p) => p.cmd), ['connack']);
    const ping = mqttPacket.generate({ cmd: 'pingreq' });
    stream.feed(Buffer.concat([ping, ping, ping]));
    assert.equal(stream.corks, 1, 'three answers: corked once');
    assert.deepEqual(stream.batches, [3], 'and written in one writev');
    assert.deepEqual(stream.packets().map((p) => p.cmd), ['connack', 'pingresp', 'pingresp', 'pingresp']);
    const bytesOut = (await t.ctx.metrics.bytesOutTotal.get()).values.reduce((n, v) => n + v.value, 0);
    assert.equal(bytesOut, 4 + 3 * 2, 'every byte counted once');
  } finally {
    t.close();
  }
});

test("a connection adds one 'close' listener and none for 'drain' until a write is refused; then a drain reaches the channel, and the listener's untrack is told once at close", async () => {
  /** A peer that takes bytes only when told to: writes beyond the 8-byte mark are refused. */
  class SlowPeer extends MemoryStream {
    private readonly waiting: (() => void)[] = [];
    constructor() {
      super();
      (this as unknown as { _writableState: { highWaterMark: number } })._writableState.highWaterMark = 8;
    }
    override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
      this.written.push(chunk);
      this.waiting.push(() => cb());
    }
    override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
      for (const c of chunks) this.written.push(c.chunk);
      this.waiting.push(() => cb());
    }
    accept(): void {
      for (const done of this.waiting.splice(0)) done();
    }
  }
  const t = createTestContext();
  try {
    const stream = new SlowPeer();
    const closeBefore = stream.listenerCount('close');
    const untracked: unknown[] = [];
    const ch = attachConnection(stream, t.ctx, 'memory', undefined, (s) => untracked.push(s));
    assert.equal(stream.listenerCount('close') - closeBefore, 1, "one 'close' listener; untrack is called from it");
    assert.equal(stream.listenerCount('drain'), 0);
    let drained = 0;
    const drainedBefore = ch.drained.bind(ch);
    ch.drained = () => {
      drained++;
      drainedBefore();
    };
    await new Promise((r) => setImmediate(r));
    stream.feed(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'drain-1', keepalive: 0 }));
    assert.deepEqual(stream.packets().map((p) => p.cmd), ['connack']);
    assert.equal(stream.listenerCount('drain'), 0, 'the CONNACK fit: no drain listener');
    const ping = mqttPacket.generate({ cmd: 'pingreq' });
    stream.feed(Buffer.concat([ping, ping, ping]));
    assert.equal(stream.listenerCount('drain'), 1, 'past the mark: watched, once');
    stream.feed(Buffer.concat([ping, ping]));
    assert.equal(stream.listenerCount('drain'), 1);
    assert.equal(drained, 0);
    stream.accept();
    await new Promise((r) => setImmediate(r));
    stream.accept();
    await new Promise((r) => setImmediate(r));
    assert.ok(drained >= 1, 'the drain reached the channel (which pumps the session)');
    assert.deepEqual(stream.packets().map((p) => p.cmd), ['connack', 'pingresp', 'pingresp', 'pingresp', 'pingresp', 'pingresp']);
    assert.deepEqual(untracked, []);
    const closed = new Promise((r) => stream.once('close', r));
    stream.feed(Buffer.from([0xe0, 0x00]));
    stream.accept();
    await closed;
    assert.deepEqual(untracked, [stream], 'told once, with the stream');
  } finally {
    t.close();
  }
});

test('sessions that never queued nor ran a retained snapshot share one empty queue and snapshot list; the first message queued gives a session its own', () => {
  const t = createTestContext();
  try {
    const a = t.ctx.broker.newSession('shared-a', 0);
    const b = t.ctx.broker.newSession('shared-b', 0);
    const arrays = (s: object) => Object.values(s).filter((v): v is unknown[] => Array.isArray(v));
    assert.equal(arrays(a).length, 2, 'the queue and the snapshot list');
    assert.ok(arrays(a).every((v, i) => v === arrays(b)[i] && v.length === 0), 'shared, empty');
    a.restorePending([{ message: { topic: 'q/1', payload: Buffer.from('m'), qos: 1, retain: false, origin: 'p' }, qos: 1, retainFlag: false }]);
    assert.equal(a.queued, 1);
    assert.equal(b.queued, 0, "the other session's queue is untouched");
    assert.ok(arrays(b).every((v) => v.length === 0));
    assert.deepEqual(a.pendingMessages().map((p) => p.message.topic), ['q/1']);
  } finally {
    t.close();
  }
});

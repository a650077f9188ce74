// Keep alive, the CONNECT timeout, will delay and session expiry, driven by a fake clock: the
// whole protocol (transport → channel → broker → session) over in-memory streams, the broker's
// sweep on the injected clock, so every case decides in simulated time, never by waiting.
import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import mqttPacket, { type IConnackPacket, type IDisconnectPacket, type IPublishPacket, type Packet } from 'mqtt-packet';
import { attachConnection } from '../../src/transport/connection.js';
import { createTestContext, type TestContext } from '../helpers/channel-context.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { MemoryStream } from '../helpers/memory-stream.js';
import type { Config } from '../../src/config.js';

const turn = () => new Promise((r) => setImmediate(r));
/** Lets asynchronous steps (socket writes, a will's authorization) finish. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await turn();
}

class MemClient {
  readonly stream = new MemoryStream();
  constructor(readonly t: TestContext, readonly version: 4 | 5) {
    attachConnection(this.stream, t.ctx, 'memory');
  }
  send(packet: Record<string, unknown>): void {
    this.stream.feed(mqttPacket.generate(packet as unknown as Packet, { protocolVersion: this.version }));
  }
  packets(): Packet[] {
    return this.stream.packets(this.version);
  }
  of<T extends Packet>(cmd: string): T[] {
    return this.packets().filter((p) => p.cmd === cmd) as T[];
  }
  get closed(): boolean {
    return this.stream.destroyed;
  }
  async connect(options: Record<string, unknown> = {}): Promise<IConnackPacket> {
    this.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: this.version, clean: true, clientId: `c${Math.random().toString(36).slice(2)}`, keepalive: 0, ...options });
    await settle();
    const connack = this.of<IConnackPacket>('connack')[0];
    assert.ok(connack, 'CONNACK');
    return connack;
  }
}

describe('timers on the injected clock', () => {
  let t: TestContext | undefined;
  let clock: FakeClock;
  afterEach(() => t?.close());
  /** A broker on a fake clock; advance() moves time in sweep-sized steps, letting I/O settle between them. */
  function broker(overrides: Partial<Config> = {}): TestContext {
    clock = new FakeClock();
    t = createTestContext(overrides, { clock });
    return t;
  }
  async function advance(ms: number): Promise<void> {
    for (let left = ms; left > 0; left -= 1000) {
      clock.advance(Math.min(1000, left));
      await settle();
    }
  }

  for (const v of [4, 5] as const) {
    const name = v === 5 ? 'MQTT 5.0' : 'MQTT 3.1.1';
    it(`${name}: a silent client is closed after 1.5 × keep alive, not before [MQTT-3.1.2-24]`, async () => {
      const c = new MemClient(broker(), v);
      await c.connect({ keepalive: 10 });
      await advance(15_000);
      assert.equal(c.closed, false, 'open at 1.5 × keep alive');
      await advance(1000);
      assert.equal(c.closed, true, 'closed by the next sweep');
      if (v === 5) assert.equal(c.of<IDisconnectPacket>('disconnect')[0]?.reasonCode, 0x8d, 'DISCONNECT Keep Alive timeout');
      else assert.equal(c.of('disconnect').length, 0, '3.1.1 has no server DISCONNECT');
    });

    it(`${name}: PINGREQ within the keep alive keeps the connection, each answered`, async () => {
      const c = new MemClient(broker(), v);
      await c.connect({ keepalive: 10 });
      for (let i = 0; i < 6; i++) {
        await advance(9000);
        c.send({ cmd: 'pingreq' });
        await settle();
      }
      assert.equal(c.closed, false);
      assert.equal(c.of('pingresp').length, 6);
    });

    it(`${name}: keep alive 0 turns the mechanism off`, async () => {
      const c = new MemClient(broker(), v);
      const connack = await c.connect({ keepalive: 0 });
      assert.equal(connack.properties?.serverKeepAlive, undefined);
      await advance(3_600_000);
      assert.equal(c.closed, false);
    });

    it(`${name}: a socket without CONNECT is closed after the connect timeout`, async () => {
      const c = new MemClient(broker({ connectTimeoutS: 5 }), v);
      await advance(5000);
      assert.equal(c.closed, false);
      await advance(1000);
      assert.equal(c.closed, true);
    });
  }

  it('MQTT 5.0: a keep alive above the maximum gets Server Keep Alive, and that one is enforced [MQTT-3.2.2-21]', async () => {
    const c = new MemClient(broker({ maxKeepaliveS: 20 }), 5);
    const connack = await c.connect({ keepalive: 60 });
    assert.equal(connack.properties?.serverKeepAlive, 20);
    await advance(30_000);
    assert.equal(c.closed, false, 'open at 1.5 × the server keep alive');
    await advance(1000);
    assert.equal(c.closed, true);
    assert.equal(c.of<IDisconnectPacket>('disconnect')[0]?.reasonCode, 0x8d);
  });

  it('MQTT 5.0: keep alive 0 under a maximum gets the maximum imposed', async () => {
    const c = new MemClient(broker({ maxKeepaliveS: 20 }), 5);
    const connack = await c.connect({ keepalive: 0 });
    assert.equal(connack.properties?.serverKeepAlive, 20);
    await advance(31_000);
    assert.equal(c.closed, true);
  });

  it('MQTT 3.1.1: a keep alive above the maximum is refused', async () => {
    const c = new MemClient(broker({ maxKeepaliveS: 20 }), 4);
    const connack = await c.connect({ keepalive: 60 });
    assert.notEqual(connack.returnCode, 0);
  });

  it('MQTT 5.0: a will with a delay goes at the delay after an abnormal disconnect, not before', async () => {
    const ctx = broker();
    const sub = new MemClient(ctx, 5);
    await sub.connect({ clientId: 'watcher' });
    sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'wills/#', qos: 0 }] });
    await settle();
    const dying = new MemClient(ctx, 5);
    await dying.connect({
      clientId: 'dying',
      properties: { sessionExpiryInterval: 300 },
      will: { topic: 'wills/dying', payload: Buffer.from('gone'), qos: 0, retain: false, properties: { willDelayInterval: 30 } },
    });
    dying.stream.destroy(); // no DISCONNECT: abnormal
    await settle();
    await advance(29_000);
    assert.equal(sub.of('publish').length, 0, 'not before the delay');
    await advance(2000);
    const wills = sub.of<IPublishPacket>('publish');
    assert.equal(wills.length, 1);
    assert.equal(wills[0].topic, 'wills/dying');
  });

  it('MQTT 5.0: a disconnected session ends at its expiry interval (the broker sweep)', async () => {
    const ctx = broker();
    const c = new MemClient(ctx, 5);
    await c.connect({ clientId: 'expiring', clean: true, properties: { sessionExpiryInterval: 60 } });
    c.send({ cmd: 'disconnect', reasonCode: 0 });
    await settle();
    assert.ok(ctx.ctx.broker.sessions.has('expiring'));
    await advance(59_000);
    assert.ok(ctx.ctx.broker.sessions.has('expiring'), 'kept within the interval');
    await advance(2000);
    assert.equal(ctx.ctx.broker.sessions.has('expiring'), false, 'ended after it');
  });

  it('the broker stops its sweep on the clock when stopped', async () => {
    const ctx = broker();
    assert.ok(clock.pending > 0);
    ctx.close();
    clock.advance(5000);
    assert.equal(clock.pending, 0);
  });
});

// Configured limits: maximum packet size (total bytes, from the fixed header), the session
// queue with drop-oldest / drop-new, the connect timeout, max connections, subscriptions
// per client. Each limit is hit and the broker keeps serving.
import { after, afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { IDisconnectPacket, IPublishPacket, ISubackPacket } from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep, uniqueId, VERSIONS, versionName, withTimeout, type Version } from '../helpers/mqtt.js';
import { RawClient } from '../helpers/raw-client.js';

describe('limits', { timeout: 30000 }, () => {
  const pool = new ClientPool();
  const raws: RawClient[] = [];
  const brokers: TestBroker[] = [];
  const broker = async (overrides: Parameters<typeof startBroker>[0]) => {
    const b = await startBroker(overrides);
    brokers.push(b);
    return b;
  };
  afterEach(async () => {
    await pool.closeAll();
    for (const r of raws.splice(0)) r.close();
    for (const b of brokers.splice(0)) await b.close();
  });

  /** A QoS 0 PUBLISH whose whole encoding is exactly `total` bytes. */
  function publishOfSize(v: Version, total: number): IPublishPacket {
    const base = { cmd: 'publish' as const, topic: 'size/x', qos: 0 as const, retain: false, dup: false };
    // header (1) + remaining length (2 bytes for 128..16383) + topic (2 + 6) + properties length (5.0: 1)
    const overhead = 1 + 2 + 8 + (v === 5 ? 1 : 0);
    return { ...base, payload: Buffer.alloc(total - overhead, 0x61) };
  }

  for (const v of VERSIONS) {
    describe(versionName(v), () => {
      it('a packet of exactly the maximum size is accepted; one byte more is refused', async () => {
        const b = await broker({ maxPacketSize: 1024 });
        const sub = await pool.connect(b.url, { protocolVersion: v, clientId: uniqueId() });
        await sub.mqtt.subscribeAsync('size/x', { qos: 0 });
        const { client } = await RawClient.connect(b.port, v, { clientId: uniqueId() });
        raws.push(client);
        const ok = publishOfSize(v, 1024);
        assert.equal((await import('mqtt-packet')).default.generate(ok, { protocolVersion: v }).length, 1024);
        client.send(ok);
        await sub.waitForMessages(1);
        client.send(publishOfSize(v, 1025)); // Maximum Packet Size counts the whole packet [MQTT-3.2.2-15]
        if (v === 5) assert.equal(((await client.next('disconnect')) as IDisconnectPacket).reasonCode, 0x95);
        await client.waitForClose();
        await sleep(100);
        assert.equal(sub.messages.length, 1);
      });

      it('a full offline queue drops the oldest message (drop-oldest)', async () => {
        const b = await broker({ maxQueued: 3, queueOverflow: 'drop-oldest' });
        const id = uniqueId('q');
        const session = v === 5 ? { clean: false, properties: { sessionExpiryInterval: 60 } } : { clean: false };
        const sub = await pool.connect(b.url, { protocolVersion: v, clientId: id, ...session });
        await sub.mqtt.subscribeAsync('queue/x', { qos: 1 });
        await sub.mqtt.endAsync();
        const pub = await pool.connect(b.url, { protocolVersion: v, clientId: uniqueId() });
        for (let i = 0; i < 5; i++) await pub.mqtt.publishAsync('queue/x', `m${i}`, { qos: 1 });
        const back = await pool.connect(b.url, { protocolVersion: v, clientId: id, ...session });
        const got = await back.waitForMessages(3);
        assert.deepEqual(got.map((m) => m.payload), ['m2', 'm3', 'm4']);
        await sleep(150);
        assert.equal(back.messages.length, 3);
      });

      it('a silent socket is closed after the connect timeout', async () => {
        const b = await broker({ connectTimeoutS: 1 });
        const client = await RawClient.open(b.port, v);
        raws.push(client);
        const start = Date.now();
        await client.waitForClose(3500);
        assert.ok(Date.now() - start >= 900, 'not before the timeout');
      });
    });
  }

  it('MQTT 5.0: messages larger than the client Maximum Packet Size are not sent to it', async () => {
    const b = await broker({});
    const sub = await pool.connect(b.url, { protocolVersion: 5, clientId: uniqueId(), properties: { maximumPacketSize: 200 } });
    await sub.mqtt.subscribeAsync('client-max/#', { qos: 1 });
    const pub = await pool.connect(b.url, { protocolVersion: 5, clientId: uniqueId() });
    await pub.mqtt.publishAsync('client-max/big', 'x'.repeat(500), { qos: 1 });
    await pub.mqtt.publishAsync('client-max/small', 'fits', { qos: 1 });
    const [m] = await sub.waitForMessages(1);
    assert.equal(m.payload, 'fits'); // [MQTT-3.1.2-24]: discarded as if delivered
    assert.equal(sub.mqtt.connected, true);
  });

  it('drop-new keeps the oldest queued messages', async () => {
    const b = await broker({ maxQueued: 2, queueOverflow: 'drop-new' });
    const id = uniqueId('q');
    const sub = await pool.connect(b.url, { protocolVersion: 5, clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    await sub.mqtt.subscribeAsync('queue/y', { qos: 1 });
    await sub.mqtt.endAsync();
    const pub = await pool.connect(b.url, { protocolVersion: 5, clientId: uniqueId() });
    for (let i = 0; i < 4; i++) await pub.mqtt.publishAsync('queue/y', `m${i}`, { qos: 1 });
    const back = await pool.connect(b.url, { protocolVersion: 5, clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    const got = await back.waitForMessages(2);
    assert.deepEqual(got.map((m) => m.payload), ['m0', 'm1']);
  });

  it('connections beyond maxConnections are refused; the others keep working', async () => {
    const b = await broker({ maxConnections: 2 });
    const first = await pool.connect(b.url, { protocolVersion: 5, clientId: uniqueId() });
    const second = await pool.connect(b.url, { protocolVersion: 4, clientId: uniqueId() });
    const extra = net.connect({ host: '127.0.0.1', port: b.port });
    extra.on('error', () => undefined);
    await withTimeout(new Promise((resolve) => extra.once('close', resolve)), 3000, 'the extra socket to be closed');
    await first.mqtt.subscribeAsync('maxconn', { qos: 1 });
    await second.mqtt.publishAsync('maxconn', 'ok', { qos: 1 });
    await first.waitForMessages(1);
    // a slot frees when a client leaves
    await second.mqtt.endAsync();
    await sleep(100);
    const third = await pool.connect(b.url, { protocolVersion: 5, clientId: uniqueId() });
    assert.equal(third.mqtt.connected, true);
  });

  it('subscriptions beyond the per-client limit are refused in SUBACK (0x97 / 0x80)', async () => {
    const b = await broker({ maxSubscriptionsPerClient: 2 });
    for (const v of VERSIONS) {
      const { client } = await RawClient.connect(b.port, v, { clientId: uniqueId() });
      raws.push(client);
      client.send({ cmd: 'subscribe', messageId: 1, subscriptions: ['a', 'b', 'c'].map((topic) => ({ topic, qos: 1 as const })) });
      const suback = (await client.next('suback')) as ISubackPacket;
      assert.deepEqual(suback.granted, [1, 1, v === 5 ? 0x97 : 0x80]);
      // replacing an existing subscription is not a new one
      client.send({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'a', qos: 0 }] });
      assert.deepEqual(((await client.next('suback')) as ISubackPacket).granted, [0]);
    }
  });
});

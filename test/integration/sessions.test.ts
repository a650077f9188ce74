// Persistent sessions: 3.1.1 Clean Session 0 keeps subscriptions and queues QoS 1/2 while
// offline; 5.0 Session Expiry Interval decides how long; an expired session is gone
// (session present 0) and DISCONNECT may change the interval, but not from 0.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IDisconnectPacket } from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep, uniqueId, VERSIONS, versionName, type Version } from '../helpers/mqtt.js';
import { RawClient } from '../helpers/raw-client.js';

describe('sessions', { timeout: 20000 }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  before(async () => (broker = await startBroker()));
  afterEach(() => pool.closeAll());
  after(() => broker.close());

  const persistent = (v: Version, expiryS = 60) => (v === 5 ? { clean: false, properties: { sessionExpiryInterval: expiryS } } : { clean: false });

  for (const v of VERSIONS) {
    describe(versionName(v), () => {
      it('QoS 1/2 messages published while offline are delivered on reconnect; QoS 0 is not kept', async () => {
        const id = uniqueId('persist');
        const sub = await pool.connect(broker.url, { protocolVersion: v, clientId: id, ...persistent(v) });
        assert.equal(sub.connack.sessionPresent, false);
        await sub.mqtt.subscribeAsync(`offline/${v}`, { qos: 2 });
        await sub.mqtt.endAsync();
        const pub = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
        for (const q of [0, 1, 2] as const) await pub.mqtt.publishAsync(`offline/${v}`, `q${q}`, { qos: q });
        const back = await pool.connect(broker.url, { protocolVersion: v, clientId: id, ...persistent(v) });
        assert.equal(back.connack.sessionPresent, true);
        const got = await back.waitForMessages(2);
        assert.deepEqual(got.map((m) => [m.payload, m.packet.qos]), [['q1', 1], ['q2', 2]]);
        // the subscription survived too
        await pub.mqtt.publishAsync(`offline/${v}`, 'live', { qos: 1 });
        assert.equal((await back.waitForMessages(3))[2].payload, 'live');
        await sleep(100);
        assert.equal(back.messages.length, 3);
      });

      it('a clean start discards the previous session', async () => {
        const id = uniqueId('clean');
        const sub = await pool.connect(broker.url, { protocolVersion: v, clientId: id, ...persistent(v) });
        await sub.mqtt.subscribeAsync(`clean/${v}`, { qos: 1 });
        await sub.mqtt.endAsync();
        const pub = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
        await pub.mqtt.publishAsync(`clean/${v}`, 'queued', { qos: 1 });
        const fresh = await pool.connect(broker.url, { protocolVersion: v, clientId: id, clean: true });
        assert.equal(fresh.connack.sessionPresent, false); // [MQTT-3.2.2-2]
        await pub.mqtt.publishAsync(`clean/${v}`, 'after', { qos: 1 });
        await sleep(200);
        assert.deepEqual(fresh.messages, []);
      });
    });
  }

  describe('MQTT 5.0', () => {
    it('an expired session is removed: session present 0 and nothing queued', async () => {
      const id = uniqueId('expire');
      const sub = await pool.connect(broker.url, { protocolVersion: 5, clientId: id, ...persistent(5, 1) });
      await sub.mqtt.subscribeAsync('expire/x', { qos: 1 });
      await sub.mqtt.endAsync();
      const pub = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
      await pub.mqtt.publishAsync('expire/x', 'lost', { qos: 1 });
      await sleep(2300); // expiry 1 s, sweep every second
      const back = await pool.connect(broker.url, { protocolVersion: 5, clientId: id, ...persistent(5, 1) });
      assert.equal(back.connack.sessionPresent, false);
      await sleep(200);
      assert.deepEqual(back.messages, []);
    });

    it('a session within its expiry interval is present', async () => {
      const id = uniqueId('within');
      const sub = await pool.connect(broker.url, { protocolVersion: 5, clientId: id, ...persistent(5, 5) });
      await sub.mqtt.subscribeAsync('within/x', { qos: 1 });
      await sub.mqtt.endAsync();
      await sleep(1200);
      const back = await pool.connect(broker.url, { protocolVersion: 5, clientId: id, ...persistent(5, 5) });
      assert.equal(back.connack.sessionPresent, true);
    });

    it('session expiry 0 ends the session at disconnect', async () => {
      const id = uniqueId('zero');
      const sub = await pool.connect(broker.url, { protocolVersion: 5, clientId: id, clean: false });
      await sub.mqtt.subscribeAsync('zero/x', { qos: 1 });
      await sub.mqtt.endAsync();
      const back = await pool.connect(broker.url, { protocolVersion: 5, clientId: id, clean: false });
      assert.equal(back.connack.sessionPresent, false);
    });

    it('DISCONNECT can shorten the session expiry to 0', async () => {
      const id = uniqueId('shorten');
      const sub = await pool.connect(broker.url, { protocolVersion: 5, clientId: id, ...persistent(5, 60) });
      await sub.mqtt.subscribeAsync('shorten/x', { qos: 1 });
      await sub.mqtt.endAsync(false, { properties: { sessionExpiryInterval: 0 } });
      const back = await pool.connect(broker.url, { protocolVersion: 5, clientId: id, clean: false });
      assert.equal(back.connack.sessionPresent, false);
    });

    it('DISCONNECT may not set a session expiry when CONNECT had 0: protocol error', async () => {
      const { client } = await RawClient.connect(broker.port, 5, { clientId: uniqueId() });
      try {
        client.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 30 } });
        const d = (await client.next('disconnect')) as IDisconnectPacket;
        assert.equal(d.reasonCode, 0x82); // [MQTT-3.14.2-2]
        await client.waitForClose();
      } finally {
        client.close();
      }
    });
  });
});

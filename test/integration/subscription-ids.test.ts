// Overlapping subscriptions give one copy at the highest granted QoS [MQTT-3.3.4-2]; in MQTT 5
// it carries every matching Subscription Identifier [MQTT-3.3.4-3, MQTT-3.3.4-4].
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import mqttPacket from 'mqtt-packet';
import type { IDisconnectPacket } from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep, uniqueId, VERSIONS, versionName } from '../helpers/mqtt.js';
import { RawClient } from '../helpers/raw-client.js';

const ids = (x: number | number[] | undefined): number[] => (x === undefined ? [] : Array.isArray(x) ? [...x].sort((a, b) => a - b) : [x]);

describe('overlapping subscriptions and subscription identifiers', { timeout: 20000 }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  before(async () => (broker = await startBroker()));
  afterEach(() => pool.closeAll());
  after(() => broker.close());

  for (const v of VERSIONS) {
    describe(versionName(v), () => {
      it('overlapping subscriptions deliver one copy at the highest QoS', async () => {
        const sub = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
        await sub.mqtt.subscribeAsync(`ov/${v}/#`, { qos: 0 });
        await sub.mqtt.subscribeAsync(`ov/${v}/+/c`, { qos: 2 });
        await sub.mqtt.subscribeAsync(`ov/${v}/b/c`, { qos: 1 });
        const pub = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
        await pub.mqtt.publishAsync(`ov/${v}/b/c`, 'x', { qos: 2 });
        const [m] = await sub.waitForMessages(1);
        assert.equal(m.packet.qos, 2);
        await sleep(150);
        assert.equal(sub.messages.length, 1);
      });
    });
  }

  describe('MQTT 5.0', () => {
    const connect = () => pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });

    it('the copy carries every matching subscription identifier', async () => {
      const sub = await connect();
      await sub.mqtt.subscribeAsync('sid/+', { qos: 0, properties: { subscriptionIdentifier: 5 } });
      await sub.mqtt.subscribeAsync('sid/a', { qos: 1, properties: { subscriptionIdentifier: 7 } });
      await sub.mqtt.subscribeAsync('sid/#', { qos: 0 });
      const pub = await connect();
      await pub.mqtt.publishAsync('sid/a', 'both', { qos: 1 });
      await pub.mqtt.publishAsync('sid/b', 'one', { qos: 1 });
      const [both, one] = await sub.waitForMessages(2);
      assert.deepEqual(ids(both.packet.properties?.subscriptionIdentifier), [5, 7]);
      assert.equal(both.packet.qos, 1);
      assert.deepEqual(ids(one.packet.properties?.subscriptionIdentifier), [5]);
      await sleep(150);
      assert.equal(sub.messages.length, 2);
    });

    it('a subscription without an identifier adds none', async () => {
      const sub = await connect();
      await sub.mqtt.subscribeAsync('sid/none', { qos: 1 });
      const pub = await connect();
      await pub.mqtt.publishAsync('sid/none', 'x', { qos: 1 });
      const [m] = await sub.waitForMessages(1);
      assert.equal(m.packet.properties?.subscriptionIdentifier, undefined);
    });

    it('retained messages carry the identifier of the subscription that fetched them', async () => {
      const pub = await connect();
      await pub.mqtt.publishAsync('sid/ret', 'r', { qos: 1, retain: true });
      const sub = await connect();
      await sub.mqtt.subscribeAsync('sid/ret', { qos: 1, properties: { subscriptionIdentifier: 42 } });
      const [m] = await sub.waitForMessages(1);
      assert.deepEqual(ids(m.packet.properties?.subscriptionIdentifier), [42]);
      await pub.mqtt.publishAsync('sid/ret', '', { qos: 1, retain: true });
    });

    it('resubscribing replaces the identifier', async () => {
      const sub = await connect();
      await sub.mqtt.subscribeAsync('sid/re', { qos: 1, properties: { subscriptionIdentifier: 1 } });
      await sub.mqtt.subscribeAsync('sid/re', { qos: 1, properties: { subscriptionIdentifier: 2 } });
      const pub = await connect();
      await pub.mqtt.publishAsync('sid/re', 'x', { qos: 1 });
      const [m] = await sub.waitForMessages(1);
      assert.deepEqual(ids(m.packet.properties?.subscriptionIdentifier), [2]);
    });

    it('subscription identifier 0 is a protocol error', async () => {
      const { client } = await RawClient.connect(broker.port, 5, { clientId: uniqueId() });
      try {
        // mqtt-packet will not encode 0: encode 1 and patch the variable byte integer
        const bytes = mqttPacket.generate(
          { cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'sid/zero', qos: 0 }], properties: { subscriptionIdentifier: 1 } },
          { protocolVersion: 5 },
        );
        // fixed header (2), packet id (2), property length (1), then 0x0B Subscription Identifier
        assert.equal(bytes[5], 0x0b);
        bytes[6] = 0;
        client.write(bytes);
        const d = (await client.next('disconnect')) as IDisconnectPacket;
        assert.equal(d.reasonCode, 0x82); // [MQTT-3.8.2-?] value 0 is a protocol error
      } finally {
        client.close();
      }
    });
  });
});

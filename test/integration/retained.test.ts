// Retained messages: set, replace, delete with an empty payload [MQTT-3.3.1-10], delivered
// at min(message QoS, subscription QoS) with RETAIN 1 on subscribe [MQTT-3.3.1-8]; live
// copies carry RETAIN 0 unless Retain As Published; Retain Handling 0/1/2 (MQTT 5).
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep, uniqueId, VERSIONS, versionName } from '../helpers/mqtt.js';

describe('retained', { timeout: 20000 }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  before(async () => (broker = await startBroker()));
  afterEach(() => pool.closeAll());
  after(() => broker.close());

  for (const v of VERSIONS) {
    describe(versionName(v), () => {
      const connect = () => pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });

      it('a new subscriber gets the retained message with RETAIN 1, the latest one after a replace', async () => {
        const pub = await connect();
        await pub.mqtt.publishAsync(`ret/${v}/a`, 'old', { qos: 1, retain: true });
        await pub.mqtt.publishAsync(`ret/${v}/a`, 'new', { qos: 1, retain: true });
        const sub = await connect();
        await sub.mqtt.subscribeAsync(`ret/${v}/#`, { qos: 1 });
        const [m] = await sub.waitForMessages(1);
        assert.equal(m.payload, 'new');
        assert.equal(m.packet.retain, true);
        await sleep(100);
        assert.equal(sub.messages.length, 1);
      });

      it('an empty retained payload deletes the retained message', async () => {
        const pub = await connect();
        await pub.mqtt.publishAsync(`ret/${v}/del`, 'gone soon', { qos: 1, retain: true });
        await pub.mqtt.publishAsync(`ret/${v}/del`, '', { qos: 1, retain: true });
        const sub = await connect();
        await sub.mqtt.subscribeAsync(`ret/${v}/del`, { qos: 1 });
        await sleep(200);
        assert.deepEqual(sub.messages, []);
      });

      it('retained messages are delivered at min(message QoS, subscription QoS)', async () => {
        const pub = await connect();
        await pub.mqtt.publishAsync(`ret/${v}/q/two`, 'q2', { qos: 2, retain: true });
        await pub.mqtt.publishAsync(`ret/${v}/q/one`, 'q1', { qos: 1, retain: true });
        const sub1 = await connect();
        await sub1.mqtt.subscribeAsync(`ret/${v}/q/+`, { qos: 1 });
        const got1 = await sub1.waitForMessages(2);
        assert.deepEqual(got1.map((m) => [m.payload, m.packet.qos]).sort(), [['q1', 1], ['q2', 1]]);
        const sub0 = await connect();
        await sub0.mqtt.subscribeAsync(`ret/${v}/q/two`, { qos: 0 });
        const [m0] = await sub0.waitForMessages(1);
        assert.equal(m0.packet.qos, 0);
        const sub2 = await connect();
        await sub2.mqtt.subscribeAsync(`ret/${v}/q/one`, { qos: 2 });
        const [m2] = await sub2.waitForMessages(1);
        assert.equal(m2.packet.qos, 1);
      });

      it('a live copy of a retained publish reaches existing subscribers with RETAIN 0', async () => {
        const sub = await connect();
        await sub.mqtt.subscribeAsync(`ret/${v}/live`, { qos: 1 });
        const pub = await connect();
        await pub.mqtt.publishAsync(`ret/${v}/live`, 'live', { qos: 1, retain: true });
        const [m] = await sub.waitForMessages(1);
        assert.equal(m.packet.retain, false); // [MQTT-3.3.1-9] (3.1.1), Retain As Published 0 (5.0)
      });

      it('a leading wildcard does not match $ topics', async () => {
        const sub = await connect();
        await sub.mqtt.subscribeAsync('#', { qos: 0 });
        await broker.server.broker.publishSys();
        await sleep(200);
        assert.equal(sub.messages.some((m) => m.topic.startsWith('$')), false); // [MQTT-4.7.2-1]
      });
    });
  }

  describe('MQTT 5.0', () => {
    const connect = () => pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });

    it('Retain As Published keeps RETAIN 1 on live copies', async () => {
      const sub = await connect();
      await sub.mqtt.subscribeAsync('rap/x', { qos: 1, rap: true });
      const pub = await connect();
      await pub.mqtt.publishAsync('rap/x', 'kept', { qos: 1, retain: true });
      await pub.mqtt.publishAsync('rap/x', 'plain', { qos: 1, retain: false });
      const got = await sub.waitForMessages(2);
      assert.deepEqual(got.map((m) => [m.payload, m.packet.retain]), [['kept', true], ['plain', false]]);
    });

    it('Retain Handling 0 sends retained messages on every subscribe', async () => {
      const pub = await connect();
      await pub.mqtt.publishAsync('rh/0', 'r', { qos: 1, retain: true });
      const sub = await connect();
      await sub.mqtt.subscribeAsync('rh/0', { qos: 1, rh: 0 });
      await sub.waitForMessages(1);
      await sub.mqtt.subscribeAsync('rh/0', { qos: 1, rh: 0 });
      await sub.waitForMessages(2);
    });

    it('Retain Handling 1 sends retained messages only when the subscription is new', async () => {
      const pub = await connect();
      await pub.mqtt.publishAsync('rh/1', 'r', { qos: 1, retain: true });
      const sub = await connect();
      await sub.mqtt.subscribeAsync('rh/1', { qos: 1, rh: 1 });
      await sub.waitForMessages(1);
      await sub.mqtt.subscribeAsync('rh/1', { qos: 1, rh: 1 });
      await sleep(200);
      assert.equal(sub.messages.length, 1); // [MQTT-3.3.1-10]
    });

    it('Retain Handling 2 sends no retained messages', async () => {
      const pub = await connect();
      await pub.mqtt.publishAsync('rh/2', 'r', { qos: 1, retain: true });
      const sub = await connect();
      await sub.mqtt.subscribeAsync('rh/2', { qos: 1, rh: 2 });
      await sleep(200);
      assert.equal(sub.messages.length, 0); // [MQTT-3.3.1-11]
      await pub.mqtt.publishAsync('rh/2', 'live', { qos: 1 });
      const [m] = await sub.waitForMessages(1);
      assert.equal(m.payload, 'live');
    });
  });
});

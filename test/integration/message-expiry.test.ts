// MQTT 5 Message Expiry Interval [MQTT-3.3.2-5, MQTT-3.3.2-6]: a message that expires while
// queued is not delivered; one that is delivered later carries the remaining interval.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep, uniqueId } from '../helpers/mqtt.js';

describe('message expiry (MQTT 5.0)', { timeout: 20000, concurrency: true }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  before(async () => (broker = await startBroker()));
  // the tests wait on time, so they run concurrently and clean up together
  after(async () => {
    await pool.closeAll();
    await broker.close();
  });

  const persistent = { clean: false, properties: { sessionExpiryInterval: 60 } };

  it('a queued message that expires while the subscriber is offline is dropped; others carry the remaining interval', async () => {
    const id = uniqueId('exp');
    const sub = await pool.connect(broker.url, { protocolVersion: 5, clientId: id, ...persistent });
    await sub.mqtt.subscribeAsync('exp/q', { qos: 1 });
    await sub.mqtt.endAsync();
    const pub = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
    await pub.mqtt.publishAsync('exp/q', 'short', { qos: 1, properties: { messageExpiryInterval: 1 } });
    await pub.mqtt.publishAsync('exp/q', 'long', { qos: 1, properties: { messageExpiryInterval: 60 } });
    await pub.mqtt.publishAsync('exp/q', 'forever', { qos: 1 });
    await sleep(2100);
    const back = await pool.connect(broker.url, { protocolVersion: 5, clientId: id, ...persistent });
    const got = await back.waitForMessages(2);
    assert.deepEqual(got.map((m) => m.payload), ['long', 'forever']);
    const remaining = got[0].packet.properties?.messageExpiryInterval;
    assert.ok(remaining !== undefined && remaining <= 58 && remaining >= 50, `remaining interval ${remaining}`);
    assert.equal(got[1].packet.properties?.messageExpiryInterval, undefined);
    await sleep(100);
    assert.equal(back.messages.length, 2);
  });

  it('a live message carries its expiry interval', async () => {
    const sub = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
    await sub.mqtt.subscribeAsync('exp/live', { qos: 1 });
    const pub = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
    await pub.mqtt.publishAsync('exp/live', 'x', { qos: 1, properties: { messageExpiryInterval: 30 } });
    const [m] = await sub.waitForMessages(1);
    const e = m.packet.properties?.messageExpiryInterval;
    assert.ok(e === 30 || e === 29, `expiry ${e}`);
  });

  it('an expired retained message is not sent to new subscribers', async () => {
    const pub = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
    await pub.mqtt.publishAsync('exp/ret/short', 'short', { qos: 1, retain: true, properties: { messageExpiryInterval: 1 } });
    await pub.mqtt.publishAsync('exp/ret/long', 'long', { qos: 1, retain: true, properties: { messageExpiryInterval: 60 } });
    await sleep(1200);
    const sub = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
    await sub.mqtt.subscribeAsync('exp/ret/+', { qos: 1 });
    const got = await sub.waitForMessages(1);
    assert.equal(got[0].payload, 'long');
    assert.ok((got[0].packet.properties?.messageExpiryInterval ?? 0) <= 59);
    await sleep(150);
    assert.equal(sub.messages.length, 1);
  });

  it('an MQTT 3.1.1 subscriber gets the message until it expires', async () => {
    const id = uniqueId('exp311');
    const sub = await pool.connect(broker.url, { protocolVersion: 4, clientId: id, clean: false });
    await sub.mqtt.subscribeAsync('exp/311', { qos: 1 });
    await sub.mqtt.endAsync();
    const pub = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
    await pub.mqtt.publishAsync('exp/311', 'short', { qos: 1, properties: { messageExpiryInterval: 1 } });
    await pub.mqtt.publishAsync('exp/311', 'long', { qos: 1, properties: { messageExpiryInterval: 60 } });
    await sleep(1200);
    const back = await pool.connect(broker.url, { protocolVersion: 4, clientId: id, clean: false });
    const got = await back.waitForMessages(1);
    assert.equal(got[0].payload, 'long');
    await sleep(100);
    assert.equal(back.messages.length, 1);
    await pool.connect(broker.url, { protocolVersion: 4, clientId: id, clean: true });
  });
});

// MQTT 5 No Local [MQTT-3.8.3-3]: a subscription with No Local does not get the messages its
// own client publishes; other clients' messages, and subscriptions without it, are unaffected.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep, uniqueId } from '../helpers/mqtt.js';

describe('no local (MQTT 5.0)', { timeout: 20000 }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  before(async () => (broker = await startBroker()));
  afterEach(() => pool.closeAll());
  after(() => broker.close());

  it('own messages are not delivered to a No Local subscription; others are', async () => {
    const self = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
    await self.mqtt.subscribeAsync('nl/x', { qos: 1, nl: true });
    const other = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
    await self.mqtt.publishAsync('nl/x', 'mine', { qos: 1 });
    await other.mqtt.publishAsync('nl/x', 'theirs', { qos: 1 });
    const got = await self.waitForMessages(1);
    assert.equal(got[0].payload, 'theirs');
    await sleep(150);
    assert.equal(self.messages.length, 1);
  });

  it('without No Local a client gets its own messages', async () => {
    const self = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
    await self.mqtt.subscribeAsync('nl/y', { qos: 1, nl: false });
    await self.mqtt.publishAsync('nl/y', 'mine', { qos: 1 });
    const [m] = await self.waitForMessages(1);
    assert.equal(m.payload, 'mine');
  });

  it('an overlapping subscription without No Local still delivers own messages once', async () => {
    const self = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
    await self.mqtt.subscribeAsync('nl/z', { qos: 1, nl: true });
    await self.mqtt.subscribeAsync('nl/+', { qos: 0 });
    await self.mqtt.publishAsync('nl/z', 'mine', { qos: 1 });
    const [m] = await self.waitForMessages(1);
    assert.equal(m.packet.qos, 0, 'only the subscription without No Local matched');
    await sleep(150);
    assert.equal(self.messages.length, 1);
  });
});

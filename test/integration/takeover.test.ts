// Client id takeover [MQTT-3.1.4-3]: a second connection with the same client id closes
// the first (MQTT 5: DISCONNECT 0x8E first) and, without clean start, inherits the session.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, uniqueId, VERSIONS, versionName } from '../helpers/mqtt.js';

describe('takeover', { timeout: 20000 }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  before(async () => (broker = await startBroker()));
  afterEach(() => pool.closeAll());
  after(() => broker.close());

  for (const v of VERSIONS) {
    describe(versionName(v), () => {
      it('the old connection is closed and the new one works', async () => {
        const id = uniqueId('tk');
        const first = await pool.connect(broker.url, { protocolVersion: v, clientId: id });
        const firstDisconnect = v === 5 ? first.waitForDisconnect() : undefined;
        const firstClosed = first.waitForClose();
        const second = await pool.connect(broker.url, { protocolVersion: v, clientId: id });
        await firstClosed;
        if (firstDisconnect) assert.equal((await firstDisconnect).reasonCode, 0x8e);
        await second.mqtt.subscribeAsync('tk/a', { qos: 1 });
        await second.mqtt.publishAsync('tk/a', 'still here', { qos: 1 });
        const [m] = await second.waitForMessages(1);
        assert.equal(m.payload, 'still here');
        assert.equal(second.mqtt.connected, true);
      });

      it('without clean start the new connection resumes the session and its subscriptions', async () => {
        const id = uniqueId('tk');
        const session = v === 5 ? { clean: false, properties: { sessionExpiryInterval: 60 } } : { clean: false };
        const first = await pool.connect(broker.url, { protocolVersion: v, clientId: id, ...session });
        await first.mqtt.subscribeAsync('tk/resume', { qos: 1 });
        const second = await pool.connect(broker.url, { protocolVersion: v, clientId: id, ...session });
        assert.equal(second.connack.sessionPresent, true);
        const pub = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
        await pub.mqtt.publishAsync('tk/resume', 'to the new one', { qos: 1 });
        const [m] = await second.waitForMessages(1);
        assert.equal(m.payload, 'to the new one');
        // clean up the persistent session
        await pool.connect(broker.url, { protocolVersion: v, clientId: id, clean: true });
      });
    });
  }
});

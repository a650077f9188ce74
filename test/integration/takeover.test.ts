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

  // MQTT 5 leaves open what a takeover does to the old connection's will: [MQTT-3.1.4-3] says
  // it is published "as described in 3.1.2.5", and 3.1.2.5 holds it for the Will Delay unless
  // a new connection to the session comes first [MQTT-3.1.3-9]. Vigil reads the takeover as
  // both: the old connection closed (the will is due after its delay, or at once at delay 0)
  // and a new connection to the session (which cancels a will still waiting) — unless that
  // connection has Clean Start, which ends the session and with it the wait. The cluster's
  // claim (src/cluster/lua/claim-client.lua) applies the same rule.
  describe('MQTT 5.0: the old connection\'s will at a takeover', () => {
    const WILL_DELAY_S = 30;
    async function takeoverWithWill(willDelayS: number, cleanStart: boolean) {
      const id = uniqueId('tkw');
      const topic = `tk/will/${id}`;
      const watcher = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
      await watcher.mqtt.subscribeAsync(topic, { qos: 1 });
      const will = { topic, payload: Buffer.from('old connection gone'), qos: 1 as const, retain: false, properties: { willDelayInterval: willDelayS } };
      const first = await pool.connect(broker.url, { protocolVersion: 5, clientId: id, clean: false, properties: { sessionExpiryInterval: 120 }, will });
      const firstClosed = first.waitForClose();
      const second = await pool.connect(broker.url, { protocolVersion: 5, clientId: id, clean: cleanStart, properties: { sessionExpiryInterval: 120 } });
      await firstClosed;
      return { watcher, second, topic };
    }

    it('Clean Start 0, will delay > 0: the session continues, the will is not sent [MQTT-3.1.3-9]', async () => {
      const cancelled = await broker.metric('vigil_wills_cancelled_total', { cause: 'reconnect' });
      const fired = await broker.metric('vigil_wills_fired_total');
      const { watcher, second } = await takeoverWithWill(WILL_DELAY_S, false);
      assert.equal(second.connack.sessionPresent, true);
      assert.equal(await broker.metric('vigil_wills_cancelled_total', { cause: 'reconnect' }), cancelled + 1);
      assert.equal(await broker.metric('vigil_wills_pending'), 0, 'no will left waiting');
      assert.equal(await broker.metric('vigil_wills_fired_total'), fired);
      assert.equal(watcher.messages.length, 0);
    });

    it('Clean Start 0, will delay 0: the old connection closed, its will is published', async () => {
      const { watcher, topic } = await takeoverWithWill(0, false);
      const [m] = await watcher.waitForMessages(1, 5000, topic);
      assert.equal(m.payload, 'old connection gone');
    });

    it('Clean Start 1, will delay > 0: the old session ends, its will is published at once, not after the delay', async () => {
      const { watcher, second, topic } = await takeoverWithWill(WILL_DELAY_S, true);
      assert.equal(second.connack.sessionPresent, false);
      const [m] = await watcher.waitForMessages(1, 10000, topic); // well inside the 30 s delay
      assert.equal(m.payload, 'old connection gone');
    });
  });
});

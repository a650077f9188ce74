// $SYS statistics: published every sysIntervalS as retained $SYS/broker/... topics, reachable
// only by filters that name $SYS explicitly [MQTT-4.7.2-1].
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep, uniqueId, VERSIONS, versionName } from '../helpers/mqtt.js';

describe('$SYS', { timeout: 20000 }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  before(async () => (broker = await startBroker({ sysIntervalS: 1 })));
  afterEach(() => pool.closeAll());
  after(() => broker.close());

  for (const v of VERSIONS) {
    describe(versionName(v), () => {
      it('statistics are published under $SYS/broker and counted right', async () => {
        const sub = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
        await sub.mqtt.subscribeAsync('$SYS/broker/#', { qos: 0 });
        const wild = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
        await wild.mqtt.subscribeAsync('#', { qos: 0 });
        await wild.mqtt.subscribeAsync('+/broker/#', { qos: 0 });
        // the first value is the retained one from before these clients connected; wait for a fresh one
        await sub.waitForMessages(2, 2500, '$SYS/broker/clients/connected');
        const latest = (topic: string) => sub.messages.filter((m) => m.topic === `$SYS/broker/${topic}`).at(-1)?.payload;
        assert.match(latest('version') ?? '', /^vigil /);
        assert.match(latest('uptime') ?? '', /^\d+ seconds$/);
        assert.ok(Number(latest('clients/connected')) >= 2, `clients/connected ${latest('clients/connected')}`);
        assert.ok(Number(latest('subscriptions/count')) >= 3);
        assert.equal(wild.messages.filter((m) => m.topic.startsWith('$')).length, 0);
      });

      it('a new subscriber gets the retained $SYS values at once', async () => {
        await sleep(1100);
        const sub = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
        await sub.mqtt.subscribeAsync('$SYS/broker/version', { qos: 0 });
        const [m] = await sub.waitForMessages(1, 500);
        assert.equal(m.packet.retain, true);
      });
    });
  }
});

// SUBSCRIBE / UNSUBSCRIBE: invalid filters are refused per filter in SUBACK [MQTT-4.7.1],
// UNSUBSCRIBE stops delivery, and 5.0 UNSUBACK says whether a subscription existed.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ISubackPacket, IUnsubackPacket } from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep, uniqueId, VERSIONS, versionName } from '../helpers/mqtt.js';
import { RawClient } from '../helpers/raw-client.js';

describe('subscribe and unsubscribe', { timeout: 20000 }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  const raws: RawClient[] = [];
  before(async () => (broker = await startBroker()));
  afterEach(async () => {
    await pool.closeAll();
    for (const r of raws.splice(0)) r.close();
  });
  after(() => broker.close());

  for (const v of VERSIONS) {
    describe(versionName(v), () => {
      it('invalid filters are refused one by one; valid ones in the same SUBSCRIBE are granted', async () => {
        const { client } = await RawClient.connect(broker.port, v, { clientId: uniqueId() });
        raws.push(client);
        const filters = ['a/#/b', 'a+', 'a/b#', 'ok/+/x', '#', 'ok/#'];
        client.send({ cmd: 'subscribe', messageId: 3, subscriptions: filters.map((topic) => ({ topic, qos: 1 as const })) });
        const suback = (await client.next('suback')) as ISubackPacket;
        const refused = v === 5 ? 0x8f : 0x80;
        assert.equal(suback.messageId, 3);
        assert.deepEqual(suback.granted, [refused, refused, refused, 1, 1, 1]);
      });

      it('after UNSUBSCRIBE nothing more arrives', async () => {
        const sub = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
        await sub.mqtt.subscribeAsync(`unsub/${v}`, { qos: 1 });
        const pub = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
        await pub.mqtt.publishAsync(`unsub/${v}`, 'before', { qos: 1 });
        await sub.waitForMessages(1);
        await sub.mqtt.unsubscribeAsync(`unsub/${v}`);
        await pub.mqtt.publishAsync(`unsub/${v}`, 'after', { qos: 1 });
        await sleep(200);
        assert.deepEqual(sub.messages.map((m) => m.payload), ['before']);
      });
    });
  }

  it('MQTT 5.0: UNSUBACK reports success and No subscription existed', async () => {
    const { client } = await RawClient.connect(broker.port, 5, { clientId: uniqueId() });
    raws.push(client);
    client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'u/a', qos: 0 }] });
    await client.next('suback');
    client.send({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['u/a', 'u/never'] });
    const unsuback = (await client.next('unsuback')) as IUnsubackPacket;
    assert.equal(unsuback.messageId, 2);
    assert.deepEqual(unsuback.granted, [0x00, 0x11]);
  });
});

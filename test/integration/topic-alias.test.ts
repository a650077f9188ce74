// MQTT 5 inbound topic aliases [MQTT-3.3.2-8..12]: an alias set with a topic stands for it
// later on the same connection; 0 or above the server's Topic Alias Maximum is 0x94; an
// unknown alias with an empty topic is a protocol error; aliases do not outlive a connection.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IDisconnectPacket, IPublishPacket } from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, uniqueId } from '../helpers/mqtt.js';
import { RawClient } from '../helpers/raw-client.js';

const publish = (topic: string, alias: number | undefined, payload: string, messageId = 1): IPublishPacket => ({
  cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, dup: false, retain: false, messageId,
  properties: alias === undefined ? undefined : { topicAlias: alias },
});

describe('topic aliases (MQTT 5.0)', { timeout: 20000 }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  const raws: RawClient[] = [];
  const raw = async () => {
    const { client } = await RawClient.connect(broker.port, 5, { clientId: uniqueId('alias') });
    raws.push(client);
    return client;
  };
  before(async () => (broker = await startBroker({ topicAliasMax: 4 })));
  afterEach(async () => {
    await pool.closeAll();
    for (const r of raws.splice(0)) r.close();
  });
  after(() => broker.close());

  it('an alias set with a topic resolves to it later; it can be remapped', async () => {
    const sub = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
    await sub.mqtt.subscribeAsync('alias/#', { qos: 1 });
    const pub = await raw();
    pub.send(publish('alias/one', 1, 'set', 1));
    pub.send(publish('', 1, 'used', 2));
    pub.send(publish('alias/two', 1, 'remapped', 3));
    pub.send(publish('', 1, 'used again', 4));
    const got = await sub.waitForMessages(4);
    assert.deepEqual(got.map((m) => [m.topic, m.payload]), [['alias/one', 'set'], ['alias/one', 'used'], ['alias/two', 'remapped'], ['alias/two', 'used again']]);
    // the alias is for one hop: subscribers see no Topic Alias property
    assert.equal(got.some((m) => m.packet.properties?.topicAlias !== undefined), false);
  });

  it('mqtt.js with automatic topic aliases publishes through the broker', async () => {
    const sub = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
    await sub.mqtt.subscribeAsync('auto/+', { qos: 1 });
    const pub = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId(), autoUseTopicAlias: true, autoAssignTopicAlias: true });
    for (let i = 0; i < 3; i++) await pub.mqtt.publishAsync('auto/x', `m${i}`, { qos: 1 });
    const got = await sub.waitForMessages(3);
    assert.deepEqual(got.map((m) => [m.topic, m.payload]), [['auto/x', 'm0'], ['auto/x', 'm1'], ['auto/x', 'm2']]);
  });

  for (const bad of [0, 5]) {
    it(`alias ${bad} (0 or above Topic Alias Maximum 4) gets DISCONNECT 0x94`, async () => {
      const pub = await raw();
      pub.send(publish('alias/bad', bad, 'x'));
      const d = (await pub.next('disconnect')) as IDisconnectPacket;
      assert.equal(d.reasonCode, 0x94); // [MQTT-3.3.2-9]
      await pub.waitForClose();
    });
  }

  it('an empty topic with an unknown alias is a protocol error', async () => {
    const pub = await raw();
    pub.send(publish('', 3, 'x'));
    const d = (await pub.next('disconnect')) as IDisconnectPacket;
    assert.equal(d.reasonCode, 0x82);
    await pub.waitForClose();
  });

  it('an empty topic without an alias is a protocol error', async () => {
    const pub = await raw();
    pub.send(publish('', undefined, 'x'));
    const d = (await pub.next('disconnect')) as IDisconnectPacket;
    assert.ok(d.reasonCode === 0x82 || d.reasonCode === 0x90, `reason 0x${d.reasonCode?.toString(16)}`);
    await pub.waitForClose();
  });

  it('aliases do not survive a new connection', async () => {
    const id = uniqueId('alias');
    const first = await RawClient.connect(broker.port, 5, { clientId: id, clean: false, properties: { sessionExpiryInterval: 30 } });
    raws.push(first.client);
    first.client.send(publish('alias/keep', 2, 'x'));
    await first.client.next('puback');
    first.client.close();
    await first.client.waitForClose();
    const second = await RawClient.connect(broker.port, 5, { clientId: id, clean: true });
    raws.push(second.client);
    second.client.send(publish('', 2, 'y'));
    const d = (await second.client.next('disconnect')) as IDisconnectPacket;
    assert.equal(d.reasonCode, 0x82); // [MQTT-3.3.2-10]
  });
});

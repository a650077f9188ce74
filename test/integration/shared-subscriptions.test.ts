// Shared subscriptions $share/{group}/{filter} [MQTT-4.8.2]: each message goes to one member
// of each group, every group gets each message, ordinary subscribers are unaffected, and no
// retained messages are sent for a shared subscription.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IDisconnectPacket, ISubackPacket } from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep, uniqueId, VERSIONS, versionName } from '../helpers/mqtt.js';
import { RawClient } from '../helpers/raw-client.js';

describe('shared subscriptions', { timeout: 20000 }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  before(async () => (broker = await startBroker()));
  afterEach(() => pool.closeAll());
  after(() => broker.close());

  for (const v of VERSIONS) {
    describe(versionName(v), () => {
      const connect = () => pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });

      it('each message goes to exactly one member of a group, spread over the members', async () => {
        const topic = `sh/${v}/work`;
        const members = [await connect(), await connect()];
        for (const m of members) await m.mqtt.subscribeAsync(`$share/g/sh/${v}/+`, { qos: 1 });
        const plain = await connect();
        await plain.mqtt.subscribeAsync(topic, { qos: 1 });
        const pub = await connect();
        for (let i = 0; i < 10; i++) await pub.mqtt.publishAsync(topic, `m${i}`, { qos: 1 });
        await plain.waitForMessages(10);
        await sleep(150);
        const seen = members.flatMap((m) => m.messages.map((x) => x.payload)).sort();
        assert.deepEqual(seen, Array.from({ length: 10 }, (_, i) => `m${i}`).sort());
        for (const m of members) assert.ok(m.messages.length > 0, 'every member gets a share');
        assert.equal(members[0].messages[0].topic, topic);
      });

      it('two groups each get every message once', async () => {
        const topic = `sh/${v}/groups`;
        const a = await connect();
        const b = await connect();
        await a.mqtt.subscribeAsync(`$share/a/${topic}`, { qos: 0 });
        await b.mqtt.subscribeAsync(`$share/b/${topic}`, { qos: 0 });
        const pub = await connect();
        for (let i = 0; i < 4; i++) await pub.mqtt.publishAsync(topic, `m${i}`, { qos: 1 });
        await a.waitForMessages(4);
        await b.waitForMessages(4);
        await sleep(100);
        assert.equal(a.messages.length, 4);
        assert.equal(b.messages.length, 4);
      });

      it('when a member leaves, the others get every message', async () => {
        const topic = `sh/${v}/leave`;
        const stay = await connect();
        const leave = await connect();
        await stay.mqtt.subscribeAsync(`$share/g/${topic}`, { qos: 1 });
        await leave.mqtt.subscribeAsync(`$share/g/${topic}`, { qos: 1 });
        await leave.mqtt.endAsync();
        const pub = await connect();
        for (let i = 0; i < 4; i++) await pub.mqtt.publishAsync(topic, `m${i}`, { qos: 1 });
        const got = await stay.waitForMessages(4);
        assert.deepEqual(got.map((m) => m.payload), ['m0', 'm1', 'm2', 'm3']);
      });

      it('a shared subscription gets no retained messages', async () => {
        const topic = `sh/${v}/retained`;
        const pub = await connect();
        await pub.mqtt.publishAsync(topic, 'retained', { qos: 1, retain: true });
        const member = await connect();
        await member.mqtt.subscribeAsync(`$share/g/${topic}`, { qos: 1 });
        await sleep(200);
        assert.deepEqual(member.messages, []);
        await pub.mqtt.publishAsync(topic, '', { qos: 1, retain: true });
      });

      it('unsubscribing $share/g/filter removes the shared subscription', async () => {
        const topic = `sh/${v}/unsub`;
        const member = await connect();
        await member.mqtt.subscribeAsync(`$share/g/${topic}`, { qos: 1 });
        await member.mqtt.unsubscribeAsync(`$share/g/${topic}`);
        const pub = await connect();
        await pub.mqtt.publishAsync(topic, 'x', { qos: 1 });
        await sleep(200);
        assert.deepEqual(member.messages, []);
      });
    });
  }

  for (const v of VERSIONS) {
    it(`${versionName(v)}: an invalid share name is refused in SUBACK`, async () => {
      // mqtt.js will not send these: a raw client does
      const { client } = await RawClient.connect(broker.port, v, { clientId: uniqueId() });
      try {
        const bad = ['$share//x', '$share/g+/x', '$share/g', '$share/g/'];
        client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [...bad.map((topic) => ({ topic, qos: 1 as const })), { topic: 'ok', qos: 1 }] });
        const suback = (await client.next('suback')) as ISubackPacket;
        assert.deepEqual(suback.granted, [...bad.map(() => (v === 5 ? 0x8f : 0x80)), 1]);
      } finally {
        client.close();
      }
    });
  }

  it('MQTT 5.0: No Local on a shared subscription is a protocol error', async () => {
    const { client } = await RawClient.connect(broker.port, 5, { clientId: uniqueId() });
    try {
      client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$share/g/nl', qos: 1, nl: true }] });
      const d = (await client.next('disconnect')) as IDisconnectPacket;
      assert.equal(d.reasonCode, 0x82); // [MQTT-3.8.3-4]
    } finally {
      client.close();
    }
  });
});

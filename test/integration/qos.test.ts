// QoS 0/1/2 in both directions, redelivery with DUP after a reconnect [MQTT-4.4.0-1],
// exactly-once for a retransmitted QoS 2 PUBLISH [MQTT-4.3.3-9] and Receive Maximum both ways.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IDisconnectPacket, IPublishPacket, IPubrecPacket } from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, sleep, uniqueId, VERSIONS, versionName, type Version } from '../helpers/mqtt.js';
import { RawClient } from '../helpers/raw-client.js';

function persistent(v: Version, clientId: string) {
  return v === 5 ? { clientId, clean: false, properties: { sessionExpiryInterval: 60 } } : { clientId, clean: false };
}

/** Polls a condition (generous deadline: the machine may be loaded). */
async function waitFor(cond: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

describe('qos', { timeout: 30000 }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  const raws: RawClient[] = [];
  const raw = async (v: Version, connect: Parameters<typeof RawClient.connect>[2] = {}) => {
    const r = await RawClient.connect(broker.port, v, { clientId: uniqueId('raw'), ...connect });
    raws.push(r.client);
    return r;
  };
  before(async () => (broker = await startBroker({ maxInflight: 3 })));
  afterEach(async () => {
    await pool.closeAll();
    for (const r of raws.splice(0)) r.close();
  });
  after(() => broker.close());

  for (const v of VERSIONS) {
    describe(versionName(v), () => {
      for (const subQos of [0, 1, 2] as const) {
        it(`subscription QoS ${subQos} receives QoS 0/1/2 publishes at min(pub, sub)`, async () => {
          const topic = `qos/${v}/${subQos}`;
          const sub = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
          const granted = await sub.mqtt.subscribeAsync(topic, { qos: subQos });
          assert.equal(granted[0].qos, subQos);
          const pub = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
          for (const q of [0, 1, 2] as const) await pub.mqtt.publishAsync(topic, `q${q}`, { qos: q });
          const got = await sub.waitForMessages(3);
          assert.deepEqual(got.map((m) => [m.payload, m.packet.qos]), [0, 1, 2].map((q) => [`q${q}`, Math.min(q, subQos)]));
        });
      }

      it('unacknowledged QoS 1 and 2 messages are resent with DUP and the same content after reconnect', async () => {
        const id = uniqueId('redeliver');
        const { client: first } = await raw(v, persistent(v, id));
        first.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'redeliver/+', qos: 2 }] });
        await first.next('suback');
        const pub = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
        await pub.mqtt.publishAsync('redeliver/one', 'first', { qos: 1 });
        await pub.mqtt.publishAsync('redeliver/two', 'second', { qos: 2 });
        const a = (await first.next('publish')) as IPublishPacket;
        const b = (await first.next('publish')) as IPublishPacket;
        assert.equal(a.dup, false);
        first.close(); // no PUBACK, no PUBREC
        await first.waitForClose();

        const { client: second, connack } = await raw(v, persistent(v, id));
        assert.equal(connack.sessionPresent, true);
        const a2 = (await second.next('publish')) as IPublishPacket;
        const b2 = (await second.next('publish')) as IPublishPacket;
        for (const [before, again] of [[a, a2], [b, b2]]) {
          assert.equal(again.dup, true); // [MQTT-3.3.1-1]
          assert.equal(again.messageId, before.messageId);
          assert.equal(again.topic, before.topic);
          assert.equal(again.qos, before.qos);
          assert.equal(String(again.payload), String(before.payload));
        }
        second.send({ cmd: 'puback', messageId: a2.messageId });
        second.send({ cmd: 'pubrec', messageId: b2.messageId });
        const rel = await second.next('pubrel');
        assert.equal(rel.messageId, b2.messageId);
        second.close(); // PUBREC sent, no PUBCOMP: the PUBREL is what comes again
        await second.waitForClose();

        const { client: third } = await raw(v, persistent(v, id));
        const rel2 = await third.next('pubrel');
        assert.equal(rel2.messageId, b2.messageId);
        third.send({ cmd: 'pubcomp', messageId: b2.messageId });
        // a PINGRESP comes after anything the broker sent for the resumed session
        third.send({ cmd: 'pingreq' });
        await third.next('pingresp');
        assert.equal(third.pending('publish').length, 0, 'acknowledged messages are not sent again');
        third.send({ cmd: 'disconnect', ...(v === 5 ? { properties: { sessionExpiryInterval: 0 } } : {}) });
      });

      it('a retransmitted QoS 2 PUBLISH with the same packet id is delivered once', async () => {
        const sub = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
        await sub.mqtt.subscribeAsync(`once/${v}`, { qos: 2 });
        const { client: pub } = await raw(v);
        const publish: IPublishPacket = { cmd: 'publish', topic: `once/${v}`, payload: Buffer.from('exactly once'), qos: 2, dup: false, retain: false, messageId: 7 };
        pub.send(publish);
        assert.equal(((await pub.next('pubrec')) as IPubrecPacket).messageId, 7);
        pub.send({ ...publish, dup: true });
        assert.equal(((await pub.next('pubrec')) as IPubrecPacket).messageId, 7);
        pub.send({ cmd: 'pubrel', messageId: 7 });
        assert.equal((await pub.next('pubcomp')).messageId, 7);
        assert.deepEqual((await sub.waitForMessages(1, 20_000)).map((m) => m.payload), ['exactly once']);
        // after PUBCOMP the id is free: the same id now carries a new message
        pub.send({ ...publish, payload: Buffer.from('new message') });
        await pub.next('pubrec');
        const got = await sub.waitForMessages(2);
        assert.deepEqual(got.map((m) => m.payload), ['exactly once', 'new message']);
      });

      it('the server keeps at most its in-flight window of unacknowledged messages per client', async () => {
        // broker maxInflight 3; for 5.0 a smaller client Receive Maximum (2) wins [MQTT-3.3.4-9]
        const window = v === 5 ? 2 : 3;
        const subId = uniqueId('raw');
        const { client: sub } = await raw(v, { clientId: subId, ...(v === 5 ? { properties: { receiveMaximum: 2 } } : {}) });
        sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `window/${v}`, qos: 1 }] });
        await sub.next('suback');
        const pub = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
        for (let i = 0; i < 6; i++) await pub.mqtt.publishAsync(`window/${v}`, `m${i}`, { qos: 1 });
        // all six routed (acknowledged to the publisher): the window is in flight, the rest queued
        const session = broker.server.broker.sessions.get(subId)!;
        assert.equal(session.inflight.size, window);
        assert.equal(session.queued, 6 - window);
        await waitFor(() => sub.pending('publish').length >= window, 'the window delivered');
        const first = sub.received.splice(0).filter((p) => p.cmd === 'publish') as IPublishPacket[];
        assert.equal(first.length, window);
        sub.send({ cmd: 'puback', messageId: first[0].messageId });
        const next = (await sub.next('publish')) as IPublishPacket;
        assert.equal(String(next.payload), `m${window}`);
        assert.equal(session.inflight.size, window, 'one ack frees one slot');
        assert.equal(session.queued, 6 - window - 1);
      });
    });
  }

  it('MQTT 5.0: a client exceeding the server Receive Maximum with QoS 2 gets DISCONNECT 0x93', async () => {
    const { client, connack } = await raw(5);
    assert.equal(connack.properties?.receiveMaximum, 3);
    for (let id = 1; id <= 4; id++) {
      client.send({ cmd: 'publish', topic: 'rm/x', payload: Buffer.from('x'), qos: 2, dup: false, retain: false, messageId: id });
    }
    const d = (await client.next('disconnect')) as IDisconnectPacket;
    assert.equal(d.reasonCode, 0x93); // [MQTT-3.3.4-8]
    assert.equal(client.pending('pubrec').length, 3);
    await client.waitForClose();
  });
});

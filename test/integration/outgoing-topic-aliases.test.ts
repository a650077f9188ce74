// MQTT 5 outgoing topic aliases: a client that offers a Topic Alias Maximum gets aliases for
// the topics sent to it most, never above its maximum [MQTT-3.1.2-26, MQTT-3.3.2-11], none carried over to a
// new connection [MQTT-3.3.2-7]; mqtt.js resolves them to the right topics.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IPublishPacket } from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, uniqueId, type TestClient } from '../helpers/mqtt.js';

interface Wire {
  readonly topic: string;
  readonly alias?: number;
}

/** Records each PUBLISH as it came over the wire, before mqtt.js resolves its alias. */
function wire(client: TestClient): Wire[] {
  const seen: Wire[] = [];
  client.mqtt.on('packetreceive', (p) => {
    if (p.cmd === 'publish') seen.push({ topic: (p as IPublishPacket).topic, alias: (p as IPublishPacket).properties?.topicAlias });
  });
  return seen;
}

describe('outgoing topic aliases (MQTT 5.0)', { timeout: 30000 }, () => {
  let broker: TestBroker;
  let noAliases: TestBroker;
  const pool = new ClientPool();
  before(async () => {
    broker = await startBroker();
    noAliases = await startBroker({ outgoingTopicAliases: 0 });
  });
  afterEach(() => pool.closeAll());
  after(async () => {
    await broker.close();
    await noAliases.close();
  });

  const TOPICS = ['fleet/vehicle/0001/telemetry', 'fleet/vehicle/0002/telemetry', 'fleet/vehicle/0003/telemetry'];

  /** 3.1.1 and 5.0 publishers, QoS 0 and 1: the first two topics often, the third rarely. */
  async function publishRounds(b: TestBroker, rounds: number): Promise<string[][]> {
    const pub = await pool.connect(b.url, { protocolVersion: 4, clientId: uniqueId('pub') });
    const sent: string[][] = [];
    for (let r = 0; r < rounds; r++) {
      for (const topic of r % 4 === 3 ? TOPICS : TOPICS.slice(0, 2)) {
        const payload = `${topic.split('/')[2]}-${r}`;
        await pub.mqtt.publishAsync(topic, payload, { qos: (r % 2) as 0 | 1 });
        sent.push([topic, payload]);
      }
    }
    return sent;
  }

  it('aliases are received within the client maximum and mqtt.js resolves every topic', async () => {
    // two such subscribers share the encoded forms (the same alias numbers): each gets it right
    const subs = [
      await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId('sub'), properties: { topicAliasMaximum: 2 } }),
      await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId('sub'), properties: { topicAliasMaximum: 2 } }),
    ];
    const wires = subs.map(wire);
    for (const sub of subs) await sub.mqtt.subscribeAsync('fleet/#', { qos: 1 });
    const sent = await publishRounds(broker, 8);
    for (const [k, sub] of subs.entries()) await checkAliases(sub, wires[k], sent);
  });

  async function checkAliases(sub: TestClient, onWire: Wire[], sent: string[][]): Promise<void> {
    const got = await sub.waitForMessages(sent.length, 10000);
    assert.deepEqual(got.map((m) => [m.topic, m.payload]), sent, 'every message, on its own topic, in order');
    assert.equal(onWire.length, sent.length);
    const aliases = onWire.filter((w) => w.alias !== undefined);
    assert.ok(aliases.length > sent.length / 2, `aliases used on ${aliases.length} of ${sent.length}`);
    assert.ok(aliases.every((w) => w.alias! >= 1 && w.alias! <= 2), `aliases ${[...new Set(aliases.map((w) => w.alias))]}`);
    // the hot topics travel without their name once their alias is set
    assert.ok(onWire.filter((w) => w.topic === '').length >= sent.length / 2);
    // every alias is set (with its topic) before it is used without one
    const known = new Map<number, string>();
    for (const [i, w] of onWire.entries()) {
      if (w.alias === undefined) continue;
      if (w.topic !== '') known.set(w.alias, w.topic);
      else assert.equal(known.get(w.alias), sent[i][0], `alias ${w.alias} at ${i}`);
    }
    assert.equal(sub.mqtt.connected, true, 'mqtt.js accepted every alias');
  }

  it('a maximum of 1 is respected; aliases go with Subscription Identifiers too', async () => {
    const sub = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId('sub'), properties: { topicAliasMaximum: 1 } });
    const onWire = wire(sub);
    await sub.mqtt.subscribeAsync('fleet/#', { qos: 1, properties: { subscriptionIdentifier: 7 } });
    const sent = await publishRounds(broker, 6);
    const got = await sub.waitForMessages(sent.length, 10000);
    assert.deepEqual(got.map((m) => [m.topic, m.payload]), sent);
    assert.ok(got.every((m) => m.packet.properties?.subscriptionIdentifier === 7));
    assert.deepEqual([...new Set(onWire.filter((w) => w.alias !== undefined).map((w) => w.alias))], [1]);
  });

  it('a new connection starts without aliases [MQTT-3.3.2-7]', async () => {
    const id = uniqueId('sub');
    const options = { protocolVersion: 5 as const, clientId: id, clean: false, properties: { topicAliasMaximum: 4, sessionExpiryInterval: 60 } };
    const first = await pool.connect(broker.url, options);
    await first.mqtt.subscribeAsync('fleet/#', { qos: 1 });
    await publishRounds(broker, 3);
    await first.waitForMessages(6, 10000);
    await first.mqtt.endAsync();
    const again = await pool.connect(broker.url, options);
    const onWire = wire(again);
    const sent = await publishRounds(broker, 1);
    const got = await again.waitForMessages(sent.length, 10000);
    assert.deepEqual(got.map((m) => m.topic), sent.map(([t]) => t));
    assert.ok(onWire.every((w) => w.topic !== ''), 'no topic left out on a fresh connection');
  });

  it('clients that offer no Topic Alias Maximum get none [MQTT-3.1.2-27], nor clients of a broker with VIGIL_OUTGOING_TOPIC_ALIASES=0', async () => {
    const plain = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId('sub') });
    const off = await pool.connect(noAliases.url, { protocolVersion: 5, clientId: uniqueId('sub'), properties: { topicAliasMaximum: 8 } });
    const wires = [wire(plain), wire(off)];
    await plain.mqtt.subscribeAsync('fleet/#', { qos: 1 });
    await off.mqtt.subscribeAsync('fleet/#', { qos: 1 });
    const sent = [await publishRounds(broker, 4), await publishRounds(noAliases, 4)];
    await plain.waitForMessages(sent[0].length, 10000);
    await off.waitForMessages(sent[1].length, 10000);
    for (const w of wires) assert.ok(w.every((x) => x.alias === undefined && x.topic !== ''));
  });
});

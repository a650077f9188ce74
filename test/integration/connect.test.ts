// CONNECT: acceptance, CONNACK properties, client id assignment, and what the server does
// with a CONNECT it must refuse, a second CONNECT and packets before CONNECT.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import mqttPacket from 'mqtt-packet';
import type { IConnackPacket, IDisconnectPacket } from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, uniqueId, VERSIONS, versionName } from '../helpers/mqtt.js';
import { RawClient } from '../helpers/raw-client.js';

describe('connect', { timeout: 20000 }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  const raws: RawClient[] = [];
  before(async () => (broker = await startBroker({ maxInflight: 20, topicAliasMax: 7, maxPacketSize: 4096 })));
  afterEach(async () => {
    await pool.closeAll();
    for (const r of raws.splice(0)) r.close();
  });
  after(() => broker.close());

  for (const v of VERSIONS) {
    describe(versionName(v), () => {
      it('accepts a CONNECT with CONNACK success and no session present', async () => {
        const c = await pool.connect(broker.url, { protocolVersion: v, clientId: uniqueId() });
        assert.equal(c.connack.sessionPresent, false);
        if (v === 5) assert.equal(c.connack.reasonCode, 0);
        else assert.equal(c.connack.returnCode, 0);
      });

      it('a second CONNECT is a protocol error: the connection is closed', async () => {
        const { client } = await RawClient.connect(broker.port, v, { clientId: uniqueId() });
        raws.push(client);
        client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clean: true, clientId: uniqueId(), keepalive: 0 });
        if (v === 5) {
          const d = (await client.next('disconnect')) as IDisconnectPacket;
          assert.equal(d.reasonCode, 0x82); // [MQTT-3.1.0-2]
        }
        await client.waitForClose();
      });

      it('a packet before CONNECT closes the connection without an answer', async () => {
        const client = await RawClient.open(broker.port, v);
        raws.push(client);
        client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a', qos: 0 }] });
        await client.waitForClose(); // [MQTT-3.1.0-1]
        assert.deepEqual(client.received.map((p) => p.cmd), []);
      });
    });
  }

  it('MQTT 5.0: CONNACK announces receive maximum, maximum packet size and topic alias maximum', async () => {
    const c = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
    assert.equal(c.connack.properties?.receiveMaximum, 20);
    assert.equal(c.connack.properties?.maximumPacketSize, 4096);
    assert.equal(c.connack.properties?.topicAliasMaximum, 7);
  });

  it('MQTT 5.0: an empty client id gets an Assigned Client Identifier that works for a later session', async () => {
    const c = await pool.connect(broker.url, { protocolVersion: 5, clientId: '' });
    const assigned = c.connack.properties?.assignedClientIdentifier;
    assert.ok(assigned && assigned.length > 0, 'assigned client identifier present'); // [MQTT-3.2.2-16]
    const other = await pool.connect(broker.url, { protocolVersion: 5, clientId: '' });
    assert.notEqual(other.connack.properties?.assignedClientIdentifier, assigned);
  });

  it('MQTT 3.1.1: an empty client id with clean session is accepted', async () => {
    const { client, connack } = await RawClient.connect(broker.port, 4, { clientId: '', clean: true });
    raws.push(client);
    assert.equal(connack.returnCode, 0);
  });

  it('MQTT 3.1.1: an empty client id with clean session 0 is refused with 0x02', async () => {
    const client = await RawClient.open(broker.port, 4);
    raws.push(client);
    // mqtt-packet will not encode this CONNECT: encode it clean, then clear the Clean Session flag
    const bytes = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: '', keepalive: 0 });
    bytes[9] &= ~0x02;
    client.write(bytes);
    const connack = (await client.next('connack')) as IConnackPacket;
    assert.equal(connack.returnCode, 0x02); // [MQTT-3.1.3-8]
    assert.equal(connack.sessionPresent, false);
    await client.waitForClose();
  });

  it('MQTT 5.0: receive maximum 0 in CONNECT is a protocol error', async () => {
    const client = await RawClient.open(broker.port, 5);
    raws.push(client);
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: uniqueId(), keepalive: 0, properties: { receiveMaximum: 0 } });
    const connack = (await client.next('connack')) as IConnackPacket;
    assert.equal(connack.reasonCode, 0x82);
    await client.waitForClose();
  });
});

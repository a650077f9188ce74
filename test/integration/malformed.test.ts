// Malformed input over a raw socket: each bad packet is answered as the spec says (MQTT 5:
// DISCONNECT with the reason code, then close; 3.1.1: close), and a well-behaved client on
// the same broker keeps getting its messages throughout.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import mqttPacket from 'mqtt-packet';
import type { IConnackPacket, IDisconnectPacket } from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, uniqueId, VERSIONS, versionName, type TestClient, type Version } from '../helpers/mqtt.js';
import { RawClient } from '../helpers/raw-client.js';

const MAX_PACKET = 1024;

/** A PUBLISH (QoS 0) whose topic bytes are given as is. */
function publishWithTopicBytes(topic: Buffer, v: Version): Buffer {
  const props = v === 5 ? [0] : [];
  const body = Buffer.concat([Buffer.from([topic.length >> 8, topic.length & 0xff]), topic, Buffer.from(props), Buffer.from('payload')]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}

describe('malformed packets', { timeout: 30000 }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  const raws: RawClient[] = [];
  let watcher: TestClient;
  let publisher: TestClient;
  let sent = 0;

  before(async () => {
    broker = await startBroker({ maxPacketSize: MAX_PACKET });
    watcher = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId('watcher') });
    await watcher.mqtt.subscribeAsync('healthy/#', { qos: 1 });
    publisher = await pool.connect(broker.url, { protocolVersion: 4, clientId: uniqueId('publisher') });
  });
  afterEach(async () => {
    // the broker still serves a well-behaved client after every bad one
    sent++;
    await publisher.mqtt.publishAsync(`healthy/${sent}`, `after ${sent}`, { qos: 1 });
    const got = await watcher.waitForMessages(sent);
    assert.equal(got[sent - 1].payload, `after ${sent}`);
    for (const r of raws.splice(0)) r.close();
  });
  after(async () => {
    await pool.closeAll();
    await broker.close();
  });

  async function connected(v: Version): Promise<RawClient> {
    const { client } = await RawClient.connect(broker.port, v, { clientId: uniqueId('bad') });
    raws.push(client);
    return client;
  }

  /** MQTT 5: DISCONNECT with `code` then close; 3.1.1: close. */
  async function expectClosed(client: RawClient, v: Version, code: number): Promise<void> {
    if (v === 5) {
      const d = (await client.next('disconnect')) as IDisconnectPacket;
      assert.equal(d.reasonCode, code);
    }
    await client.waitForClose();
  }

  for (const v of VERSIONS) {
    describe(versionName(v), () => {
      it('a remaining length longer than four bytes is malformed', async () => {
        const client = await connected(v);
        client.write([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]);
        await expectClosed(client, v, 0x81);
      });

      it('reserved flag bits set wrong (SUBSCRIBE with flags 0) are malformed', async () => {
        const client = await connected(v);
        const bytes = mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a', qos: 0 }] }, { protocolVersion: v });
        bytes[0] = 0x80; // [MQTT-2.2.2-2]
        client.write(bytes);
        await expectClosed(client, v, 0x81);
      });

      it('a PUBLISH with QoS 3 is malformed', async () => {
        const client = await connected(v);
        const bytes = mqttPacket.generate({ cmd: 'publish', topic: 'a', payload: Buffer.from('x'), qos: 1, messageId: 1, retain: false, dup: false }, { protocolVersion: v });
        bytes[0] |= 0x06; // [MQTT-3.3.1-4]
        client.write(bytes);
        await expectClosed(client, v, 0x81);
      });

      it('a PUBLISH topic with ill-formed UTF-8 is malformed', async () => {
        const client = await connected(v);
        client.write(publishWithTopicBytes(Buffer.from([0x61, 0x2f, 0xff, 0xfe]), v)); // [MQTT-1.5.4-1]
        await expectClosed(client, v, 0x81);
        assert.equal(watcher.messages.some((m) => m.topic.startsWith('a/')), false);
      });

      it('a PUBLISH topic with UTF-16 surrogate code points encoded is malformed', async () => {
        const client = await connected(v);
        client.write(publishWithTopicBytes(Buffer.from([0x61, 0xed, 0xa0, 0x80]), v)); // U+D800 [MQTT-1.5.4-1]
        await expectClosed(client, v, 0x81);
      });

      it('a PUBLISH topic with a wildcard is refused', async () => {
        const client = await connected(v);
        client.write(publishWithTopicBytes(Buffer.from('healthy/+'), v)); // [MQTT-3.3.2-2]
        await expectClosed(client, v, 0x90);
      });

      it('an oversize packet is refused from its header, before the body arrives', async () => {
        const client = await connected(v);
        // a PUBLISH announcing 100 000 bytes; only its first bytes are ever sent
        client.write([0x30, 0xa0, 0x8d, 0x06, 0x00, 0x01, 0x61]);
        await expectClosed(client, v, 0x95);
      });

      it('a complete packet just over the maximum size is refused', async () => {
        const client = await connected(v);
        client.send({ cmd: 'publish', topic: 'healthy/big', payload: Buffer.alloc(MAX_PACKET), qos: 0, retain: false, dup: false });
        await expectClosed(client, v, 0x95);
      });

      it('a second CONNECT is refused: DISCONNECT 0x82 (5.0) and close', async () => {
        const client = await connected(v);
        client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clean: true, clientId: uniqueId(), keepalive: 0 });
        await expectClosed(client, v, 0x82);
      });

      it('a PUBLISH QoS 1 with packet id 0 is a protocol error', async () => {
        const client = await connected(v);
        const bytes = mqttPacket.generate({ cmd: 'publish', topic: 'a', payload: Buffer.from('x'), qos: 1, messageId: 1, retain: false, dup: false }, { protocolVersion: v });
        bytes[6] = 0; // header (2), topic (2 + 1), packet id [MQTT-2.2.1-3]
        client.write(bytes);
        await expectClosed(client, v, 0x82);
        assert.equal(client.pending('puback').length, 0);
      });

      it('a QoS 0 PUBLISH with DUP set is malformed [MQTT-3.3.1-2]', async () => {
        const client = await connected(v);
        const bytes = mqttPacket.generate({ cmd: 'publish', topic: 'healthy/dup', payload: Buffer.from('x'), qos: 0, retain: false, dup: false }, { protocolVersion: v });
        bytes[0] |= 0x08;
        client.write(bytes);
        await expectClosed(client, v, 0x81);
      });

      it('a SUBSCRIBE with packet id 0 is a protocol error', async () => {
        const client = await connected(v);
        const bytes = mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a', qos: 0 }] }, { protocolVersion: v });
        bytes[3] = 0; // [MQTT-2.2.1-3]
        client.write(bytes);
        await expectClosed(client, v, 0x82);
      });

      it('a will with QoS 3 is malformed: no session is opened', async () => {
        const client = await RawClient.open(broker.port, v);
        raws.push(client);
        const bytes = mqttPacket.generate(
          { cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clean: true, clientId: uniqueId(), keepalive: 0, will: { topic: 'w', payload: Buffer.from('x'), qos: 2, retain: false } },
          { protocolVersion: v },
        );
        bytes[9] |= 0x18; // Will QoS 3 [MQTT-3.1.2-14]
        client.write(bytes);
        await client.waitForClose();
        const connack = client.pending('connack')[0] as { reasonCode?: number; returnCode?: number } | undefined;
        assert.ok(!connack || (v === 5 ? connack.reasonCode : connack.returnCode) !== 0, 'CONNECT not accepted');
      });

      it('a packet before CONNECT closes the socket', async () => {
        const client = await RawClient.open(broker.port, v);
        raws.push(client);
        client.send({ cmd: 'publish', topic: 'healthy/nope', payload: Buffer.from('x'), qos: 0, retain: false, dup: false });
        await client.waitForClose();
        assert.equal(client.received.length, 0);
      });
    });
  }

  it('an unsupported protocol level gets CONNACK 0x01 and a close', async () => {
    const client = await RawClient.open(broker.port, 4);
    raws.push(client);
    const bytes = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: uniqueId(), keepalive: 0 });
    bytes[8] = 6; // protocol level 6
    client.write(bytes);
    const connack = (await client.next('connack')) as IConnackPacket;
    assert.equal(connack.returnCode, 0x01); // [MQTT-3.1.2-2]
    await client.waitForClose();
  });

  it('garbage instead of a CONNECT closes the socket', async () => {
    const client = await RawClient.open(broker.port, 4);
    raws.push(client);
    client.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await client.waitForClose();
  });
});

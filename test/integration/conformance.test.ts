// The normative statements of MQTT 3.1.1 and 5.0 about what a server accepts, one test each,
// grouped by spec section, over raw sockets (mqtt.js would not send these packets). How a
// refusal looks (README "MQTT support"): after CONNECT, 5.0 gets DISCONNECT with the reason
// and 3.1.1 a close; a CONNECT that is malformed gets, in 5.0, CONNACK with the reason and
// in 3.1.1 a close without CONNACK [MQTT-3.1.4-1]. Statement ids are 5.0's unless marked 3.1.1.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IConnackPacket, IDisconnectPacket, IPubackPacket, ISubackPacket } from 'mqtt-packet';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { ClientPool, uniqueId, VERSIONS, versionName, type Version } from '../helpers/mqtt.js';
import { tempDir, type TempDir } from '../helpers/jwt.js';
import { RawClient } from '../helpers/raw-client.js';
import { str, u16, varint } from '../helpers/mqtt-bytes.js';

// ---- bytes ---------------------------------------------------------------------------

/** A whole packet: first byte, remaining length, body. */
const packet = (first: number, ...body: Buffer[]) => {
  const b = Buffer.concat(body);
  return Buffer.concat([Buffer.from([first]), varint(b.length), b]);
};
/** MQTT 5 properties: length, then id + value pairs. */
const props = (...items: Buffer[]) => {
  const b = Buffer.concat(items);
  return Buffer.concat([varint(b.length), b]);
};
const byteProp = (id: number, v: number) => Buffer.from([id, v]);
const int32Prop = (id: number, v: number) => Buffer.concat([Buffer.from([id]), Buffer.from([v >>> 24, (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff])]);
const strProp = (id: number, s: string | Buffer) => Buffer.concat([Buffer.from([id]), str(s)]);
const NO_PROPS = props();

interface ConnectParts {
  flags?: number;
  clientId?: string | Buffer;
  properties?: Buffer;
  will?: { topic: string | Buffer; payload?: string | Buffer; properties?: Buffer; qos?: number };
  username?: string | Buffer;
  password?: string;
  trailing?: Buffer;
}

/** CONNECT from its fields, flags derived from what is present unless given. */
function connectBytes(v: Version, p: ConnectParts): Buffer {
  let flags = 0x02;
  if (p.will) flags |= 0x04 | ((p.will.qos ?? 0) << 3);
  if (p.username !== undefined) flags |= 0x80;
  if (p.password !== undefined) flags |= 0x40;
  const parts: Buffer[] = [str('MQTT'), Buffer.from([v, p.flags ?? flags]), u16(0)];
  if (v === 5) parts.push(p.properties ?? NO_PROPS);
  parts.push(str(p.clientId ?? uniqueId('conf')));
  if (p.will) {
    if (v === 5) parts.push(p.will.properties ?? NO_PROPS);
    parts.push(str(p.will.topic), str(p.will.payload ?? 'gone'));
  }
  if (p.username !== undefined) parts.push(str(p.username));
  if (p.password !== undefined) parts.push(str(p.password));
  if (p.trailing) parts.push(p.trailing);
  return packet(0x10, ...parts);
}

/** PUBLISH QoS 1 (packet id 7) from its fields. */
function publishBytes(v: Version, topic: string | Buffer, properties: Buffer = NO_PROPS, first = 0x32): Buffer {
  return packet(first, str(topic), u16(7), v === 5 ? properties : Buffer.alloc(0), Buffer.from('payload'));
}

/** SUBSCRIBE (packet id 3) of one filter with an options byte. */
function subscribeBytes(v: Version, filter: string | Buffer, options: number, properties: Buffer = NO_PROPS): Buffer {
  return packet(0x82, u16(3), v === 5 ? properties : Buffer.alloc(0), str(filter), Buffer.from([options]));
}

// ---- the suite -----------------------------------------------------------------------

describe('conformance: what the server refuses, by spec section', { timeout: 60000 }, () => {
  let broker: TestBroker;
  const pool = new ClientPool();
  const raws: RawClient[] = [];

  before(async () => (broker = await startBroker({ willGraceMs: 0 })));
  afterEach(async () => {
    await pool.closeAll();
    for (const r of raws.splice(0)) r.close();
  });
  after(() => broker.close());

  async function open(v: Version): Promise<RawClient> {
    const client = await RawClient.open(broker.port, v);
    raws.push(client);
    return client;
  }

  async function connected(v: Version, connect: Parameters<typeof RawClient.connect>[2] = {}): Promise<RawClient> {
    const { client } = await RawClient.connect(broker.port, v, { clientId: uniqueId('conf'), ...connect });
    raws.push(client);
    return client;
  }

  /** A CONNECT refused as malformed / a protocol error: 5.0 CONNACK `code` then close; 3.1.1 close, no CONNACK. */
  async function expectConnectRefused(client: RawClient, v: Version, code: number): Promise<void> {
    await client.waitForClose();
    const connacks = client.pending('connack') as IConnackPacket[];
    if (v === 5) {
      assert.equal(connacks.length, 1, 'one CONNACK');
      assert.equal(connacks[0].reasonCode, code);
    } else {
      assert.equal(connacks.length, 0, 'no CONNACK [MQTT-3.1.4-1]');
    }
  }

  /** After CONNECT: 5.0 DISCONNECT `code` then close; 3.1.1 close. */
  async function expectClosed(client: RawClient, v: Version, code: number): Promise<void> {
    if (v === 5) {
      const d = (await client.next('disconnect')) as IDisconnectPacket;
      assert.equal(d.reasonCode, code);
    }
    await client.waitForClose();
  }

  async function refusedConnect(v: Version, parts: ConnectParts, code = 0x81): Promise<void> {
    const client = await open(v);
    client.write(connectBytes(v, parts));
    await expectConnectRefused(client, v, code);
  }

  for (const v of VERSIONS) {
    const v311 = v === 4;
    describe(versionName(v), () => {
      describe('§1.5 data representation', () => {
        const nul = v311 ? '[MQTT-1.5.3-2]' : '[MQTT-1.5.4-2]';
        it(`U+0000 in the client id makes CONNECT malformed ${nul}`, () => refusedConnect(v, { clientId: 'a\u0000b' }));
        it(`U+0000 in the user name makes CONNECT malformed ${nul}`, () => refusedConnect(v, { username: 'u\u0000', password: 'p' }));
        it(`U+0000 in the will topic makes CONNECT malformed ${nul}`, () => refusedConnect(v, { will: { topic: 'w/\u0000' } }));
        it(`ill-formed UTF-8 in the client id makes CONNECT malformed ${v311 ? '[MQTT-1.5.3-1]' : '[MQTT-1.5.4-1]'}`, () =>
          refusedConnect(v, { clientId: Buffer.from([0x61, 0xc3, 0x28]) }));
        it(`ill-formed UTF-8 in the will topic makes CONNECT malformed ${v311 ? '[MQTT-1.5.3-1]' : '[MQTT-1.5.4-1]'}`, () =>
          refusedConnect(v, { will: { topic: Buffer.from([0x77, 0x2f, 0xff]) } }));

        it(`U+0000 in a PUBLISH topic is malformed ${nul}`, async () => {
          const watcher = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
          await watcher.mqtt.subscribeAsync('nul/#');
          const client = await connected(v);
          client.write(publishBytes(v, 'nul/\u0000'));
          await expectClosed(client, v, 0x81);
          assert.equal(client.pending('puback').length, 0);
        });

        it(`U+0000 in a SUBSCRIBE filter is malformed, not a refusal in SUBACK ${nul}`, async () => {
          const client = await connected(v);
          client.write(subscribeBytes(v, 'a/\u0000/#', 0));
          await expectClosed(client, v, 0x81);
          assert.equal(client.pending('suback').length, 0);
        });

        it(`U+0000 in an UNSUBSCRIBE filter is malformed ${nul}`, async () => {
          const client = await connected(v);
          client.write(packet(0xa2, u16(4), v === 5 ? NO_PROPS : Buffer.alloc(0), str('a\u0000')));
          await expectClosed(client, v, 0x81);
        });

        if (!v311) {
          it('U+0000 in a user property is malformed [MQTT-1.5.4-2]', async () => {
            const client = await connected(v);
            const pair = Buffer.concat([Buffer.from([0x26]), str('k'), str('v\u0000')]);
            client.write(publishBytes(v, 'nul/prop', props(pair)));
            await expectClosed(client, v, 0x81);
          });
        }
      });

      describe('§2 control packet format', () => {
        for (const [name, first] of [['PUBREL with flags 0', 0x60], ['UNSUBSCRIBE with flags 0', 0xa0], ['PINGREQ with flags 1', 0xc1]] as const) {
          it(`reserved header flags set wrong (${name}) are malformed [MQTT-2.2.2-2]`, async () => {
            const client = await connected(v);
            client.write(first === 0xc1 ? packet(first) : packet(first, u16(1), first === 0xa0 ? Buffer.concat([v === 5 ? NO_PROPS : Buffer.alloc(0), str('a')]) : Buffer.alloc(0)));
            await expectClosed(client, v, 0x81);
          });
        }

        it('an UNSUBSCRIBE with packet id 0 is a protocol error [MQTT-2.2.1-3]', async () => {
          const client = await connected(v);
          client.write(packet(0xa2, u16(0), v === 5 ? NO_PROPS : Buffer.alloc(0), str('a')));
          await expectClosed(client, v, 0x82);
        });

        it('a PINGREQ with a body is malformed (its remaining length is 0)', async () => {
          const client = await connected(v);
          client.write(packet(0xc0, Buffer.from([0])));
          await expectClosed(client, v, 0x81);
        });

        it('a PUBACK longer than its fields is malformed', async () => {
          const client = await connected(v);
          client.write(packet(0x40, u16(1), v === 5 ? Buffer.from([0, 0]) : Buffer.alloc(0), Buffer.from([9])));
          await expectClosed(client, v, 0x81);
        });

        if (!v311) {
          it('a property not defined for the packet is malformed (§2.2.2.2: Session Expiry Interval in PUBLISH)', async () => {
            const client = await connected(v);
            client.write(publishBytes(v, 'p/x', props(int32Prop(0x11, 10))));
            await expectClosed(client, v, 0x81);
          });

          it('a property given twice is a protocol error (§3.3.2.3.3: Message Expiry Interval twice)', async () => {
            const client = await connected(v);
            client.write(publishBytes(v, 'p/x', props(int32Prop(0x02, 10), int32Prop(0x02, 20))));
            await expectClosed(client, v, 0x82);
          });

          it('User Property may be given more than once (§3.3.2.3.7)', async () => {
            const sub = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
            await sub.mqtt.subscribeAsync('p/user', { qos: 1 });
            const client = await connected(v);
            const pair = (k: string, val: string) => Buffer.concat([Buffer.from([0x26]), str(k), str(val)]);
            client.write(publishBytes(v, 'p/user', props(pair('k', '1'), pair('k', '2'))));
            await client.next('puback');
            const [m] = await sub.waitForMessages(1);
            assert.deepEqual({ ...m.packet.properties?.userProperties }, { k: ['1', '2'] });
          });

          it('properties that overrun their length are malformed (§2.2.2.1)', async () => {
            const client = await connected(v);
            // Property Length says 2, the Message Expiry Interval inside it takes 5
            client.write(publishBytes(v, 'p/x', Buffer.concat([varint(2), int32Prop(0x02, 10)])));
            await expectClosed(client, v, 0x81);
          });

          it('property identifier 0 is malformed (§2.2.2.2)', async () => {
            const client = await connected(v);
            client.write(publishBytes(v, 'p/x', props(Buffer.from([0x00, 0x01]))));
            await expectClosed(client, v, 0x81);
          });
        }
      });

      describe('§3.1 CONNECT', () => {
        it('a protocol name other than "MQTT" closes without CONNACK [MQTT-3.1.2-1]', async () => {
          const client = await open(v);
          const bytes = connectBytes(v, {});
          bytes[5] = 0x58; // "MQTX"
          client.write(bytes);
          await client.waitForClose();
          assert.equal(client.pending('connack').length, 0);
        });

        it('the reserved connect flag set is malformed [MQTT-3.1.2-3]', () => refusedConnect(v, { flags: 0x03 }));
        it(`Will QoS without the Will Flag is malformed ${v311 ? '[MQTT-3.1.2-13]' : '[MQTT-3.1.2-11]'}`, () => refusedConnect(v, { flags: 0x0a }));
        it(`Will Retain without the Will Flag is malformed ${v311 ? '[MQTT-3.1.2-15]' : '[MQTT-3.1.2-13]'}`, () => refusedConnect(v, { flags: 0x22 }));
        it('Will QoS 3 is malformed [MQTT-3.1.2-14]', () => refusedConnect(v, { will: { topic: 'w', qos: 3 } }));
        it('bytes after the last CONNECT field are malformed', () => refusedConnect(v, { trailing: Buffer.from([1, 2, 3]) }));
        it('an empty will topic is malformed [MQTT-4.7.3-1]', () => refusedConnect(v, { will: { topic: '' } }));
        it('a user name flag without a user name is malformed [MQTT-3.1.2-17]', () => refusedConnect(v, { flags: 0x82 }));

        if (v311) {
          it('3.1.1: a password without the user name flag is malformed [MQTT-3.1.2-22]', () => refusedConnect(v, { password: 'secret' }));
          it('3.1.1: a will topic with a wildcard closes without CONNACK [MQTT-3.1.4-1, MQTT-3.3.2-2]', () => refusedConnect(v, { will: { topic: 'w/#' } }));
        } else {
          it('5.0: a password without a user name is accepted (§3.1.2.9)', async () => {
            const client = await open(v);
            client.write(connectBytes(v, { password: 'secret' }));
            const connack = (await client.next('connack')) as IConnackPacket;
            assert.equal(connack.reasonCode, 0);
          });
          it('5.0: a will topic with a wildcard gets CONNACK 0x90 Topic Name invalid [MQTT-3.3.2-2]', () => refusedConnect(v, { will: { topic: 'w/+' } }, 0x90));
          it('5.0: Receive Maximum 0 is a protocol error (§3.1.2.11.3)', () => refusedConnect(v, { properties: props(Buffer.from([0x21, 0, 0])) }, 0x82));
          it('5.0: Maximum Packet Size 0 is a protocol error (§3.1.2.11.4)', () => refusedConnect(v, { properties: props(int32Prop(0x27, 0)) }, 0x82));
          it('5.0: Request Problem Information 2 is a protocol error (§3.1.2.11.7)', () => refusedConnect(v, { properties: props(byteProp(0x17, 2)) }, 0x82));
          it('5.0: Request Response Information 2 is a protocol error (§3.1.2.11.6)', () => refusedConnect(v, { properties: props(byteProp(0x19, 2)) }, 0x82));
          it('5.0: Session Expiry Interval twice is a protocol error (§3.1.2.11.2)', () => refusedConnect(v, { properties: props(int32Prop(0x11, 1), int32Prop(0x11, 2)) }, 0x82));
          it('5.0: a Topic Alias in CONNECT is malformed (§2.2.2.2)', () => refusedConnect(v, { properties: props(Buffer.from([0x23, 0, 1])) }));
          it('5.0: Authentication Data without Authentication Method is a protocol error (§3.1.2.11.10)', () =>
            refusedConnect(v, { properties: props(strProp(0x16, 'data')) }, 0x82));
          it('5.0: a will Payload Format Indicator of 2 is a protocol error (§3.1.3.2.3)', () =>
            refusedConnect(v, { will: { topic: 'w', properties: props(byteProp(0x01, 2)) } }, 0x82));
          it('5.0: a will payload that is not the UTF-8 its Payload Format Indicator says gets CONNACK 0x99 (§3.1.3.2.3)', () =>
            refusedConnect(v, { will: { topic: 'w', payload: Buffer.from([0xc3, 0x28]), properties: props(byteProp(0x01, 1)) } }, 0x99));
          it('5.0: a will property not defined for wills is malformed (§3.1.3.2)', () =>
            refusedConnect(v, { will: { topic: 'w', properties: props(int32Prop(0x11, 5)) } }));
          it('5.0: a will Response Topic with a wildcard is a protocol error [MQTT-3.3.2-14]', () =>
            refusedConnect(v, { will: { topic: 'w', properties: props(strProp(0x08, 'reply/#')) } }, 0x82));

          it('5.0: a CONNACK larger than the client Maximum Packet Size is not sent [MQTT-3.1.2-24]', async () => {
            const client = await open(v);
            client.write(connectBytes(v, { properties: props(int32Prop(0x27, 8)) }));
            client.write(packet(0xc0));
            // the CONNACK (with its properties, more than 8 bytes) is skipped; what follows is not
            await client.next('pingresp');
            assert.equal(client.received.filter((p) => p.cmd === 'connack').length, 0);
          });

          it('5.0: the reason string is left out when it would exceed the client Maximum Packet Size [MQTT-3.2.2-19]', async () => {
            const client = await open(v);
            client.write(connectBytes(v, { properties: props(int32Prop(0x27, 16), Buffer.from([0x21, 0, 0])) }));
            const connack = (await client.next('connack')) as IConnackPacket;
            assert.equal(connack.reasonCode, 0x82);
            assert.equal(connack.properties?.reasonString, undefined);
            await client.waitForClose();
          });

          it('5.0: with a large enough Maximum Packet Size, the reason string is sent', async () => {
            const client = await open(v);
            client.write(connectBytes(v, { properties: props(Buffer.from([0x21, 0, 0])) }));
            const connack = (await client.next('connack')) as IConnackPacket;
            assert.equal(connack.reasonCode, 0x82);
            assert.match(connack.properties?.reasonString ?? '', /receive maximum/);
          });
        }
      });

      describe('§3.3 PUBLISH', () => {
        it('QoS 3 is malformed [MQTT-3.3.1-4]', async () => {
          const client = await connected(v);
          client.write(publishBytes(v, 'p/q3', NO_PROPS, 0x36));
          await expectClosed(client, v, 0x81);
        });

        it('a zero-length topic is refused [MQTT-4.7.3-1]', async () => {
          const client = await connected(v);
          client.write(publishBytes(v, ''));
          // 5.0: an empty topic without a Topic Alias is a Protocol Error (§3.3.2.3.4)
          await expectClosed(client, v, 0x82);
        });

        if (!v311) {
          it('a Payload Format Indicator other than 0 or 1 is a protocol error, never forwarded altered [MQTT-3.3.2-4]', async () => {
            const sub = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
            await sub.mqtt.subscribeAsync('pfi/#', { qos: 1 });
            const client = await connected(v);
            client.write(publishBytes(v, 'pfi/bad', props(byteProp(0x01, 2))));
            await expectClosed(client, v, 0x82);
            const ok = await connected(v);
            ok.write(publishBytes(v, 'pfi/one', props(byteProp(0x01, 1))));
            ok.write(publishBytes(v, 'pfi/zero', props(byteProp(0x01, 0))));
            const got = await sub.waitForMessages(2);
            assert.deepEqual(got.map((m) => [m.topic, m.packet.properties?.payloadFormatIndicator]), [['pfi/one', true], ['pfi/zero', false]]);
          });

          it('a payload that is not the UTF-8 its Payload Format Indicator says gets PUBACK 0x99 and is not delivered (§3.3.2.3.2)', async () => {
            const sub = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
            await sub.mqtt.subscribeAsync('pfi/#', { qos: 1 });
            const client = await connected(v);
            client.write(packet(0x32, str('pfi/binary'), u16(7), props(byteProp(0x01, 1)), Buffer.from([0xff, 0xfe])));
            client.write(publishBytes(v, 'pfi/after'));
            const ack = (await client.next('puback')) as IPubackPacket;
            assert.deepEqual([ack.messageId, ack.reasonCode], [7, 0x99]);
            await sub.waitForMessages(1, 5000, 'pfi/after');
            assert.deepEqual(sub.messages.map((m) => m.topic), ['pfi/after']);
          });

          it('a Subscription Identifier from a client is a protocol error [MQTT-3.3.4-6]', async () => {
            const client = await connected(v);
            client.write(publishBytes(v, 'p/sid', props(Buffer.from([0x0b, 0x05]))));
            await expectClosed(client, v, 0x82);
          });

          it('a Response Topic with a wildcard is a protocol error [MQTT-3.3.2-14]', async () => {
            const client = await connected(v);
            client.write(publishBytes(v, 'p/req', props(strProp(0x08, 'reply/+'))));
            await expectClosed(client, v, 0x82);
          });

          it('a Topic Alias given twice is a protocol error (§3.3.2.3.4)', async () => {
            const client = await connected(v);
            client.write(publishBytes(v, 'p/alias', props(Buffer.from([0x23, 0, 1]), Buffer.from([0x23, 0, 2]))));
            await expectClosed(client, v, 0x82);
          });
        }
      });

      describe('§3.8 SUBSCRIBE', () => {
        it(`reserved bits in the subscription options are malformed ${v311 ? '[MQTT-3.8.3-4]' : '[MQTT-3.8.3-5]'}`, async () => {
          const client = await connected(v);
          client.write(subscribeBytes(v, 's/x', v311 ? 0x04 : 0x40));
          await expectClosed(client, v, 0x81);
        });

        it('a requested QoS of 3 is refused (3.1.1 [MQTT-3.8.3-4]; 5.0 §3.8.3.1 protocol error)', async () => {
          const client = await connected(v);
          client.write(subscribeBytes(v, 's/x', 0x03));
          await expectClosed(client, v, 0x82);
        });

        it('a SUBSCRIBE without filters is a protocol error [MQTT-3.8.3-3]', async () => {
          const client = await connected(v);
          client.write(packet(0x82, u16(3), v === 5 ? NO_PROPS : Buffer.alloc(0)));
          await expectClosed(client, v, 0x82);
        });

        if (!v311) {
          it('Retain Handling 3 is a protocol error (§3.8.3.1)', async () => {
            const client = await connected(v);
            client.write(subscribeBytes(v, 's/x', 0x30));
            await expectClosed(client, v, 0x82);
          });

          it('No Local on a shared subscription is a protocol error [MQTT-3.8.3-4]', async () => {
            const client = await connected(v);
            client.write(subscribeBytes(v, '$share/g/s/x', 0x04));
            await expectClosed(client, v, 0x82);
          });

          it('Subscription Identifier 0 is a protocol error (§3.8.2.1.2)', async () => {
            const client = await connected(v);
            client.write(subscribeBytes(v, 's/x', 0, props(Buffer.from([0x0b, 0x00]))));
            await expectClosed(client, v, 0x82);
          });

          it('Subscription Identifier twice is a protocol error (§3.8.2.1.2)', async () => {
            const client = await connected(v);
            client.write(subscribeBytes(v, 's/x', 0, props(Buffer.from([0x0b, 0x01]), Buffer.from([0x0b, 0x02]))));
            await expectClosed(client, v, 0x82);
          });

          it('an invalid filter is refused per filter in SUBACK with 0x8F (§3.9.3)', async () => {
            const client = await connected(v);
            client.write(packet(0x82, u16(3), NO_PROPS, str('s/#/x'), Buffer.from([1]), str('s/ok'), Buffer.from([1])));
            const suback = (await client.next('suback')) as ISubackPacket;
            assert.deepEqual(suback.granted, [0x8f, 1]);
          });
        } else {
          it('3.1.1: an invalid filter is refused per filter in SUBACK with 0x80 [MQTT-3.9.3-2]', async () => {
            const client = await connected(v);
            client.write(packet(0x82, u16(3), str('s/#/x'), Buffer.from([1]), str('s/ok'), Buffer.from([1])));
            const suback = (await client.next('suback')) as ISubackPacket;
            assert.deepEqual(suback.granted, [0x80, 1]);
          });
        }
      });

      describe('§3.10 UNSUBSCRIBE', () => {
        it('an UNSUBSCRIBE without filters is a protocol error [MQTT-3.10.3-2]', async () => {
          const client = await connected(v);
          client.write(packet(0xa2, u16(4), v === 5 ? NO_PROPS : Buffer.alloc(0)));
          await expectClosed(client, v, 0x82);
        });
      });

      describe('§3.14 DISCONNECT', () => {
        if (v311) {
          it('3.1.1: DISCONNECT with a body is malformed, the will is published', async () => {
            const sub = await pool.connect(broker.url, { protocolVersion: 5, clientId: uniqueId() });
            const topic = `will/${uniqueId()}`;
            await sub.mqtt.subscribeAsync(topic);
            const client = await connected(v, { will: { topic, payload: Buffer.from('gone'), qos: 0, retain: false } });
            client.write(packet(0xe0, Buffer.from([0])));
            await client.waitForClose();
            await sub.waitForMessages(1, 5000, topic);
          });
        } else {
          it('5.0: an undefined DISCONNECT reason code is malformed (§3.14.2.1)', async () => {
            const client = await connected(v);
            client.write(packet(0xe0, Buffer.from([0x03])));
            await client.waitForClose();
          });
          it('5.0: Session Expiry Interval set on DISCONNECT when it was 0 at CONNECT is a protocol error [MQTT-3.14.2-2]', async () => {
            const client = await connected(v);
            client.write(packet(0xe0, Buffer.from([0x00]), props(int32Prop(0x11, 60))));
            await expectClosed(client, v, 0x82);
          });
        }
      });

      if (v311) {
        it('§3.15 AUTH from a 3.1.1 client closes the connection', async () => {
          const client = await connected(v);
          client.write(packet(0xf0, Buffer.from([0x00])));
          await client.waitForClose();
        });
      }
    });
  }
});

describe('§4.7.2 $SYS is the broker\'s', { timeout: 30000 }, () => {
  const pool = new ClientPool();
  const raws: RawClient[] = [];
  let dir: TempDir;
  let open: TestBroker;
  let policed: TestBroker;

  before(async () => {
    dir = await tempDir();
    open = await startBroker({ deniedPublish311: 'drop' });
    // the policy grants publish on everything (#) and, explicitly, on $SYS/custom/#
    const acl = await dir.write('acl.json', { roles: { anonymous: { publish: ['#', '$SYS/custom/#'], subscribe: ['#', '$SYS/#'] } } });
    policed = await startBroker({ acl });
  });
  afterEach(async () => {
    await pool.closeAll();
    for (const r of raws.splice(0)) r.close();
  });
  after(async () => {
    await open.close();
    await policed.close();
    await dir.remove();
  });

  async function watch(b: TestBroker) {
    const sub = await pool.connect(b.url, { protocolVersion: 5, clientId: uniqueId('sys') });
    await sub.mqtt.subscribeAsync('$SYS/#', { qos: 1 });
    await sub.mqtt.subscribeAsync('ok/#', { qos: 1 });
    return sub;
  }

  it('5.0: a client PUBLISH to $SYS gets PUBACK 0x87 (QoS 1) / PUBREC 0x87 (QoS 2) and reaches no $SYS subscriber', async () => {
    const sub = await watch(open);
    const { client } = await RawClient.connect(open.port, 5, { clientId: uniqueId() });
    raws.push(client);
    client.send({ cmd: 'publish', topic: '$SYS/broker/clients/connected', payload: Buffer.from('9999'), qos: 1, messageId: 1, retain: true, dup: false });
    client.send({ cmd: 'publish', topic: '$SYS/fake', payload: Buffer.from('x'), qos: 2, messageId: 2, retain: false, dup: false });
    client.send({ cmd: 'publish', topic: '$SYS/fake0', payload: Buffer.from('x'), qos: 0, retain: false, dup: false });
    client.send({ cmd: 'publish', topic: 'ok/after', payload: Buffer.from('y'), qos: 1, messageId: 3, retain: false, dup: false });
    assert.equal(((await client.next('puback')) as IPubackPacket).reasonCode, 0x87);
    assert.equal(((await client.next('pubrec')) as IPubackPacket).reasonCode, 0x87);
    // the message published after them arrives; none of the $SYS ones did
    await sub.waitForMessages(1, 5000, 'ok/after');
    assert.deepEqual(sub.messages.map((m) => m.topic), ['ok/after']);
  });

  it('3.1.1: a client PUBLISH to $SYS is acknowledged and dropped (VIGIL_DENIED_PUBLISH_311=drop)', async () => {
    const sub = await watch(open);
    const pub = await pool.connect(open.url, { protocolVersion: 4, clientId: uniqueId() });
    await pub.mqtt.publishAsync('$SYS/broker/uptime', '1 seconds', { qos: 1 });
    await pub.mqtt.publishAsync('ok/after', 'y', { qos: 1 });
    await sub.waitForMessages(1, 5000, 'ok/after');
    assert.deepEqual(sub.messages.map((m) => m.topic), ['ok/after']);
  });

  it('a policy that names $SYS explicitly allows it; "#" does not [MQTT-4.7.2-1]', async () => {
    const sub = await watch(policed);
    const { client } = await RawClient.connect(policed.port, 5, { clientId: uniqueId() });
    raws.push(client);
    client.send({ cmd: 'publish', topic: '$SYS/broker/uptime', payload: Buffer.from('x'), qos: 1, messageId: 1, retain: false, dup: false });
    client.send({ cmd: 'publish', topic: '$SYS/custom/stat', payload: Buffer.from('granted'), qos: 1, messageId: 2, retain: false, dup: false });
    const acks = [(await client.next('puback')) as IPubackPacket, (await client.next('puback')) as IPubackPacket];
    assert.deepEqual(acks.map((a) => [a.messageId, a.reasonCode ?? 0]), [[1, 0x87], [2, 0]]);
    const [m] = await sub.waitForMessages(1, 5000, '$SYS/custom/stat');
    assert.equal(m.payload, 'granted');
    assert.equal(sub.messages.some((x) => x.topic === '$SYS/broker/uptime'), false);
  });
});

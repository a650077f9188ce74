// Cluster, incoming QoS 2: a mark of the publisher's session refused as stale means a newer
// incarnation holds the session elsewhere (a CONNECT on another node, or a reaper that took this
// node's clients while it still served them). That incarnation answers for the packet id; this
// link must route nothing and acknowledge nothing more under it, or the client's retransmission
// there is routed a second time under a new id (delivered twice). Driven over in-memory
// streams with a journal whose answers the test picks: no socket, no Redis.
import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import mqttPacket, { type IDisconnectPacket, type IPublishPacket, type Packet } from 'mqtt-packet';
import { attachConnection } from '../../src/transport/connection.js';
import type { SessionJournal } from '../../src/broker/session-ports.js';
import { createTestContext, type TestContext } from '../helpers/channel-context.js';
import { MemoryStream } from '../helpers/memory-stream.js';
import { RC } from '../../src/protocol/reason-codes.js';

type Mark = 'received' | 'routed' | 'released';

async function settle(): Promise<void> {
  for (let i = 0; i < 8; i++) await new Promise((r) => setImmediate(r));
}

class MemClient {
  readonly stream = new MemoryStream();
  constructor(t: TestContext, readonly version: 4 | 5) {
    attachConnection(this.stream, t.ctx, 'memory');
  }
  send(packet: Record<string, unknown>): void {
    this.stream.feed(mqttPacket.generate(packet as unknown as Packet, { protocolVersion: this.version }));
  }
  of<T extends Packet>(cmd: string): T[] {
    return this.stream.packets(this.version).filter((p) => p.cmd === cmd) as T[];
  }
  async connect(clientId: string, clean: boolean): Promise<void> {
    this.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: this.version, clean, clientId, keepalive: 0, ...(this.version === 5 ? { properties: { sessionExpiryInterval: 600 } } : {}) });
    await settle();
    assert.equal(this.of('connack').length, 1, 'CONNACK');
  }
}

/** A journal that stores every mark, except those of `movedAt`, which it finds stale. */
function journalMovedAt(movedAt: Mark | undefined, marks: string[]): SessionJournal {
  let ids = 0;
  return {
    added: () => Promise.resolve(),
    sent() {},
    released: () => Promise.resolve(),
    done() {},
    newMessageId: () => `m${++ids}`,
    incomingQos2: (_s: unknown, packetId: number, state: Mark) => {
      marks.push(`${state} ${packetId}`);
      return Promise.resolve(state !== movedAt);
    },
  } as unknown as SessionJournal;
}

describe('incoming QoS 2 when the session has moved on', () => {
  let t: TestContext | undefined;
  afterEach(() => t?.close());

  async function setup(version: 4 | 5, movedAt: Mark | undefined) {
    t = createTestContext();
    const sub = new MemClient(t, 5);
    await sub.connect('watcher', true);
    sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'state/#', qos: 2 }] });
    const pub = new MemClient(t, version);
    await pub.connect('publisher', false);
    const marks: string[] = [];
    t.ctx.broker.sessions.get('publisher')!.journal = journalMovedAt(movedAt, marks);
    await settle();
    return { sub, pub, marks };
  }

  for (const version of [4, 5] as const) {
    it(`MQTT ${version === 5 ? '5' : '3.1.1'}: every mark stored: routed once, PUBREC, then PUBCOMP (the control)`, async () => {
      const { sub, pub, marks } = await setup(version, undefined);
      pub.send({ cmd: 'publish', topic: 'state/a', payload: Buffer.from('up'), qos: 2, messageId: 7, retain: false, dup: false });
      await settle();
      assert.deepEqual(sub.of<IPublishPacket>('publish').map((p) => p.payload.toString()), ['up']);
      assert.equal(pub.of('pubrec').length, 1);
      pub.send({ cmd: 'pubrel', messageId: 7 });
      await settle();
      assert.equal(pub.of('pubcomp').length, 1);
      assert.deepEqual(marks, ['received 7', 'routed 7', 'released 7']);
    });

    it(`MQTT ${version === 5 ? '5' : '3.1.1'}: 'received' refused as stale: not routed, no PUBREC, the link ends`, async () => {
      const { sub, pub, marks } = await setup(version, 'received');
      pub.send({ cmd: 'publish', topic: 'state/a', payload: Buffer.from('up'), qos: 2, messageId: 7, retain: false, dup: false });
      await settle();
      assert.deepEqual(marks, ['received 7']);
      assert.deepEqual(sub.of('publish'), [], 'nothing routed: the new incarnation routes the retransmission');
      assert.deepEqual(pub.of('pubrec'), [], 'no PUBREC from the old link');
      assert.ok(pub.stream.destroyed, 'the link ended');
      if (version === 5) assert.equal(pub.of<IDisconnectPacket>('disconnect')[0]?.reasonCode, RC.SESSION_TAKEN_OVER);
    });

    it(`MQTT ${version === 5 ? '5' : '3.1.1'}: 'routed' refused as stale: no PUBREC (the client retransmits to the new node), the link ends`, async () => {
      const { pub, marks } = await setup(version, 'routed');
      pub.send({ cmd: 'publish', topic: 'state/a', payload: Buffer.from('up'), qos: 2, messageId: 7, retain: false, dup: false });
      await settle();
      assert.deepEqual(marks, ['received 7', 'routed 7']);
      assert.deepEqual(pub.of('pubrec'), []);
      assert.ok(pub.stream.destroyed, 'the link ended');
    });

    it(`MQTT ${version === 5 ? '5' : '3.1.1'}: 'released' refused as stale: no PUBCOMP (the new node releases the id), the link ends`, async () => {
      const { pub, marks } = await setup(version, 'released');
      pub.send({ cmd: 'publish', topic: 'state/a', payload: Buffer.from('up'), qos: 2, messageId: 7, retain: false, dup: false });
      await settle();
      assert.equal(pub.of('pubrec').length, 1);
      pub.send({ cmd: 'pubrel', messageId: 7 });
      await settle();
      assert.deepEqual(marks, ['received 7', 'routed 7', 'released 7']);
      assert.deepEqual(pub.of('pubcomp'), [], 'no PUBCOMP: it would free an id the new incarnation still holds');
      assert.ok(pub.stream.destroyed, 'the link ended');
    });
  }
});

// A persistent cluster session sends a QoS 2 message only once the store has it (and its id
// among the seen ids), so a node resuming the session never sends it a second time. Driven
// over a recording link and a journal whose writes the test settles by hand: no socket, no
// Redis, no clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Session } from '../../src/broker/session.js';
import type { SessionJournal, SessionLink } from '../../src/broker/session-ports.js';
import { OutgoingPublish } from '../../src/protocol/publish-encoder.js';
import type { PendingMessage, StoredMessage } from '../../src/store/types.js';

interface Deferred {
  resolve(): void;
  reject(err: Error): void;
}

function harness() {
  const written: string[] = [];
  let pumps = 0;
  const appends: Deferred[] = [];
  const link: SessionLink = {
    protocolVersion: 5,
    sendQuota: 10,
    writable: true,
    open: true,
    sendPublish(out: OutgoingPublish, qos: number) {
      written.push(`${out.message.payload.toString()}@${qos}`);
      return true;
    },
    sendPubrel() {},
    closeForQuota() {},
    pumpLater() {
      pumps++;
    },
    supersede() {},
    close() {},
  } as unknown as SessionLink;
  const journal: SessionJournal = {
    added(_s: Session, _p: PendingMessage) {
      return new Promise<void>((resolve, reject) => appends.push({ resolve, reject }));
    },
    sent() {},
    released: () => Promise.resolve(),
    done() {},
    incomingQos2: () => Promise.resolve(),
    newMessageId: () => 'm',
  } as unknown as SessionJournal;
  const session = new Session('sub', 300, { maxQueued: 100, maxQueuedBytes: 1 << 20, budget: { limit: 1 << 24, used: 0 }, overflow: 'drop-oldest' }, { dropped() {}, sent() {}, snapshotEnded() {} } as never, {
    receiveVerdicts: () => null,
  } as never);
  session.journal = journal;
  session.link = link;
  const deliver = (payload: string, qos: 1 | 2) => {
    const message: StoredMessage = { topic: 't', payload: Buffer.from(payload), qos, retain: false, origin: 'pub', id: payload };
    return session.deliver(new OutgoingPublish(message, 0), qos, false, undefined);
  };
  const flush = () => new Promise((r) => setImmediate(r));
  return { session, written, appends, deliver, flush, pumps: () => pumps };
}

test('a QoS 2 message waits for its append; a QoS 1 message does not', async () => {
  const h = harness();
  void h.deliver('one', 1);
  assert.deepEqual(h.written, ['one@1'], 'QoS 1 goes out at once (at least once allows a copy)');
  void h.deliver('two', 2);
  assert.deepEqual(h.written, ['one@1'], 'QoS 2 is held while its append is in flight');
  assert.equal(h.session.queued, 1);
  h.appends[1].resolve();
  await h.flush();
  assert.ok(h.pumps() > 0, 'a stored append asks for a pump');
  h.session.pump(0);
  assert.deepEqual(h.written, ['one@1', 'two@2']);
});

test('nothing overtakes a held QoS 2 message, and a failed append holds it until a whole save', async () => {
  const h = harness();
  h.deliver('a', 2);
  void h.deliver('b', 1);
  h.session.pump(0);
  assert.deepEqual(h.written, [], 'the QoS 1 message behind it waits too (order)');
  h.appends[0].reject(new Error('redis away'));
  await h.flush();
  h.session.pump(0);
  assert.deepEqual(h.written, [], 'not stored: still held');
  h.session.storedWhole(h.session.pendingMessages());
  h.session.pump(0);
  assert.deepEqual(h.written, ['a@2', 'b@1'], 'a checkpoint stored it: sent, in order');
});

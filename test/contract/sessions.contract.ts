// The SessionStore contract: what any implementation must do (today the Redis one).
import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import type { PendingMessage, SessionSnapshot, SessionStore, Subscription } from '../../src/store/types.js';
import { StaleEpochError } from '../../src/store/errors.js';

export interface SessionHarness {
  store: SessionStore;
  close(): Promise<void>;
  /** Lets time pass for expiry (real or fake). */
  advance(ms: number): Promise<void>;
}

const sub = (filter: string, extra: Partial<Subscription> = {}): Subscription => ({ filter, qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0, ...extra });
const pending = (topic: string, payload: string | Buffer, qos: 1 | 2 = 1): PendingMessage => ({
  message: { topic, payload: Buffer.isBuffer(payload) ? payload : Buffer.from(payload), qos, retain: false, origin: 'p' },
  qos,
  retainFlag: false,
});
const snapshot = (clientId: string, epoch: number, extra: Partial<SessionSnapshot> = {}): SessionSnapshot => ({
  clientId,
  epoch,
  expiryIntervalS: 60,
  subscriptions: [],
  pending: [],
  incomingQos2: [],
  ...extra,
});
const payloads = (s: SessionSnapshot | undefined) => s?.pending.map((p) => p.message.payload.toString());

export function sessionsContract(name: string, make: () => Promise<SessionHarness>): void {
  describe(`SessionStore contract: ${name}`, { timeout: 60000 }, () => {
    let h: SessionHarness;
    let store: SessionStore;
    beforeEach(async () => {
      h = await make();
      store = h.store;
    });
    afterEach(() => h.close());

    it('saves and loads a whole session, pending in order with their state', async () => {
      assert.equal(await store.load('c'), undefined);
      const bin = Buffer.from([0, 1, 255, 10]);
      const sent: PendingMessage = { ...pending('t/1', 'a', 2), packetId: 7, released: true, subscriptionIds: [3] };
      const seqs = await store.save(snapshot('c', 1, {
        subscriptions: [sub('a/#', { qos: 2, subscriptionId: 3 }), sub('b', { group: 'g' })],
        pending: [sent, pending('t/2', bin), pending('t/3', 'c')],
        incomingQos2: [5, 2],
      }));
      assert.equal(seqs.length, 3);
      assert.ok(seqs[0] < seqs[1] && seqs[1] < seqs[2]);
      const s = (await store.load('c'))!;
      assert.equal(s.epoch, 1);
      assert.equal(s.expiryIntervalS, 60);
      assert.deepEqual(s.subscriptions.map((x) => x.filter + (x.group ?? '')).sort(), ['a/#', 'bg']);
      assert.equal(s.subscriptions.find((x) => x.filter === 'a/#')?.subscriptionId, 3);
      assert.deepEqual(payloads(s), ['a', bin.toString(), 'c']);
      assert.deepEqual(s.pending.map((p) => p.storeSeq), seqs);
      assert.deepEqual([s.pending[0].packetId, s.pending[0].released, s.pending[0].subscriptionIds, s.pending[0].qos], [7, true, [3], 2]);
      assert.deepEqual(s.pending[1].message.payload, bin);
      assert.equal(s.pending[1].packetId, undefined);
      assert.deepEqual(s.incomingQos2, [2, 5]);
    });

    it('appends, marks and acknowledges pending messages; an acked one is gone for good', async () => {
      await store.save(snapshot('c', 3));
      const s1 = (await store.appendPending('c', 3, pending('q', 'm1')))!;
      const s2 = (await store.appendPending('c', 3, pending('q', 'm2', 2)))!;
      const s3 = (await store.appendPending('c', 3, pending('q', 'm3')))!;
      assert.ok(s1 < s2 && s2 < s3);
      assert.equal(await store.markPending('c', 3, s2, 11, false), true);
      assert.equal(await store.markPending('c', 3, s2, 11, true), true);
      assert.equal(await store.removePending('c', 3, s1), true);
      assert.equal(await store.removePending('c', 3, s1), false);
      assert.equal(await store.markPending('c', 3, 999, 1, false), false);
      const s = (await store.load('c'))!;
      assert.deepEqual(payloads(s), ['m2', 'm3']);
      assert.deepEqual([s.pending[0].packetId, s.pending[0].released], [11, true]);
    });

    it('refuses a second copy of a message id, also after a new incarnation saved; delete forgets the ids', async () => {
      await store.save(snapshot('c', 1));
      const withId = (payload: string, id: string) => {
        const p = pending('q', payload);
        p.message.id = id;
        return p;
      };
      const first = await store.appendPending('c', 1, withId('m1', 'n1.1'));
      assert.equal(typeof first, 'number');
      assert.equal(await store.appendPending('c', 1, withId('m1 again', 'n1.1')), undefined, 'a copy is not added');
      assert.equal(typeof (await store.appendPending('c', 1, withId('m2', 'n1.2'))), 'number');
      assert.equal(typeof (await store.appendPending('c', 1, pending('q', 'no id'))), 'number', 'messages without an id are never copies');
      assert.equal(typeof (await store.appendPending('c', 1, pending('q', 'no id'))), 'number');
      await store.removePending('c', 1, first!);
      const loaded = (await store.load('c'))!;
      assert.deepEqual(loaded.seen, ['n1.1', 'n1.2']);
      assert.deepEqual(payloads(loaded), ['m2', 'no id', 'no id']);
      await store.save({ ...loaded, epoch: 2 });
      assert.equal(await store.appendPending('c', 2, withId('m1 late', 'n1.1')), undefined, 'the ids outlive the incarnation');
      await store.delete('c', 2);
      await store.save(snapshot('c', 3));
      assert.equal(typeof (await store.appendPending('c', 3, withId('m1', 'n1.1'))), 'number', 'a new session starts without ids');
    });

    it('remembers the ids of the pending messages a save writes (a checkpoint after failed appends)', async () => {
      const p = pending('q', 'kept in memory');
      p.message.id = 'n2.7';
      await store.save(snapshot('c', 1, { pending: [p] }));
      assert.deepEqual((await store.load('c'))!.seen, ['n2.7']);
      assert.equal(await store.appendPending('c', 1, { ...pending('q', 'copy'), message: { ...p.message } }), undefined, 'a copy handed on later is refused');
      assert.deepEqual(payloads(await store.load('c')), ['kept in memory']);
    });

    it('changes subscriptions and incoming QoS 2 ids', async () => {
      await store.save(snapshot('c', 1, { subscriptions: [sub('x')] }));
      await store.putSubscription('c', 1, sub('y', { qos: 0 }));
      await store.putSubscription('c', 1, sub('x', { qos: 2 }));
      await store.putSubscription('c', 1, sub('x', { group: 'g' }));
      assert.equal(await store.removeSubscription('c', 1, 'y'), true);
      assert.equal(await store.removeSubscription('c', 1, 'y'), false);
      assert.equal(await store.addIncomingQos2('c', 1, 9), true);
      assert.equal(await store.addIncomingQos2('c', 1, 9), false);
      assert.equal(await store.addIncomingQos2('c', 1, 4), true);
      assert.equal(await store.removeIncomingQos2('c', 1, 9), true);
      assert.equal(await store.addIncomingQos2('c', 1, 7, 'n1.5'), true, 'received, not routed yet');
      assert.equal(await store.addIncomingQos2('c', 1, 8, 'n1.6'), true);
      assert.equal(await store.addIncomingQos2('c', 1, 8), false, 'routed now');
      const mid = (await store.load('c'))!;
      assert.deepEqual(mid.unroutedQos2, [[7, 'n1.5']]);
      await store.save({ ...mid, epoch: 2 });
      assert.deepEqual((await store.load('c'))!.unroutedQos2, [[7, 'n1.5']], 'kept by save');
      await store.removeIncomingQos2('c', 2, 7);
      await store.removeIncomingQos2('c', 2, 8);
      const s = (await store.load('c'))!;
      assert.deepEqual(s.subscriptions.map((x) => `${x.filter}:${x.group ?? ''}:${x.qos}`).sort(), ['x::2', 'x:g:1']);
      assert.deepEqual(s.incomingQos2, [4]);
    });

    it('fences by epoch: older incarnations cannot write, a newer save takes over', async () => {
      await store.save(snapshot('c', 2));
      await assert.rejects(store.appendPending('c', 1, pending('q', 'x')), StaleEpochError);
      await assert.rejects(store.appendPending('c', 3, pending('q', 'x')), StaleEpochError);
      await assert.rejects(store.save(snapshot('c', 1)), StaleEpochError);
      await assert.rejects(store.putSubscription('c', 1, sub('z')), StaleEpochError);
      await assert.rejects(store.appendPending('nobody', 1, pending('q', 'x')), StaleEpochError);
      const seq = (await store.appendPending('c', 2, pending('q', 'kept')))!;
      // the new incarnation loads, then saves what it took over under its epoch
      const loaded = (await store.load('c'))!;
      const seqs = await store.save({ ...loaded, epoch: 4 });
      assert.ok(seqs[0] > seq, 'sequence numbers never go back');
      await assert.rejects(store.removePending('c', 2, seq), StaleEpochError);
      assert.deepEqual(payloads(await store.load('c')), ['kept']);
      await assert.rejects(store.delete('c', 3), StaleEpochError);
      assert.equal(await store.delete('c', 4), true);
      assert.equal(await store.load('c'), undefined);
      assert.equal(await store.delete('c', 4), false);
    });

    it('expires a disconnected session and keeps a connected one', async () => {
      await store.save(snapshot('gone', 1));
      await store.save(snapshot('stays', 1));
      await store.setExpiry('gone', 1, 200);
      await store.setExpiry('stays', 1, 200);
      await store.setExpiry('stays', 1, undefined);
      await h.advance(400);
      assert.equal(await store.load('gone'), undefined);
      assert.equal((await store.load('stays'))?.epoch, 1);
    });
  });
}

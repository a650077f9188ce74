// The RetainedStore contract: every implementation (memory, Redis) must pass this suite.
import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import type { RetainedStore, StoredMessage } from '../../src/store/types.js';

export interface RetainedHarness {
  store: RetainedStore;
  close(): Promise<void>;
}

const msg = (topic: string, payload: string, extra: Partial<StoredMessage> = {}): StoredMessage => ({
  topic,
  payload: Buffer.from(payload),
  qos: 1,
  retain: true,
  origin: 'pub',
  ...extra,
});

const topics = (ms: StoredMessage[]) => ms.map((m) => m.topic).sort();

export function retainedContract(name: string, make: () => Promise<RetainedHarness>): void {
  describe(`RetainedStore contract: ${name}`, { timeout: 60000 }, () => {
    let h: RetainedHarness;
    let store: RetainedStore;
    beforeEach(async () => {
      h = await make();
      store = h.store;
    });
    afterEach(() => h.close());

    it('a cursor returns what match() returns, one at a time', async () => {
      for (const t of ['c/a', 'c/b/x', 'c/b/y', 'd/b']) await store.set(msg(t, t));
      const c = store.cursor('c/#');
      const seen: StoredMessage[] = [];
      for (let m = c.next(0); m; m = c.next(0)) seen.push(m);
      assert.deepEqual(topics(seen), topics(await store.match('c/#', 0)));
      assert.deepEqual(topics(seen), ['c/a', 'c/b/x', 'c/b/y']);
    });

    it('stores, replaces and deletes (empty payload) by topic', async () => {
      await store.set(msg('a/b', 'one'));
      await store.set(msg('a/b', 'two', { qos: 2 }));
      await store.set(msg('a/c', 'three'));
      assert.equal(await store.count(), 2);
      const [m] = await store.match('a/b', 0);
      assert.equal(m.payload.toString(), 'two');
      assert.equal(m.qos, 2);
      await store.set(msg('a/b', ''));
      assert.deepEqual(topics(await store.match('a/#', 0)), ['a/c']);
      assert.equal(await store.count(), 1);
      await store.set(msg('nothing/here', ''));
      assert.equal(await store.count(), 1);
    });

    it('matches wildcards and keeps $ topics away from leading wildcards [MQTT-4.7.2-1]', async () => {
      for (const t of ['a', 'a/b', 'a/b/c', 'x/b', '$SYS/x', 'a//c']) await store.set(msg(t, 'p'));
      assert.deepEqual(topics(await store.match('a/#', 0)), ['a', 'a//c', 'a/b', 'a/b/c']);
      assert.deepEqual(topics(await store.match('+/b', 0)), ['a/b', 'x/b']);
      assert.deepEqual(topics(await store.match('#', 0)), ['a', 'a//c', 'a/b', 'a/b/c', 'x/b']);
      assert.deepEqual(topics(await store.match('$SYS/#', 0)), ['$SYS/x']);
      assert.deepEqual(topics(await store.match('a/+/c', 0)), ['a//c', 'a/b/c']);
    });

    it('keeps binary payloads and properties intact', async () => {
      const payload = Buffer.from([0, 255, 10, 13, 0x53, 1]);
      await store.set({ ...msg('bin', ''), payload, properties: { contentType: 'x/y', correlationData: Buffer.from([9, 0]), userProperties: { k: ['a', 'b'] } } });
      const [m] = await store.match('bin', 0);
      assert.deepEqual(m.payload, payload);
      assert.equal(m.properties?.contentType, 'x/y');
      assert.deepEqual(m.properties?.correlationData, Buffer.from([9, 0]));
      assert.deepEqual(m.properties?.userProperties, { k: ['a', 'b'] });
    });

    it('leaves out expired messages', async () => {
      await store.set(msg('exp/a', 'old', { expiresAtMs: 1000 }));
      await store.set(msg('exp/b', 'fresh', { expiresAtMs: 5000 }));
      assert.deepEqual(topics(await store.match('exp/#', 2000)), ['exp/b']);
      assert.deepEqual(topics(await store.match('exp/#', 6000)), []);
    });

    it('fencing: an older incarnation of the same client cannot overwrite or delete', async () => {
      // the crashed incarnation (epoch 1) published "up"; reconnecting as epoch 2 it published "up" again
      await store.set(msg('status/dev', 'up', { origin: 'dev' }), 1);
      await store.set(msg('status/dev', 'up2', { origin: 'dev' }), 2);
      // epoch 1's will arrives late: ignored
      await store.set(msg('status/dev', 'down', { origin: 'dev' }), 1);
      assert.equal((await store.match('status/dev', 0))[0].payload.toString(), 'up2');
      await store.set(msg('status/dev', '', { origin: 'dev' }), 1);
      assert.equal(await store.count(), 1, 'an older delete is fenced too');
      // same epoch and newer epochs write
      await store.set(msg('status/dev', 'again', { origin: 'dev' }), 2);
      assert.equal((await store.match('status/dev', 0))[0].payload.toString(), 'again');
      // a delete by epoch 3 keeps fencing epoch 2 afterwards (tombstone)
      await store.set(msg('status/dev', '', { origin: 'dev' }), 3);
      await store.set(msg('status/dev', 'late', { origin: 'dev' }), 2);
      assert.deepEqual(await store.match('status/dev', 0), []);
      await store.set(msg('status/dev', 'new', { origin: 'dev' }), 3);
      assert.equal((await store.match('status/dev', 0))[0].payload.toString(), 'new');
    });

    it('fencing: other clients are last-writer-wins; broker and unfenced writes always apply', async () => {
      await store.set(msg('t', 'a2', { origin: 'a' }), 2);
      await store.set(msg('t', 'b1', { origin: 'b' }), 1);
      assert.equal((await store.match('t', 0))[0].payload.toString(), 'b1');
      await store.set(msg('t', 'a1', { origin: 'a' }), 1);
      assert.equal((await store.match('t', 0))[0].payload.toString(), 'a1', 'fence is per last writer');
      await store.set(msg('t', 'sys', { origin: '' }), 0);
      assert.equal((await store.match('t', 0))[0].payload.toString(), 'sys');
      await store.set(msg('u', 'x5', { origin: 'x' }), 5);
      await store.set(msg('u', 'unfenced', { origin: 'x' }));
      assert.equal((await store.match('u', 0))[0].payload.toString(), 'unfenced');
      await store.set(msg('u', 'x4', { origin: 'x' }), 4);
      assert.equal((await store.match('u', 0))[0].payload.toString(), 'unfenced', 'an unfenced write keeps the writer\'s epoch');
    });
  });
}

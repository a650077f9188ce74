import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryRetainedStore } from '../../src/store/memory/retained.js';
import type { StoredMessage } from '../../src/store/types.js';

const msg = (topic: string, payload = 'x', expiresAtMs?: number): StoredMessage => ({ topic, payload: Buffer.from(payload), qos: 1, retain: true, origin: 'c', expiresAtMs });
const topics = (ms: StoredMessage[]) => ms.map((m) => m.topic).sort();

test('set, replace, delete by empty payload', () => {
  const s = new MemoryRetainedStore();
  s.set(msg('a/b', 'one'));
  s.set(msg('a/b', 'two'));
  assert.equal(s.count(), 1);
  assert.equal(s.match('a/b', 0)[0].payload.toString(), 'two');
  s.set(msg('a/b', ''));
  assert.equal(s.count(), 0);
  assert.deepEqual(s.match('#', 0), []);
});

test('match walks + and #, skips $ topics for leading wildcards, drops expired', () => {
  const s = new MemoryRetainedStore();
  for (const t of ['a', 'a/b', 'a/b/c', 'x/b', '$SYS/up']) s.set(msg(t));
  s.set(msg('old/one', 'x', 100));
  assert.deepEqual(topics(s.match('#', 50)), ['a', 'a/b', 'a/b/c', 'old/one', 'x/b']);
  assert.deepEqual(topics(s.match('#', 200)), ['a', 'a/b', 'a/b/c', 'x/b']);
  assert.equal(s.count(), 5);
  assert.deepEqual(topics(s.match('a/#', 0)), ['a', 'a/b', 'a/b/c']);
  assert.deepEqual(topics(s.match('+/b', 0)), ['a/b', 'x/b']);
  assert.deepEqual(topics(s.match('$SYS/+', 0)), ['$SYS/up']);
  assert.deepEqual(topics(s.match('+/up', 0)), []);
});

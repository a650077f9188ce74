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

test('a cursor walks lazily: it sees replacements and deletes made while it runs, and entries added ahead of it', () => {
  const s = new MemoryRetainedStore();
  for (let i = 0; i < 5; i++) s.set(msg(`f/${i}/s`, `v${i}`));
  const c = s.cursor('f/+/s');
  assert.equal(c.next(0)?.payload.toString(), 'v0');
  s.set(msg('f/3/s', 'new3')); // replaced before the cursor got there: the new value
  s.set(msg('f/2/s', '')); // deleted before it got there: not returned
  s.set(msg('f/0/s', 'new0')); // already passed: not returned again
  s.set(msg('f/9/s', 'v9')); // added ahead of it: returned
  const rest: string[] = [];
  for (let m = c.next(0); m; m = c.next(0)) rest.push(`${m.topic}=${m.payload}`);
  assert.deepEqual(rest, ['f/1/s=v1', 'f/3/s=new3', 'f/4/s=v4', 'f/9/s=v9']);
  assert.equal(c.next(0), undefined);
});

test('a cursor skips and removes messages expired when it reaches them; # and + rules as match()', () => {
  const s = new MemoryRetainedStore();
  s.set(msg('e/a', 'x', 100));
  s.set(msg('e/b'));
  s.set(msg('e/c/d', 'x', 100));
  s.set(msg('$SYS/e'));
  const c = s.cursor('#');
  const seen: string[] = [];
  for (let m = c.next(200); m; m = c.next(200)) seen.push(m.topic);
  assert.deepEqual(seen, ['e/b']);
  assert.equal(s.count(), 2);
  assert.deepEqual(topics(s.match('#', 0)), ['e/b']);
});

test('a cursor over 100,000 topics holds no copy: it returns each once, one at a time', () => {
  const s = new MemoryRetainedStore();
  for (let i = 0; i < 100_000; i++) s.set(msg(`t/${i}`));
  const c = s.cursor('t/#');
  let n = 0;
  const seen = new Set<string>();
  for (let m = c.next(0); m; m = c.next(0)) {
    n++;
    seen.add(m.topic);
  }
  assert.equal(n, 100_000);
  assert.equal(seen.size, 100_000);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TopicTrie, type Subscriber } from '../../src/broker/topic-trie.js';
import type { Subscription } from '../../src/store/types.js';
import { topicMatches } from '../../src/protocol/topics.js';

const sub = (filter: string, group?: string): Subscription => ({ filter, group, qos: 0, noLocal: false, retainAsPublished: false, retainHandling: 0 });
const client = (clientId: string, online = true): Subscriber => ({ clientId, online });

function matches(trie: TopicTrie<Subscriber>, topic: string): string[] {
  const out: string[] = [];
  trie.match(topic, (e) => out.push(`${e.subscriber.clientId}:${e.sub.group ?? ''}${e.sub.filter}`));
  return out.sort();
}

test('trie matches exact, + and # subscriptions and not $ topics by leading wildcards', () => {
  const t = new TopicTrie<Subscriber>();
  t.add(client('a'), sub('x/y'));
  t.add(client('b'), sub('x/+'));
  t.add(client('c'), sub('x/#'));
  t.add(client('d'), sub('#'));
  t.add(client('e'), sub('$SYS/#'));
  assert.deepEqual(matches(t, 'x/y'), ['a:x/y', 'b:x/+', 'c:x/#', 'd:#']);
  assert.deepEqual(matches(t, 'x'), ['c:x/#', 'd:#']);
  assert.deepEqual(matches(t, '$SYS/broker'), ['e:$SYS/#']);
  assert.equal(t.size, 5);
});

test('remove prunes and reports existence; add reports replacement', () => {
  const t = new TopicTrie<Subscriber>();
  assert.equal(t.add(client('a'), sub('x/y')), false);
  assert.equal(t.add(client('a'), sub('x/y')), true);
  assert.equal(t.remove('a', 'x/y'), true);
  assert.equal(t.remove('a', 'x/y'), false);
  assert.deepEqual(matches(t, 'x/y'), []);
  assert.equal(t.size, 0);
});

test('a shared group yields one member per message, round robin, connected members first', () => {
  const t = new TopicTrie<Subscriber>();
  t.add(client('a'), sub('s/#', 'g'));
  t.add(client('b'), sub('s/#', 'g'));
  t.add(client('c', false), sub('s/#', 'g'));
  const picks = Array.from({ length: 6 }, () => matches(t, 's/1')[0]);
  assert.deepEqual(picks, ['a:gs/#', 'b:gs/#', 'a:gs/#', 'b:gs/#', 'a:gs/#', 'b:gs/#']);
  t.remove('a', 's/#', 'g');
  t.remove('b', 's/#', 'g');
  assert.deepEqual(matches(t, 's/1'), ['c:gs/#']);
});

test('property: the trie agrees with topicMatches for random filters and topics', () => {
  const level = fc.constantFrom('a', 'b', 'c', '', '$x');
  const topic = fc.array(level, { minLength: 1, maxLength: 4 }).map((l) => l.join('/'));
  const filter = fc
    .tuple(fc.array(fc.oneof(level, fc.constant('+')), { minLength: 1, maxLength: 4 }), fc.boolean())
    .map(([l, hash]) => (hash ? [...l, '#'] : l).join('/'));
  fc.assert(
    fc.property(fc.uniqueArray(filter, { maxLength: 12 }), topic, (filters, t) => {
      const trie = new TopicTrie<Subscriber>();
      filters.forEach((f, i) => trie.add(client(`c${i}`), sub(f)));
      const got = matches(trie, t);
      const want = filters
        .map((f, i) => [f, i] as const)
        .filter(([f]) => topicMatches(f, t))
        .map(([f, i]) => `c${i}:${f}`)
        .sort();
      assert.deepEqual(got, want);
    }),
    { numRuns: 500 },
  );
});

test('remembered matches follow every add and remove, also with tiny cache limits', () => {
  const level = fc.constantFrom('a', 'b', '$x');
  const topic = fc.array(level, { minLength: 1, maxLength: 3 }).map((l) => l.join('/'));
  const filter = fc
    .tuple(fc.array(fc.oneof(level, fc.constant('+')), { minLength: 1, maxLength: 3 }), fc.boolean())
    .map(([l, hash]) => (hash ? [...l, '#'] : l).join('/'));
  const step = fc.oneof(
    fc.record({ op: fc.constant('add' as const), client: fc.integer({ min: 0, max: 3 }), filter }),
    fc.record({ op: fc.constant('remove' as const), client: fc.integer({ min: 0, max: 3 }), filter }),
    fc.record({ op: fc.constant('match' as const), topic }),
  );
  const limits = fc.constantFrom({ topics: 10_000, entries: 200_000, topicChars: 2_000_000 }, { topics: 2, entries: 3, topicChars: 8 }, { topics: 1, entries: 0, topicChars: 0 });
  fc.assert(
    fc.property(limits, fc.array(step, { maxLength: 40 }), (cacheLimits, steps) => {
      const trie = new TopicTrie<Subscriber>(cacheLimits);
      const model = new Map<string, string>(); // `${client}|${filter}`
      for (const s of steps) {
        if (s.op === 'add') {
          trie.add(client(`c${s.client}`), sub(s.filter));
          model.set(`c${s.client}|${s.filter}`, `c${s.client}:${s.filter}`);
        } else if (s.op === 'remove') {
          trie.remove(`c${s.client}`, s.filter);
          model.delete(`c${s.client}|${s.filter}`);
        } else {
          const want = [...model].filter(([k]) => topicMatches(k.split('|')[1], s.topic)).map(([, v]) => v).sort();
          assert.deepEqual(matches(trie, s.topic), want);
          assert.deepEqual(matches(trie, s.topic), want, 'the remembered answer is the same');
        }
      }
    }),
    { numRuns: 300 },
  );
});

test('a visit that removes the last member of a shared group does not break the match', () => {
  const t = new TopicTrie<Subscriber>();
  t.add(client('a'), sub('s/#', 'g1'));
  t.add(client('b'), sub('s/#', 'g2'));
  t.match('s/1', () => {}); // remembered
  const seen: string[] = [];
  t.match('s/1', (e) => {
    seen.push(e.subscriber.clientId);
    t.remove('b', 's/#', 'g2');
    t.remove('a', 's/#', 'g1');
  });
  assert.deepEqual(seen, ['a']);
  assert.deepEqual(matches(t, 's/1'), []);
});

test('a match not to be remembered (a will topic) answers the same and leaves the cache as it was', () => {
  const t = new TopicTrie<Subscriber>({ topics: 2, entries: 100, topicChars: 1000 });
  t.add(client('monitor'), sub('fleet/#'));
  t.add(client('one'), sub('fleet/a/state'));
  matches(t, 'fleet/x');
  matches(t, 'fleet/y');
  assert.equal(t.rememberedTopics, 2, 'the steady topics fill the cache');
  const once: string[] = [];
  t.match('fleet/a/state', (e) => once.push(`${e.subscriber.clientId}:${e.sub.filter}`), false);
  assert.deepEqual(once.sort(), ['monitor:fleet/#', 'one:fleet/a/state']);
  assert.equal(t.rememberedTopics, 2, 'not remembered, and the full cache was not emptied for it');
  assert.deepEqual(matches(t, 'fleet/a/state'), ['monitor:fleet/#', 'one:fleet/a/state'], 'a remembered lookup of the same topic still answers');
  assert.equal(t.rememberedTopics, 1, 'a third remembered topic empties the full cache, as before');
});

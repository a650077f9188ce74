// Outgoing topic alias bookkeeping (MQTT 5 §3.3.2.3.4): which topics get an alias, within the
// client's maximum [MQTT-3.3.2-11], and how aliases move to the topics sent most.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OutboundAliases } from '../../src/protocol/outbound-aliases.js';

/** Sends `topic` once: the alias used (0 for none) and whether the topic went with it. */
function send(aliases: OutboundAliases, topic: string): { alias: number; withTopic: boolean } {
  const slot = aliases.choose(topic);
  if (slot === undefined) return { alias: 0, withTopic: true };
  const withTopic = !slot.known;
  if (withTopic) aliases.established(slot);
  return { alias: slot.alias, withTopic };
}

test('a topic gets an alias on its second send, is sent with its topic once, then alias only', () => {
  const a = new OutboundAliases(4);
  assert.deepEqual(send(a, 'fleet/one'), { alias: 0, withTopic: true });
  assert.deepEqual(send(a, 'fleet/one'), { alias: 1, withTopic: true });
  assert.deepEqual(send(a, 'fleet/one'), { alias: 1, withTopic: false });
  assert.deepEqual(send(a, 'fleet/one'), { alias: 1, withTopic: false });
});

test('an alias whose setting PUBLISH was not written is set again next time', () => {
  const a = new OutboundAliases(4);
  a.choose('fleet/one');
  const slot = a.choose('fleet/one')!;
  assert.equal(slot.known, false); // not established: e.g. dropped as too large
  assert.equal(a.choose('fleet/one')!.known, false);
});

test('topics too short to gain anything get no alias', () => {
  const a = new OutboundAliases(4);
  for (let i = 0; i < 5; i++) assert.equal(send(a, 'a/b').alias, 0);
});

test('never more aliases than the maximum; the least used moves to a topic sent more [MQTT-3.3.2-11]', () => {
  const a = new OutboundAliases(2);
  for (let i = 0; i < 10; i++) send(a, 'hot/one');
  for (let i = 0; i < 3; i++) send(a, 'warm/two');
  const used = new Set<number>();
  for (let i = 0; i < 3; i++) used.add(send(a, 'cold/three').alias);
  assert.equal(a.size, 2);
  assert.deepEqual(used, new Set([0]), 'a topic sent less than every aliased one gets none');
  // sent more often than warm/two (3 sends + its own uses): takes its alias, with the topic
  let took = { alias: 0, withTopic: true };
  for (let i = 0; i < 10 && took.alias === 0; i++) took = send(a, 'cold/three');
  assert.deepEqual(took, { alias: 2, withTopic: true });
  assert.deepEqual(send(a, 'hot/one'), { alias: 1, withTopic: false });
  // warm/two lost its alias: it goes with its topic again, never with a stale alias
  assert.equal(send(a, 'warm/two').alias === 2, false);
  for (let i = 0; i < 1000; i++) assert.ok(send(a, `t/${i % 50}`).alias <= 2);
});

test('memory stays bounded whatever the topics', () => {
  const a = new OutboundAliases(8);
  for (let i = 0; i < 100_000; i++) send(a, `unique/${i}`);
  assert.ok(a.size <= 8);
  const seen = (a as unknown as { seen: Map<string, number> }).seen;
  assert.ok(seen.size <= 1024, `candidates ${seen.size}`);
});

// The gate in front of a CONNECT's cluster work (VIGIL_CLUSTER_CONNECTS_IN_FLIGHT).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConcurrencyGate } from '../../src/limits/concurrency-gate.js';

describe('ConcurrencyGate', () => {
  it('runs at most max turns at once, the rest first in first out as slots free', () => {
    const gate = new ConcurrencyGate(2);
    const started: number[] = [];
    for (let i = 0; i < 5; i++) gate.enter(() => (started.push(i), true));
    assert.deepEqual(started, [0, 1]);
    assert.equal(gate.active, 2);
    assert.equal(gate.queued, 3);
    gate.leave();
    assert.deepEqual(started, [0, 1, 2]);
    gate.leave();
    gate.leave();
    assert.deepEqual(started, [0, 1, 2, 3, 4]);
    assert.equal(gate.queued, 0);
    gate.leave();
    gate.leave();
    assert.equal(gate.active, 0);
  });

  it('a turn that starts nothing (its connection closed meanwhile) hands its slot to the next at once', () => {
    const gate = new ConcurrencyGate(1);
    const started: string[] = [];
    gate.enter(() => (started.push('a'), true));
    gate.enter(() => (started.push('closed'), false));
    gate.enter(() => (started.push('c'), true));
    gate.leave();
    assert.deepEqual(started, ['a', 'closed', 'c']);
    assert.equal(gate.active, 1);
    gate.enter(() => false); // queued behind c
    gate.leave();
    assert.equal(gate.active, 0);
  });

  it('a newcomer does not overtake turns already waiting', () => {
    const gate = new ConcurrencyGate(1);
    const started: number[] = [];
    gate.enter(() => (started.push(0), true));
    gate.enter(() => (started.push(1), true));
    gate.leave(); // 1 runs
    gate.enter(() => (started.push(2), true));
    assert.deepEqual(started, [0, 1]);
    gate.leave();
    assert.deepEqual(started, [0, 1, 2]);
  });

  it('10,000 waiting turns all run, in order, with the consumed head dropped along the way', () => {
    const gate = new ConcurrencyGate(3);
    const started: number[] = [];
    for (let i = 0; i < 10_000; i++) gate.enter(() => (started.push(i), true));
    while (gate.active > 0) gate.leave();
    assert.equal(started.length, 10_000);
    assert.ok(started.every((v, i) => v === i));
  });
});

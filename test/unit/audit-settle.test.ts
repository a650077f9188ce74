// The end of an audited run (test/helpers/audit.ts settle()) on a simulated clock: which
// acknowledged messages are checked, and how long their deliveries get. Two sentinel-failover
// runs reported a QoS 2 message lost that had been acknowledged while the deliveries were
// being checked, its deliveries still on the way (the subscriber has a QoS 2 message at the
// broker's PUBREL, which follows its publisher's acknowledgement by a store and a WAIT).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { settle } from '../helpers/audit.js';

interface Scripted {
  /** When the publisher gets its acknowledgement (never when absent). */
  readonly ackAt?: number;
  /** When the last subscriber has it (never when absent). */
  readonly deliveredAt?: number;
}

/** An audit's end as settle() sees it, each message scripted on a clock that moves only when settle() sleeps. */
function scripted(messages: readonly Scripted[]) {
  let now = 0;
  let closedAt: number | undefined;
  const audited = () => messages.filter((m) => m.ackAt !== undefined && m.ackAt <= (closedAt ?? now));
  const missing = () => audited().filter((m) => m.deliveredAt === undefined || m.deliveredAt > now).length;
  return {
    state: {
      outstanding: () => messages.filter((m) => m.ackAt === undefined || m.ackAt > now).length,
      missing,
      lastAckMs: () => Math.max(-Infinity, ...audited().map((m) => m.ackAt!)),
      close: () => {
        closedAt = now;
      },
    },
    clock: {
      now: () => now,
      sleep: async (ms: number) => {
        now += ms;
      },
    },
    audited: () => audited().length,
    missing,
    now: () => now,
  };
}

const SETTLE_MS = 8000;

test('a message acknowledged while the deliveries are checked is audited, and its deliveries waited for', async () => {
  // the shape of the failures: one publish never acknowledged (the outstanding wait runs to its
  // deadline), one acknowledged just before it, one 300 ms after it, delivered 800 ms later
  const messages: Scripted[] = [
    ...Array.from({ length: 50 }, (_, i) => ({ ackAt: i * 20, deliveredAt: i * 20 + 200 })),
    { ackAt: 7500, deliveredAt: 7700 },
    { ackAt: SETTLE_MS + 300, deliveredAt: SETTLE_MS + 1100 },
    {},
  ];
  const w = scripted(messages);
  await settle(w.state, SETTLE_MS, w.clock);
  assert.equal(w.audited(), 52, 'every acknowledgement that came before the acknowledgements stopped is audited');
  assert.equal(w.missing(), 0, 'nothing audited is missing once its deliveries had their time');
});

test('an acknowledged message that never arrives is still missing at the end', async () => {
  const w = scripted([{ ackAt: 100, deliveredAt: 300 }, { ackAt: 500 }]);
  const { closedAtMs } = await settle(w.state, SETTLE_MS, w.clock);
  assert.equal(w.missing(), 1);
  assert.ok(closedAtMs <= 500 + SETTLE_MS + 100, `closed at ${closedAtMs}`);
  assert.ok(w.now() <= 500 + 2 * SETTLE_MS + 700, `ended at ${w.now()}`);
});

test('acknowledgements that keep coming past the deadline: the set is closed there, later ones are not audited', async () => {
  // one acknowledgement every 400 ms, each delivered 100 ms later, never quiet for a second
  const w = scripted(Array.from({ length: 100 }, (_, i) => ({ ackAt: SETTLE_MS + i * 400, deliveredAt: SETTLE_MS + i * 400 + 100 })));
  const { acknowledgedAtMs, closedAtMs } = await settle(w.state, SETTLE_MS, w.clock);
  assert.equal(acknowledgedAtMs, SETTLE_MS);
  assert.ok(closedAtMs >= 2 * SETTLE_MS && closedAtMs <= 2 * SETTLE_MS + 100, `closed at ${closedAtMs}`);
  assert.equal(w.missing(), 0);
  assert.ok(w.audited() > 0 && w.audited() < 100);
});

test('every publish acknowledged and delivered: the set closes at once', async () => {
  const w = scripted([{ ackAt: 0, deliveredAt: 50 }, { ackAt: 100, deliveredAt: 150 }]);
  const { closedAtMs } = await settle(w.state, SETTLE_MS, w.clock);
  assert.ok(closedAtMs <= 250, `closed at ${closedAtMs}`);
  assert.equal(w.audited(), 2);
  assert.equal(w.missing(), 0);
});

// "will published" is logged per will up to 100 a second; the rest of a burst (a node reaping
// 10,000 wills) is summed up in one line, while the metric counts every will.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WillManager } from '../../src/broker/wills.js';
import { createMetrics } from '../../src/metrics.js';
import type { WillRecord } from '../../src/store/types.js';
import { FakeClock } from '../helpers/fake-clock.js';

function manager() {
  const clock = new FakeClock();
  const lines: { msg: string; count?: number }[] = [];
  const log = { info: (o: { count?: number }, msg: string) => lines.push({ msg, count: o.count }), warn() {}, error() {}, debug() {} };
  const published: string[] = [];
  const metrics = createMetrics('n', { processMetrics: false });
  const wills = new WillManager({
    clock,
    log: log as never,
    metrics,
    authorizer: { allowAll: true } as never,
    authenticator: { isRevoked: () => false } as never,
    willAuthz: 'fire',
    publish: (m) => void published.push(m.topic),
  });
  return { clock, lines, published, wills, metrics };
}

const will = (i: number): WillRecord => ({
  clientId: `srv-${i}`,
  message: { topic: `fleet/srv-${i}/state`, payload: Buffer.from('down'), qos: 1, retain: true, origin: `srv-${i}` },
  delayS: 0,
  identity: { username: `srv-${i}`, clientId: `srv-${i}`, roles: [] } as never,
  epoch: 1,
  protocolVersion: 4,
});

test('a burst of 250 wills: 100 lines, then one line counting the other 150; every will published and counted', async () => {
  const m = manager();
  await Promise.all(Array.from({ length: 250 }, (_, i) => m.wills.fire(will(i))));
  assert.equal(m.published.length, 250);
  assert.equal(m.lines.filter((l) => l.msg === 'will published').length, 100);
  m.clock.advance(1000);
  assert.deepEqual(m.lines.filter((l) => l.msg !== 'will published').map((l) => l.count), [150]);
  assert.equal((await m.metrics.willsFiredTotal.get()).values[0].value, 250);
  // the next second starts a new allowance
  await m.wills.fire(will(999));
  assert.equal(m.lines.filter((l) => l.msg === 'will published').length, 101);
});

// WillManager.fireNow, the reaper's path (10,000 wills from Redis replies): a verdict known at
// once (allow-all, cached) publishes in the call, with no promise; a verdict computed off the
// main thread still decides before publishing; a revoked identity or a denying policy blocks
// the will with its log line and metric either way. fire() keeps deciding after the caller's turn.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WillManager } from '../../src/broker/wills.js';
import type { Verdict } from '../../src/auth/types.js';
import { createMetrics } from '../../src/metrics.js';
import type { WillRecord } from '../../src/store/types.js';
import { FakeClock } from '../helpers/fake-clock.js';

function manager(opts: { check?: () => Verdict | Promise<Verdict>; revoked?: boolean } = {}) {
  const lines: { level: string; msg: string; reason?: string }[] = [];
  const at = (level: string) => (o: { reason?: string }, msg: string) => void lines.push({ level, msg, reason: o.reason });
  const log = { info: at('info'), warn: at('warn'), error: at('error'), debug() {} };
  const published: string[] = [];
  const metrics = createMetrics('n', { processMetrics: false });
  const wills = new WillManager({
    clock: new FakeClock(),
    log: log as never,
    metrics,
    authorizer: (opts.check ? { allowAll: false, check: opts.check } : { allowAll: true }) as never,
    authenticator: { isRevoked: () => opts.revoked === true } as never,
    willAuthz: 'fire',
    publish: (m) => void published.push(m.topic),
  });
  const denied = async (reason: string) => (await metrics.willsDeniedTotal.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;
  return { lines, published, wills, denied };
}

const will: WillRecord = {
  clientId: 'srv-1',
  message: { topic: 'fleet/srv-1/state', payload: Buffer.from('down'), qos: 1, retain: true, origin: 'srv-1' },
  delayS: 0,
  identity: { username: 'srv-1', clientId: 'srv-1', roles: [] } as never,
  epoch: 1,
  protocolVersion: 4,
};

test('fireNow with a verdict known at once publishes within the call, no promise', () => {
  const m = manager();
  assert.equal(m.wills.fireNow(will), undefined);
  assert.deepEqual(m.published, ['fleet/srv-1/state']);
});

test('fireNow: a revoked identity blocks the will at once, with its line and metric', async () => {
  const m = manager({ revoked: true });
  assert.equal(m.wills.fireNow(will), undefined);
  assert.deepEqual(m.published, []);
  assert.equal(await m.denied('revoked'), 1);
  assert.ok(m.lines.some((l) => l.level === 'warn' && l.msg === 'will denied' && l.reason === 'revoked'));
});

test('fireNow with a verdict from the pool: decided when it comes, denied or allowed as the policy says', async () => {
  const deny = manager({ check: () => Promise.resolve({ allowed: false, reason: 'no_grant' } as Verdict) });
  const pending = deny.wills.fireNow(will);
  assert.ok(pending instanceof Promise);
  await pending;
  assert.deepEqual(deny.published, []);
  assert.equal(await deny.denied('no_grant'), 1);

  const allow = manager({ check: () => Promise.resolve({ allowed: true } as Verdict) });
  await allow.wills.fireNow(will);
  assert.deepEqual(allow.published, ['fleet/srv-1/state']);

  const broken = manager({ check: () => Promise.reject(new Error('pool gone')) });
  await broken.wills.fireNow(will);
  assert.deepEqual(broken.published, []);
  assert.equal(await broken.denied('authorization_error'), 1);
  assert.ok(broken.lines.some((l) => l.level === 'error' && l.msg === 'will authorization failed'));
});

test('fire() decides after the caller\'s turn, as before', async () => {
  const m = manager();
  const done = m.wills.fire(will);
  assert.deepEqual(m.published, [], 'not within the call');
  await done;
  assert.deepEqual(m.published, ['fleet/srv-1/state']);
});

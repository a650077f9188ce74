// WillManager.fireNow, the reaper's path (10,000 wills from Redis replies): a verdict known at
// once (allow-all, cached) publishes in the call, with no promise; a verdict computed off the
// main thread still decides before publishing; a revoked identity or a denying policy blocks
// the will with its log line and metric either way. fire() keeps deciding after the caller's turn.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WillManager } from '../../src/broker/wills.js';
import type { Verdict } from '../../src/auth/types.js';
import { createMetrics } from '../../src/metrics.js';
import type { StoredMessage, WillRecord } from '../../src/store/types.js';
import { FakeClock } from '../helpers/fake-clock.js';

function manager(opts: { check?: () => Verdict | Promise<Verdict>; revoked?: boolean } = {}) {
  const lines: { level: string; msg: string; reason?: string }[] = [];
  const at = (level: string) => (o: { reason?: string }, msg: string) => void lines.push({ level, msg, reason: o.reason });
  const log = { info: at('info'), warn: at('warn'), error: at('error'), debug() {} };
  const published: string[] = [];
  const messages: StoredMessage[] = [];
  const clock = new FakeClock();
  const metrics = createMetrics('n', { processMetrics: false });
  const wills = new WillManager({
    clock,
    log: log as never,
    metrics,
    authorizer: (opts.check ? { allowAll: false, check: opts.check } : { allowAll: true }) as never,
    authenticator: { isRevoked: () => opts.revoked === true } as never,
    willAuthz: 'fire',
    publish: (m) => {
      published.push(m.topic);
      messages.push(m);
    },
  });
  const denied = async (reason: string) => (await metrics.willsDeniedTotal.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;
  return { lines, published, messages, clock, wills, denied };
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

test('the published will is a copy with every field of the will message, its expiry counted from the fire', () => {
  const m = manager();
  const properties = { contentType: 'text/plain', correlationData: Buffer.from('c1'), userProperties: { site: 'a' } };
  const record: WillRecord = {
    ...will,
    protocolVersion: 5,
    messageExpiryS: 30,
    message: { ...will.message, properties, publisher: 'srv-1', id: 'n1.7' },
  };
  m.clock.advance(5000);
  m.wills.fireNow(record);
  const [sent] = m.messages;
  assert.notEqual(sent, record.message, 'not the record\'s own object');
  assert.equal(sent.topic, 'fleet/srv-1/state');
  assert.equal(sent.payload, record.message.payload);
  assert.equal(sent.qos, 1);
  assert.equal(sent.retain, true);
  assert.equal(sent.origin, 'srv-1');
  assert.equal(sent.publisher, 'srv-1');
  assert.equal(sent.id, 'n1.7');
  assert.equal(sent.properties, properties);
  assert.equal(sent.expiresAtMs, m.clock.now() + 30_000);
  assert.equal(record.message.expiresAtMs, undefined, 'the record is left as it was');

  const plain = manager();
  plain.wills.fireNow(will);
  assert.equal(plain.messages[0].expiresAtMs, undefined);
  assert.equal(plain.messages[0].publisher, undefined);
  assert.equal(plain.messages[0].id, undefined);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FailureLimiter, RateLimiter } from '../../src/limits/rate-limiter.js';

test('token bucket: burst, then the sustained rate; 0 is off', () => {
  const r = new RateLimiter(10, 20);
  let allowed = 0;
  for (let i = 0; i < 50; i++) if (r.take('a', 1000)) allowed++;
  assert.equal(allowed, 20);
  assert.equal(r.take('a', 1100), true); // 0.1 s refills one token
  assert.equal(r.take('a', 1100), false);
  assert.equal(r.take('b', 1100), true, 'keys are independent');
  const off = new RateLimiter(0, 0);
  for (let i = 0; i < 1000; i++) assert.equal(off.take('a', 0), true);
});

test('failures: blocked after the limit, back-off doubles, success clears', () => {
  const f = new FailureLimiter(3, 60_000, 1000, 8000);
  for (let i = 0; i < 3; i++) f.failed('u', 0);
  assert.equal(f.blockedFor('u', 0), 0);
  f.failed('u', 0);
  assert.equal(f.blockedFor('u', 0), 1000);
  for (let i = 0; i < 4; i++) f.failed('u', 2000);
  assert.equal(f.blockedFor('u', 2000), 2000);
  f.succeeded('u');
  assert.equal(f.blockedFor('u', 2000), 0);
});

test('memory stays bounded under a flood of distinct keys', () => {
  const r = new RateLimiter(1, 1, 1000);
  const f = new FailureLimiter(1, 60_000, 1000, 8000, 1000);
  for (let i = 0; i < 50_000; i++) {
    r.take(`10.0.${i >> 8}.${i & 255}`, i);
    f.failed(`user${i}`, i);
  }
  assert.equal(r.trackedKeys, 1000);
  assert.equal(f.trackedKeys, 1000);
});

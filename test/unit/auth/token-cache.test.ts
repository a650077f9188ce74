import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createIdentity, type AuthOutcome, type AuthRequest } from '../../../src/auth/index.js';
import { tokenCacheKey } from '../../../src/auth/token-cache.js';
import { makeKey, signHmac, signToken, tempDir } from '../../helpers/jwt.js';
import { captureLogger, identityConfig, metricValue, testMetrics } from './support.js';

const req = (token: string, username?: string): AuthRequest => ({ clientId: 'c', username, password: Buffer.from(token), protocolVersion: 4, remoteAddress: '127.0.0.1' });
const reasonOf = (o: AuthOutcome) => (o.ok ? 'ok' : o.reason);

describe('verified-token cache', () => {
  it('is keyed by the sha256 of the token (base64url), never the token', () => {
    for (const token of ['a.b.c', 'ünïcode.tökén.x', 'x'.repeat(16 * 1024)]) {
      assert.equal(tokenCacheKey(token), createHash('sha256').update(token, 'utf8').digest('base64url'));
    }
  });

  it('answers a reconnect storm with the same token without crypto, synchronously', async () => {
    const dir = await tempDir();
    const key = await makeKey('k1');
    let now = Date.now();
    const metrics = testMetrics();
    const identity = await createIdentity(identityConfig({ jwks: await dir.write('jwks.json', { keys: [key.jwk] }), jwtClockToleranceS: 5 }), metrics, captureLogger().logger, { now: () => now });
    try {
      const token = await signToken(key, { sub: 'dev-1', expiresInS: 120, claims: { jti: 'j1' } });
      // 50 concurrent CONNECTs before the first verification finished share one task.
      const first = await Promise.all(Array.from({ length: 50 }, () => identity.authenticator.authenticate(req(token))));
      assert.ok(first.every((o) => o.ok));
      assert.equal(identity.pool.tasksSubmitted('verifyToken'), 1);

      for (let i = 0; i < 1000; i++) {
        const out = identity.authenticator.authenticate(req(token, i % 2 ? 'dev-1' : undefined));
        assert.ok(!(out instanceof Promise), 'a cache hit answers synchronously');
        assert.ok(out.ok);
      }
      assert.equal(identity.pool.tasksSubmitted('verifyToken'), 1, 'no crypto for cache hits');
      assert.equal(await metricValue(metrics, 'authTokenCacheHitsTotal'), 1000);

      // A hit still checks what is per-connection.
      assert.equal(reasonOf(identity.authenticator.authenticate(req(token, 'someone-else')) as AuthOutcome), 'username_mismatch');
      await identity.revocations.revokeJti('j1', { untilMs: now + 1000 });
      assert.equal(reasonOf(await identity.authenticator.authenticate(req(token))), 'revoked');
      now += 2000; // the revocation entry expires
      assert.equal(reasonOf(await identity.authenticator.authenticate(req(token))), 'ok');

      // ... and the clock: past exp + tolerance the entry is gone and a fresh verify refuses it.
      now += 126_000;
      assert.equal(reasonOf(await identity.authenticator.authenticate(req(token))), 'expired');
    } finally {
      await identity.close();
      await dir.remove();
    }
  });
});

describe('bounded pool', () => {
  it('admission queue: tokens wait beyond authQueueMax, Server Busy at once past authAdmissionMax', async () => {
    const dir = await tempDir();
    const key = await makeKey('k1');
    const metrics = testMetrics();
    const identity = await createIdentity(identityConfig({ jwks: await dir.write('jwks.json', { keys: [key.jwk] }), authWorkers: 1, authQueueMax: 1, authAdmissionMax: 5 }), metrics, captureLogger().logger);
    try {
      const tokens = await Promise.all(Array.from({ length: 20 }, (_, i) => signToken(key, { sub: `d${i}` })));
      const results = tokens.map((t) => identity.authenticator.authenticate(req(t)));
      // one turn: the pool's 1 and the queue's 5 wait, the other 14 are refused synchronously
      const busy = results.filter((r) => !(r instanceof Promise)) as AuthOutcome[];
      assert.equal(busy.length, 14);
      for (const b of busy) assert.deepEqual(b.ok ? 'ok' : [b.reasonCode, b.reason], [0x89, 'server_busy']);
      assert.equal(identity.pool.admissionWaiting, 6);
      const verified = await Promise.all(results.filter((r) => r instanceof Promise));
      assert.equal(verified.length, 6);
      assert.ok(verified.every((o) => o.ok));
      assert.equal(identity.pool.admissionWaiting, 0);
      assert.equal(await metricValue(metrics, 'authVerificationsTotal', { outcome: 'refused', reason: 'server_busy' }), 14);
    } finally {
      await identity.close();
      await dir.remove();
    }
  });

  it('admission queue bounded in bytes: Server Busy once the waiting tokens hold authAdmissionBytes', async () => {
    const dir = await tempDir();
    const key = await makeKey('k1');
    const metrics = testMetrics();
    const identity = await createIdentity(identityConfig({ jwks: await dir.write('jwks.json', { keys: [key.jwk] }), authWorkers: 1, authQueueMax: 1, authAdmissionBytes: 1 }), metrics, captureLogger().logger);
    try {
      const tokens = await Promise.all(Array.from({ length: 5 }, (_, i) => signToken(key, { sub: `b${i}` })));
      const results = tokens.map((t) => identity.authenticator.authenticate(req(t)));
      // the first token is waiting (it fills the 1 byte): the rest are refused
      assert.equal(results.filter((r) => r instanceof Promise).length, 1);
      assert.equal(results.filter((r) => !(r instanceof Promise)).length, 4);
      await Promise.all(results.filter((r) => r instanceof Promise));
    } finally {
      await identity.close();
      await dir.remove();
    }
  });

  it('a backlog leaves the admission queue in full batches, not topped up token by token', async () => {
    const secret = 'batch-test-secret-0123456789abcdef';
    const metrics = testMetrics();
    const identity = await createIdentity(identityConfig({ jwtSecret: secret, jwtAlgorithms: ['HS256'], authWorkers: 2, authQueueMax: 64 }), metrics, captureLogger().logger);
    try {
      const n = 3000;
      const tokens = await Promise.all(Array.from({ length: n }, (_, i) => signHmac(secret, { sub: `q${i}` })));
      const outcomes = await Promise.all(tokens.map((t, i) => identity.authenticator.authenticate({ ...req(t), clientId: `q${i}`, username: `q${i}` })));
      assert.ok(outcomes.every((o) => o.ok));
      const tasks = await metricValue(metrics, 'authPoolTasksTotal', { task: 'verifyTokens' });
      // 32 per task when full; topping up with what each finished task freed averaged ~9
      assert.ok(tasks <= n / 16, `${tasks} tasks for ${n} tokens`);
    } finally {
      await identity.close();
    }
  });

  it('authAdmissionMax 0: Server Busy at once when the pool holds authQueueMax', async () => {
    const dir = await tempDir();
    const key = await makeKey('k1');
    const metrics = testMetrics();
    const identity = await createIdentity(identityConfig({ jwks: await dir.write('jwks.json', { keys: [key.jwk] }), authWorkers: 1, authQueueMax: 1, authAdmissionMax: 0 }), metrics, captureLogger().logger);
    try {
      const tokens = await Promise.all(Array.from({ length: 20 }, (_, i) => signToken(key, { sub: `d${i}` })));
      const results = tokens.map((t) => identity.authenticator.authenticate(req(t)));
      const busy = results.filter((r) => !(r instanceof Promise)) as AuthOutcome[];
      assert.ok(busy.length >= 15, `expected most to be refused, got ${busy.length}`);
      for (const b of busy) assert.deepEqual(b.ok ? 'ok' : [b.reasonCode, b.reason], [0x89, 'server_busy']);
      const verified = await Promise.all(results.filter((r) => r instanceof Promise));
      assert.ok(verified.length >= 1 && verified.every((o) => o.ok));
      assert.equal(await metricValue(metrics, 'authVerificationsTotal', { outcome: 'refused', reason: 'server_busy' }), busy.length);
      // Once drained, new CONNECTs are served again.
      assert.equal(reasonOf(await identity.authenticator.authenticate(req(tokens[19]!))), 'ok');
    } finally {
      await identity.close();
      await dir.remove();
    }
  });
});

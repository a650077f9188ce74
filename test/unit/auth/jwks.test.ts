import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createIdentity, type AuthOutcome, type AuthRequest } from '../../../src/auth/index.js';
import { makeKey, signToken, startJwksServer, tempDir } from '../../helpers/jwt.js';
import { captureLogger, identityConfig, metricValue, testMetrics, waitFor } from './support.js';

const req = (token: string): AuthRequest => ({ clientId: 'c', password: Buffer.from(token), protocolVersion: 4, remoteAddress: '127.0.0.1' });
const reasonOf = (o: AuthOutcome) => (o.ok ? 'ok' : o.reason);

describe('JWKS file', () => {
  it('reloads on change, and a broken new file keeps the old keys', async () => {
    const dir = await tempDir();
    const a = await makeKey('key-a');
    const b = await makeKey('key-b', 'ES256');
    const metrics = testMetrics();
    const { logger, lines } = captureLogger();
    const path = await dir.write('jwks.json', { keys: [a.jwk] });
    const identity = await createIdentity(identityConfig({ jwks: path }), metrics, logger, { watchIntervalMs: 30 });
    try {
      const tokenA = await signToken(a, { sub: 'a' });
      const tokenB = await signToken(b, { sub: 'b' });
      assert.equal(reasonOf(await identity.authenticator.authenticate(req(tokenA))), 'ok');
      assert.equal(reasonOf(await identity.authenticator.authenticate(req(tokenB))), 'unknown_kid');

      await dir.write('jwks.json', { keys: [a.jwk, b.jwk] });
      await waitFor(() => identity.jwks!.describe().some((k) => k.kid === 'key-b'), 5000, 'key-b loaded');
      assert.equal(reasonOf(await identity.authenticator.authenticate(req(tokenB))), 'ok');

      await dir.write('jwks.json', '{"keys": [ this is not json');
      await waitFor(async () => (await metricValue(metrics, 'jwksRefreshesTotal', { trigger: 'file_change', outcome: 'error' })) >= 1, 5000, 'failed reload counted');
      assert.deepEqual(identity.jwks!.describe().map((k) => [k.kid, k.state]).sort(), [['key-a', 'active'], ['key-b', 'active']]);
      const freshA = await signToken(a, { sub: 'a2' });
      assert.equal(reasonOf(await identity.authenticator.authenticate(req(freshA))), 'ok', 'old keys still verify');
      assert.ok(lines.some((l) => l.includes('JWKS file not loaded; keeping the previous keys')));
      assert.equal(await metricValue(metrics, 'jwksKeys', { state: 'active' }), 2);
    } finally {
      await identity.close();
      await dir.remove();
    }
  });

  it('refuses to start on a missing or broken file, and ignores private and symmetric keys', async () => {
    const dir = await tempDir();
    try {
      await assert.rejects(createIdentity(identityConfig({ jwks: dir.file('missing.json') }), testMetrics(), captureLogger().logger), /ENOENT/);
      const broken = await dir.write('broken.json', '{"nokeys": true}');
      await assert.rejects(createIdentity(identityConfig({ jwks: broken }), testMetrics(), captureLogger().logger), /keys/);

      const a = await makeKey('key-a');
      const { exportJWK } = await import('jose');
      const privateJwk = { ...(await exportJWK(a.privateKey)), kid: 'leaked' };
      const path = await dir.write('mixed.json', { keys: [a.jwk, privateJwk, { kty: 'oct', k: 'c2VjcmV0', kid: 'hmac' }] });
      const { logger, lines } = captureLogger();
      const identity = await createIdentity(identityConfig({ jwks: path }), testMetrics(), logger);
      try {
        assert.deepEqual(identity.jwks!.describe().map((k) => k.kid), ['key-a']);
        assert.ok(lines.some((l) => l.includes('private key material')));
        assert.ok(!lines.some((l) => l.includes(String(privateJwk.d))), 'private key material must not be logged');
      } finally {
        await identity.close();
      }
    } finally {
      await dir.remove();
    }
  });
});

describe('key rotation', () => {
  it('keeps a removed key verifying for jwksRetiredGraceS, then drops it and the tokens it verified', async () => {
    const dir = await tempDir();
    const a = await makeKey('key-a');
    const b = await makeKey('key-b');
    let now = Date.now();
    const metrics = testMetrics();
    const path = await dir.write('jwks.json', { keys: [a.jwk, b.jwk] });
    const identity = await createIdentity(identityConfig({ jwks: path, jwksRetiredGraceS: 60, jwksMinRefreshS: 0 }), metrics, captureLogger().logger, { now: () => now });
    try {
      const cachedA = await signToken(a, { sub: 'a' });
      assert.equal(reasonOf(await identity.authenticator.authenticate(req(cachedA))), 'ok');

      await dir.write('jwks.json', { keys: [b.jwk] });
      await identity.jwks!.reload('manual');
      const stateA = identity.jwks!.describe().find((k) => k.kid === 'key-a');
      assert.equal(stateA?.state, 'retired');
      assert.equal(stateA?.verifiesUntilMs, now + 60_000);
      assert.equal(await metricValue(metrics, 'jwksKeys', { state: 'retired' }), 1);
      assert.deepEqual(identity.explain().keys.map((k) => `${k.kid}:${k.state}`).sort(), ['key-a:retired', 'key-b:active']);

      const freshA = await signToken(a, { sub: 'a-fresh' });
      assert.equal(reasonOf(await identity.authenticator.authenticate(req(freshA))), 'ok', 'retired key verifies within grace');
      assert.equal(reasonOf(await identity.authenticator.authenticate(req(cachedA))), 'ok');

      now += 61_000;
      assert.equal(reasonOf(await identity.authenticator.authenticate(req(freshA))), 'unknown_kid', 'grace over');
      assert.equal(reasonOf(await identity.authenticator.authenticate(req(cachedA))), 'unknown_kid', 'cached token dropped with its key');
      assert.deepEqual(identity.jwks!.describe().map((k) => k.kid), ['key-b']);
    } finally {
      await identity.close();
      await dir.remove();
    }
  });

  it('with jwksRetiredGraceS=0 a removed key stops verifying at once, even for cached tokens', async () => {
    const dir = await tempDir();
    const a = await makeKey('key-a');
    const b = await makeKey('key-b');
    const path = await dir.write('jwks.json', { keys: [a.jwk, b.jwk] });
    const identity = await createIdentity(identityConfig({ jwks: path, jwksRetiredGraceS: 0 }), testMetrics(), captureLogger().logger);
    try {
      const token = await signToken(a, { sub: 'a' });
      assert.equal(reasonOf(await identity.authenticator.authenticate(req(token))), 'ok');
      await dir.write('jwks.json', { keys: [b.jwk] });
      await identity.jwks!.reload('manual');
      assert.equal(reasonOf(await identity.authenticator.authenticate(req(token))), 'unknown_kid');
    } finally {
      await identity.close();
      await dir.remove();
    }
  });
});

describe('JWKS URL', () => {
  it('refetches once for a burst of 100 unknown-kid tokens, and not again within jwksMinRefreshS', async () => {
    const a = await makeKey('key-a');
    const b = await makeKey('key-b', 'ES256');
    const server = await startJwksServer([a]);
    let now = Date.now();
    const metrics = testMetrics();
    const identity = await createIdentity(identityConfig({ jwks: server.url, jwksMinRefreshS: 30, authWorkers: 2 }), metrics, captureLogger().logger, { now: () => now });
    try {
      assert.equal(server.requests, 1, 'initial fetch');
      server.setKeys([a, b]); // the IdP rotates in key-b after our fetch
      server.setDelayMs(150);
      const tokens = await Promise.all(Array.from({ length: 100 }, (_, i) => signToken(b, { sub: `device-${i}` })));
      const outcomes = await Promise.all(tokens.map((t) => identity.authenticator.authenticate(req(t))));
      assert.deepEqual(new Set(outcomes.map(reasonOf)), new Set(['ok']));
      assert.equal(server.requests, 2, 'exactly one refetch for the whole burst');
      assert.equal(await metricValue(metrics, 'jwksRefreshesTotal', { trigger: 'unknown_kid', outcome: 'ok' }), 1);

      const c = await makeKey('key-c');
      server.setKeys([a, b, c]);
      now += 10_000;
      const early = await Promise.all([0, 1, 2].map(async (i) => identity.authenticator.authenticate(req(await signToken(c, { sub: `c${i}` })))));
      assert.deepEqual(early.map(reasonOf), ['unknown_kid', 'unknown_kid', 'unknown_kid']);
      assert.equal(server.requests, 2, 'no refetch within jwksMinRefreshS');

      now += 25_000;
      assert.equal(reasonOf(await identity.authenticator.authenticate(req(await signToken(c, { sub: 'c-late' })))), 'ok');
      assert.equal(server.requests, 3, 'refetch allowed again after jwksMinRefreshS');
    } finally {
      await identity.close();
      await server.close();
    }
  });

  it('answers Server Unavailable while the key set has never been fetched', async () => {
    const server = await startJwksServer([]);
    const url = server.url;
    await server.close(); // nothing listens there any more
    const a = await makeKey('key-a');
    const identity = await createIdentity(identityConfig({ jwks: url, jwksMinRefreshS: 0 }), testMetrics(), captureLogger().logger);
    try {
      const out = await identity.authenticator.authenticate(req(await signToken(a, { sub: 'a' })));
      assert.deepEqual(out.ok ? 'ok' : [out.reasonCode, out.reason], [0x88, 'jwks_unavailable']);
    } finally {
      await identity.close();
    }
  });

  it('refuses plain http to a non-loopback host', async () => {
    await assert.rejects(createIdentity(identityConfig({ jwks: 'http://idp.example/jwks.json' }), testMetrics(), captureLogger().logger), /loopback/);
  });
});

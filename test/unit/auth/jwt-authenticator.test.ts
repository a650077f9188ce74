import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createIdentity, type AuthOutcome, type AuthRequest, type IdentityModule } from '../../../src/auth/index.js';
import { makeKey, malicious, signHmac, signToken, tempDir, type TempDir, type TestKey } from '../../helpers/jwt.js';
import { captureLogger, identityConfig, metricValue, testMetrics } from './support.js';

const req = (token: string | undefined, extra: Partial<AuthRequest> = {}): AuthRequest => ({
  clientId: 'c1',
  password: token === undefined ? undefined : Buffer.from(token),
  protocolVersion: 5,
  remoteAddress: '127.0.0.1',
  ...extra,
});

function refusal(outcome: AuthOutcome): [number, string] | 'ok' {
  return outcome.ok ? 'ok' : [outcome.reasonCode, outcome.reason];
}

describe('jwt authentication', () => {
  let dir: TempDir;
  let rsa: TestKey;
  let ec: TestKey;
  let identity: IdentityModule;
  const metrics = testMetrics();
  const { logger, lines } = captureLogger();
  const tokensSeen: string[] = [];
  const auth = async (token: string | undefined, extra: Partial<AuthRequest> = {}) => {
    if (token) tokensSeen.push(token);
    return identity.authenticator.authenticate(req(token, extra));
  };

  before(async () => {
    dir = await tempDir();
    rsa = await makeKey('k-rsa', 'RS256');
    ec = await makeKey('k-ec', 'ES256');
    const jwks = await dir.write('jwks.json', { keys: [rsa.jwk, ec.jwk] });
    identity = await createIdentity(identityConfig({ jwks, jwtIssuer: 'https://idp.example', jwtAudience: 'vigil' }), metrics, logger);
  });
  after(async () => {
    await identity.close();
    await dir.remove();
  });

  const good = { issuer: 'https://idp.example', audience: 'vigil' };

  it('accepts an RS256 token and builds the identity from its claims', async () => {
    const token = await signToken(rsa, { ...good, sub: 'x3000c0s9b0n0', claims: { roles: ['server', 'monitor'], jti: 'j-1', acl: { publish: ['trusted/x3000c0s9b0n0/#'] } }, expiresInS: 600 });
    const out = await auth(token, { username: 'x3000c0s9b0n0' });
    assert.ok(out.ok, JSON.stringify(out));
    assert.equal(out.identity.username, 'x3000c0s9b0n0');
    assert.deepEqual(out.identity.roles, ['server', 'monitor']);
    assert.deepEqual(out.identity.tokenAcl, { publish: ['trusted/x3000c0s9b0n0/#'] });
    assert.equal(out.identity.jti, 'j-1');
    assert.equal(out.identity.kid, 'k-rsa');
    assert.equal(out.identity.clientId, 'c1');
    assert.ok(Math.abs(out.identity.expiresAtMs! - (Date.now() + 600_000)) < 5000);
  });

  it('accepts an ES256 token with space-separated roles', async () => {
    const out = await auth(await signToken(ec, { ...good, sub: 'mon-1', claims: { roles: 'monitor viewer' } }));
    assert.ok(out.ok);
    assert.deepEqual(out.identity.roles, ['monitor', 'viewer']);
  });

  it('takes the token from MQTT 5 Authentication Data with method JWT', async () => {
    const token = await signToken(ec, { ...good, sub: 'via-auth-data' });
    tokensSeen.push(token);
    const out = await identity.authenticator.authenticate(req(undefined, { authMethod: 'JWT', authData: Buffer.from(token) }));
    assert.ok(out.ok);
    assert.equal(out.identity.username, 'via-auth-data');
    assert.deepEqual(refusal(await identity.authenticator.authenticate(req(undefined, { authMethod: 'SCRAM-SHA-256', authData: Buffer.from(token) }))), [0x8c, 'bad_auth_method']);
    assert.deepEqual(refusal(await identity.authenticator.authenticate(req(undefined, { authMethod: 'JWT' }))), [0x86, 'no_token']);
  });

  it('refuses a missing token', async () => {
    assert.deepEqual(refusal(await auth(undefined)), [0x86, 'no_token']);
    assert.deepEqual(refusal(await auth('')), [0x86, 'no_token']);
  });

  it('requires the CONNECT username to equal the username claim (empty counts as none)', async () => {
    const token = await signToken(rsa, { ...good, sub: 'alice' });
    assert.deepEqual(refusal(await auth(token, { username: 'bob' })), [0x86, 'username_mismatch']);
    assert.equal(refusal(await auth(token, { username: '' })), 'ok');
    assert.equal(refusal(await auth(token, { username: 'alice' })), 'ok');
  });

  it('refuses re-authentication with a token for another subject', async () => {
    const token = await signToken(rsa, { ...good, sub: 'alice' });
    assert.deepEqual(refusal(await auth(token, { requireSubject: 'bob' })), [0x87, 'subject_changed']);
  });

  it('refuses each kind of bad token with its own reason', async () => {
    const other = await makeKey('k-rsa', 'RS256'); // same kid, different key
    const nowS = Math.floor(Date.now() / 1000);
    const cases: [string, string | Promise<string>, string][] = [
      ['expired beyond tolerance', signToken(rsa, { ...good, sub: 'a', expiresInS: -120 }), 'expired'],
      ['not yet valid', signToken(rsa, { ...good, sub: 'a', notBeforeInS: 600 }), 'not_yet_valid'],
      ['wrong issuer', signToken(rsa, { ...good, issuer: 'https://evil.example', sub: 'a' }), 'issuer'],
      ['wrong audience', signToken(rsa, { ...good, audience: 'someone-else', sub: 'a' }), 'audience'],
      ['no exp', signToken(rsa, { ...good, sub: 'a', expiresInS: null }), 'missing_exp'],
      ['signed by another key with the same kid', signToken(other, { ...good, sub: 'a' }), 'bad_signature'],
      ['unknown kid', signToken(other, { ...good, sub: 'a', kid: 'k-nobody' }), 'unknown_kid'],
      ['alg none', malicious.algNone({ sub: 'a', exp: nowS + 60 }), 'alg_not_allowed'],
      ['alg none with a signature', malicious.algNoneWithSignature({ sub: 'a', exp: nowS + 60 }), 'alg_not_allowed'],
      ['HS256 signed with the RSA public key', malicious.hs256WithPublicKey(rsa, { ...good, sub: 'a' }), 'alg_not_allowed'],
      ['unknown crit header', malicious.unknownCrit(rsa, { ...good, sub: 'a' }), 'crit_unsupported'],
      ['no username claim', signToken(rsa, { ...good }), 'bad_claims'],
      ['roles of the wrong type', signToken(rsa, { ...good, sub: 'a', claims: { roles: 5 } }), 'bad_claims'],
      ['acl claim of the wrong shape', signToken(rsa, { ...good, sub: 'a', claims: { acl: { publish: 'a/#' } } }), 'bad_claims'],
      ['kid naming an EC key on an RS256 token', signToken(rsa, { ...good, sub: 'a', kid: 'k-ec' }), 'alg_not_allowed'],
    ];
    for (const [name, token, reason] of cases) {
      assert.deepEqual(refusal(await auth(await token)), [0x86, reason], name);
    }
    const swapped = await malicious.swappedSignature(rsa, { ...good, sub: 'a' }, await signToken(rsa, { ...good, sub: 'b' }));
    assert.deepEqual(refusal(await auth(swapped)), [0x86, 'bad_signature']);
    for (const garbage of malicious.garbage) assert.deepEqual(refusal(await auth(garbage)), [0x86, 'malformed'], garbage);
    assert.deepEqual(refusal(await auth('x'.repeat(20_000))), [0x86, 'malformed']);
  });

  it('tolerates clock skew within jwtClockToleranceS', async () => {
    assert.equal(refusal(await auth(await signToken(rsa, { ...good, sub: 'a', expiresInS: -10 }))), 'ok');
    assert.equal(refusal(await auth(await signToken(rsa, { ...good, sub: 'a', notBeforeInS: 10 }))), 'ok');
  });

  it('refuses revoked subjects and jtis, also from the token cache', async () => {
    const token = await signToken(rsa, { ...good, sub: 'mallory', claims: { jti: 'j-mallory' } });
    assert.equal(refusal(await auth(token)), 'ok');
    await identity.revocations.revokeJti('j-mallory');
    assert.deepEqual(refusal(await auth(token)), [0x87, 'revoked']);
    await identity.revocations.unrevoke('jti', 'j-mallory');
    assert.equal(refusal(await auth(token)), 'ok');
    await identity.revocations.revokeSubject('mallory', { untilMs: Date.now() + 60_000 });
    assert.deepEqual(refusal(await auth(token)), [0x87, 'revoked']);
    assert.equal(identity.authenticator.isRevoked({ username: 'mallory', clientId: 'c', roles: [], authenticatedAtMs: 0 }), true);
  });

  it('counts outcomes by reason and never logs a token', async () => {
    assert.ok((await metricValue(metrics, 'authVerificationsTotal', { outcome: 'refused', reason: 'bad_signature' })) >= 2);
    assert.ok((await metricValue(metrics, 'authVerificationsTotal', { outcome: 'allowed' })) >= 3);
    const log = lines.join('');
    assert.match(log, /authentication refused/);
    for (const token of tokensSeen) {
      if (token.length < 20) continue;
      assert.ok(!log.includes(token), 'a token reached the log');
      const signature = token.split('.')[2] ?? '';
      if (signature.length > 16) assert.ok(!log.includes(signature), 'a token signature reached the log');
    }
  });
});

describe('jwt authentication with a shared secret', () => {
  it('accepts HS256 only with the configured secret and never with a JWKS key', async () => {
    const dir = await tempDir();
    const rsa = await makeKey('k-rsa');
    const secret = 'a-very-long-shared-secret-of-at-least-32-bytes';
    const identity = await createIdentity(identityConfig({ jwks: await dir.write('jwks.json', { keys: [rsa.jwk] }), jwtSecret: secret }), testMetrics(), captureLogger().logger);
    try {
      const ok = await identity.authenticator.authenticate(req(await signHmac(secret, { sub: 'hmac-user' })));
      assert.ok(ok.ok);
      assert.equal(ok.identity.username, 'hmac-user');
      const confused = await identity.authenticator.authenticate(req(await malicious.hs256WithPublicKey(rsa, { sub: 'a' })));
      assert.deepEqual(refusal(confused), [0x86, 'bad_signature']);
      const wrongSecret = await identity.authenticator.authenticate(req(await signHmac('another-secret-that-is-long-enough-too', { sub: 'a' })));
      assert.deepEqual(refusal(wrongSecret), [0x86, 'bad_signature']);
    } finally {
      await identity.close();
      await dir.remove();
    }
  });
});

describe('auth=none', () => {
  it('admits everyone synchronously with role anonymous, except enhanced auth', async () => {
    const identity = await createIdentity(identityConfig({ auth: 'none' }), testMetrics(), captureLogger().logger);
    try {
      const out = identity.authenticator.authenticate(req(undefined, { username: 'dev-1' }));
      assert.ok(!(out instanceof Promise));
      assert.ok(out.ok);
      assert.equal(out.identity.username, 'dev-1');
      assert.deepEqual(out.identity.roles, ['anonymous']);
      const anon = identity.authenticator.authenticate(req(undefined));
      assert.ok(!(anon instanceof Promise) && anon.ok && anon.identity.username === '');
      assert.deepEqual(refusal(identity.authenticator.authenticate(req(undefined, { authMethod: 'JWT' })) as AuthOutcome), [0x8c, 'bad_auth_method']);
      assert.equal(identity.authorizer.allowAll, true);
    } finally {
      await identity.close();
    }
  });
});

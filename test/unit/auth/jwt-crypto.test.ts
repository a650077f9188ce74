// Signature checks on node:crypto KeyObjects (jwt.ts verifyJws), one algorithm family at a
// time, the algorithm-confusion refusals, the claim rules (jwt-claims.test.ts has each), the worker's batch task, and tokens batched into few
// pool tasks (per event-loop turn, and while a thread is busy). Keys and tokens are real (jose and node:crypto sign).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import { keyObjectFitsAlgorithm, readProtectedHeader, verifyJws, type VerificationKey, type VerifyOptions } from '../../../src/auth/jwt.js';
import { createIdentity, type AuthOutcome, type AuthRequest } from '../../../src/auth/index.js';
import { authThreads } from '../../../src/auth/pool.js';
import { verifyTokens, type TokenPolicy } from '../../../src/auth/worker.js';
import { execFileSync } from 'node:child_process';
import { makeKey, signToken, tempDir } from '../../helpers/jwt.js';
import { captureLogger, identityConfig, metricValue, testMetrics } from './support.js';

const ALL = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'HS256', 'HS384', 'HS512'];
const nowS = () => Math.floor(Date.now() / 1000);
const options = (o: Partial<VerifyOptions> = {}): VerifyOptions => ({ algorithms: ALL, clockToleranceS: 0, nowMs: Date.now(), ...o });
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
const SECRET = 'a shared secret of reasonable length, 32+ bytes';

interface Signer {
  readonly alg: string;
  readonly key: VerificationKey;
  sign(claims: Record<string, unknown>, header?: Record<string, unknown>): Promise<string>;
}

let thumb = 0;
async function asymmetric(alg: string, crv?: string): Promise<Signer & { jwk: JWK; privateKey: KeyObject }> {
  const pair = await generateKeyPair(alg, { extractable: true, crv });
  const jwk = { ...(await exportJWK(pair.publicKey)), alg, use: 'sig' };
  const privateKey = createPrivateKey({ key: (await exportJWK(pair.privateKey)) as never, format: 'jwk' });
  return {
    alg,
    jwk,
    privateKey,
    key: { kind: 'jwk', jwk, cacheKey: `test-${thumb++}` },
    sign: (claims, header = {}) => new SignJWT(claims).setProtectedHeader({ alg, ...header }).sign(pair.privateKey),
  };
}

function hmac(alg: string): Signer {
  return {
    alg,
    key: { kind: 'secret', secret: SECRET },
    sign: (claims, header = {}) => new SignJWT(claims).setProtectedHeader({ alg, ...header }).sign(new TextEncoder().encode(SECRET)),
  };
}

const claims = () => ({ sub: 'dev-1', exp: nowS() + 600, roles: ['r'] });
const reason = (r: { ok: boolean; reason?: string }) => (r.ok ? 'ok' : r.reason);

/** The same token with one character of a part changed (first char of the part, kept base64url). */
function tamper(token: string, part: 0 | 1 | 2): string {
  const parts = token.split('.');
  const p = parts[part]!;
  const at = part === 2 ? 3 : p.length - 3;
  parts[part] = p.slice(0, at) + (p[at] === 'A' ? 'B' : 'A') + p.slice(at + 1);
  return parts.join('.');
}

describe('node:crypto verification, per algorithm family', () => {
  const families: [string, () => Promise<Signer>][] = [
    ['RS256', () => asymmetric('RS256')],
    ['RS384', () => asymmetric('RS384')],
    ['RS512', () => asymmetric('RS512')],
    ['PS256', () => asymmetric('PS256')],
    ['PS384', () => asymmetric('PS384')],
    ['PS512', () => asymmetric('PS512')],
    ['ES256', () => asymmetric('ES256')],
    ['ES384', () => asymmetric('ES384')],
    ['ES512', () => asymmetric('ES512')],
    ['EdDSA (Ed25519)', () => asymmetric('EdDSA', 'Ed25519')],
    ['HS256', async () => hmac('HS256')],
    ['HS384', async () => hmac('HS384')],
    ['HS512', async () => hmac('HS512')],
  ];
  for (const [name, make] of families) {
    it(`${name}: a good token verifies, a changed payload or signature does not`, async () => {
      const s = await make();
      const token = await s.sign(claims());
      const good = await verifyJws(token, s.alg, s.key, options());
      assert.equal(reason(good), 'ok');
      assert.equal(good.ok && good.claims.sub, 'dev-1');
      // a second time: from the cached KeyObject
      assert.equal(reason(await verifyJws(token, s.alg, s.key, options())), 'ok');
      assert.equal(reason(await verifyJws(tamper(token, 1), s.alg, s.key, options())), 'bad_signature');
      assert.equal(reason(await verifyJws(tamper(token, 2), s.alg, s.key, options())), 'bad_signature');
    });
  }

  it('ES256/384/512 signatures are JOSE raw r||s: a DER (ASN.1) signature of the same input is refused', async () => {
    for (const [alg, hash, bytes] of [['ES256', 'sha256', 64], ['ES384', 'sha384', 96], ['ES512', 'sha512', 132]] as const) {
      const s = await asymmetric(alg);
      const input = `${b64({ alg })}.${b64(claims())}`;
      const raw = cryptoSign(hash, Buffer.from(input), { key: s.privateKey, dsaEncoding: 'ieee-p1363' });
      assert.equal(raw.length, bytes);
      assert.equal(reason(await verifyJws(`${input}.${raw.toString('base64url')}`, alg, s.key, options())), 'ok', `${alg} raw`);
      const der = cryptoSign(hash, Buffer.from(input), { key: s.privateKey, dsaEncoding: 'der' });
      assert.equal(reason(await verifyJws(`${input}.${der.toString('base64url')}`, alg, s.key, options())), 'bad_signature', `${alg} DER`);
      assert.equal(reason(await verifyJws(`${input}.${raw.subarray(1).toString('base64url')}`, alg, s.key, options())), 'bad_signature', `${alg} short`);
    }
  });

  it('an HMAC secret changed under the same algorithm does not verify with the cached key of the old one', async () => {
    const token = await hmac('HS256').sign(claims());
    assert.equal(reason(await verifyJws(token, 'HS256', { kind: 'secret', secret: SECRET }, options())), 'ok');
    assert.equal(reason(await verifyJws(token, 'HS256', { kind: 'secret', secret: `${SECRET}!` }, options())), 'bad_signature');
  });
});

describe('the protected header is read only from a compact JWS', () => {
  it('three base64url parts, header and payload non-empty; anything else is malformed before any decoding', () => {
    const h = b64({ alg: 'RS256', kid: 'k' });
    const p = b64(claims());
    assert.deepEqual(readProtectedHeader(`${h}.${p}.sig_-0`), { ok: true, header: { alg: 'RS256', kid: 'k' } });
    assert.deepEqual(readProtectedHeader(`${h}.${p}.`), { ok: true, header: { alg: 'RS256', kid: 'k' } });
    for (const bad of [`${h}.${p}`, `${h}.${p}.s.x`, `${h}.${p}.s.x.y`, `.${p}.s`, `${h}..s`, `${h}.${p}.s=`, `${h}.${p}.s!`, `${h} .${p}.s`, `${h}.${p}.s\n`, '..', 'x'.repeat(17 * 1024)]) {
      assert.deepEqual(readProtectedHeader(bad), { ok: false, reason: 'malformed' }, JSON.stringify(bad.slice(0, 40)));
    }
    assert.deepEqual(readProtectedHeader(''), { ok: false, reason: 'no_token' });
  });
});

describe('algorithm confusion is refused', () => {
  it('an HS256 token "signed" with the RSA public key, offered against that key', async () => {
    const rsa = await asymmetric('RS256');
    const pem = createPrivateKey({ key: rsa.privateKey.export({ format: 'pem', type: 'pkcs8' }) }).export({ format: 'pem', type: 'pkcs8' });
    const forged = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(String(pem)));
    assert.equal(reason(await verifyJws(forged, 'HS256', rsa.key, options())), 'alg_not_allowed');
    // and the RSA key named as a secret for an RS token
    const real = await rsa.sign(claims());
    assert.equal(reason(await verifyJws(real, 'RS256', { kind: 'secret', secret: SECRET }, options())), 'alg_not_allowed');
  });

  it('the header alg must be the one the key was chosen for', async () => {
    const rsa = await asymmetric('RS256');
    const token = await rsa.sign(claims());
    // the main thread read RS256 and picked the key; a worker told PS256 refuses the RS256 header
    const unbound: VerificationKey = { kind: 'jwk', jwk: { ...rsa.jwk, alg: undefined }, cacheKey: 'unbound-rsa' };
    assert.equal(reason(await verifyJws(token, 'PS256', unbound, options())), 'alg_not_allowed');
    assert.equal(reason(await verifyJws(token, 'RS256', unbound, options())), 'ok');
  });

  it("a key's own alg, kty and curve bind it: RS key for PS, P-256 for ES384, Ed25519 for ES256, EC for EdDSA", async () => {
    const rs = await asymmetric('RS256');
    const psToken = await new SignJWT(claims()).setProtectedHeader({ alg: 'PS256' }).sign(createPrivateKey(rs.privateKey.export({ format: 'pem', type: 'pkcs8' })));
    assert.equal(reason(await verifyJws(psToken, 'PS256', rs.key, options())), 'alg_not_allowed', 'jwk alg RS256');

    const p256 = await asymmetric('ES256');
    const es384Header = `${b64({ alg: 'ES384' })}.${b64(claims())}`;
    const sig = cryptoSign('sha384', Buffer.from(es384Header), { key: p256.privateKey, dsaEncoding: 'ieee-p1363' });
    const p256Unbound: VerificationKey = { kind: 'jwk', jwk: { ...p256.jwk, alg: undefined }, cacheKey: 'unbound-p256' };
    assert.equal(reason(await verifyJws(`${es384Header}.${sig.toString('base64url')}`, 'ES384', p256Unbound, options())), 'alg_not_allowed');

    const ed = await asymmetric('EdDSA', 'Ed25519');
    const edUnbound: VerificationKey = { kind: 'jwk', jwk: { ...ed.jwk, alg: undefined }, cacheKey: 'unbound-ed' };
    assert.equal(reason(await verifyJws(await p256.sign(claims()), 'ES256', edUnbound, options())), 'alg_not_allowed');
    assert.equal(reason(await verifyJws(await ed.sign(claims()), 'EdDSA', p256Unbound, options())), 'alg_not_allowed');
  });

  it('RSA keys under 2048 bits, and algorithms outside the allow-list', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const jwk = { ...publicKey.export({ format: 'jwk' }), alg: 'RS256' } as JWK;
    const input = `${b64({ alg: 'RS256' })}.${b64(claims())}`;
    const token = `${input}.${cryptoSign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
    assert.equal(reason(await verifyJws(token, 'RS256', { kind: 'jwk', jwk, cacheKey: 'rsa-1024' }, options())), 'alg_not_allowed');

    const rs = await asymmetric('RS256');
    assert.equal(reason(await verifyJws(await rs.sign(claims()), 'RS256', rs.key, options({ algorithms: ['ES256'] }))), 'alg_not_allowed');
    const none = `${b64({ alg: 'none' })}.${b64(claims())}.`;
    assert.equal(reason(await verifyJws(none, 'none', rs.key, options())), 'alg_not_allowed');
  });

  it('keyObjectFitsAlgorithm: the KeyObject side of the guard', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey;
    const ed = generateKeyPairSync('ed25519').publicKey;
    assert.ok(keyObjectFitsAlgorithm(rsa, 'RS256') && keyObjectFitsAlgorithm(rsa, 'PS512'));
    assert.ok(!keyObjectFitsAlgorithm(rsa, 'ES256') && !keyObjectFitsAlgorithm(rsa, 'HS256') && !keyObjectFitsAlgorithm(rsa, 'EdDSA'));
    assert.ok(keyObjectFitsAlgorithm(ec, 'ES384') && !keyObjectFitsAlgorithm(ec, 'ES256') && !keyObjectFitsAlgorithm(ec, 'ES512'));
    assert.ok(keyObjectFitsAlgorithm(ed, 'EdDSA') && !keyObjectFitsAlgorithm(ed, 'ES256'));
    assert.ok(!keyObjectFitsAlgorithm(ed, 'none'));
  });
});

describe('the claim rules decide the claims', () => {
  it('exp (required), nbf, iss, aud and the clock tolerance', async () => {
    const s = await asymmetric('ES256');
    const check = async (c: Record<string, unknown>, o: Partial<VerifyOptions> = {}) => reason(await verifyJws(await s.sign(c), 'ES256', s.key, options(o)));
    assert.equal(await check({ sub: 'a', exp: nowS() - 10 }), 'expired');
    assert.equal(await check({ sub: 'a', exp: nowS() - 10 }, { clockToleranceS: 30 }), 'ok');
    assert.equal(await check({ sub: 'a' }), 'missing_exp');
    assert.equal(await check({ sub: 'a', exp: nowS() + 60, nbf: nowS() + 60 }), 'not_yet_valid');
    assert.equal(await check({ sub: 'a', exp: nowS() + 60, iss: 'other' }, { issuer: 'https://idp' }), 'issuer');
    assert.equal(await check({ sub: 'a', exp: nowS() + 60, iss: 'https://idp', aud: 'x' }, { issuer: 'https://idp', audience: 'vigil' }), 'audience');
    assert.equal(await check({ sub: 'a', exp: nowS() + 60, iss: 'https://idp', aud: ['x', 'vigil'] }, { issuer: 'https://idp', audience: 'vigil' }), 'ok');
    assert.equal(await check({ sub: 'a', exp: nowS() + 60, iat: 'then' }), 'bad_claims');
  });

  it('a critical header extension is refused, also when the worker is handed the token directly', async () => {
    const s = await asymmetric('RS256');
    const input = `${b64({ alg: 'RS256', crit: ['x-ext'], 'x-ext': 1 })}.${b64(claims())}`;
    const token = `${input}.${cryptoSign('sha256', Buffer.from(input), s.privateKey).toString('base64url')}`;
    assert.equal(reason(await verifyJws(token, 'RS256', s.key, options())), 'crit_unsupported');
  });
});

describe('the worker task verifyTokens', () => {
  const policy: TokenPolicy = { algorithms: ['RS256', 'ES256'], clockToleranceS: 0, usernameClaim: 'sub', rolesClaim: 'roles' };
  const item = (token: string, keyIndex = 0, policyIndex = 0) => ({ token, alg: 'RS256', keyIndex, policyIndex, nowMs: Date.now(), submittedAtMs: Date.now() });
  const outcome = (o: { ok: boolean; reason?: string; fields?: { username: string } }) => (o.ok ? o.fields!.username : o.reason);

  it('returns identity fields, not claims; a claim set without the username claim is bad_claims', async () => {
    const rs = await asymmetric('RS256');
    const [good, anonymous, wrongRoles] = await verifyTokens({
      keys: [rs.key],
      policies: [policy],
      items: [item(await rs.sign({ ...claims(), email: 'x@y' })), item(await rs.sign({ exp: nowS() + 60 })), item(await rs.sign({ sub: 'a', exp: nowS() + 60, roles: 3 }))],
    });
    assert.ok(good!.ok);
    assert.deepEqual({ ...good.fields }, { username: 'dev-1', roles: ['r'], tokenAcl: undefined, jti: undefined, expiresAtMs: claims().exp * 1000 });
    assert.equal(outcome(anonymous!), 'bad_claims');
    assert.equal(outcome(wrongRoles!), 'bad_claims');
  });

  it('an item naming no key or no policy is internal_error, never verified; the others in the batch are', async () => {
    const rs = await asymmetric('RS256');
    const token = await rs.sign(claims());
    const out = await verifyTokens({ keys: [rs.key], policies: [policy], items: [item(token, 1), item(token, 0, 1), item(token)] });
    assert.deepEqual(out.map(outcome), ['internal_error', 'internal_error', 'dev-1']);
  });

  it('the KeyObject is imported once per thumbprint and algorithm and kept across batches', async () => {
    const rs = await asymmetric('RS256');
    const other = await asymmetric('RS256');
    const token = await rs.sign(claims());
    assert.deepEqual((await verifyTokens({ keys: [rs.key], policies: [policy], items: [item(token)] })).map(outcome), ['dev-1']);
    // a later batch sending another JWK under the same thumbprint still verifies with the key imported first
    const sameThumbprint: VerificationKey = { kind: 'jwk', jwk: other.jwk, cacheKey: rs.key.kind === 'jwk' ? rs.key.cacheKey : '' };
    assert.deepEqual((await verifyTokens({ keys: [sameThumbprint], policies: [policy], items: [item(token)] })).map(outcome), ['dev-1']);
    // under its own thumbprint the other key is imported, and the token does not verify with it
    assert.deepEqual((await verifyTokens({ keys: [other.key], policies: [policy], items: [item(token)] })).map(outcome), ['bad_signature']);
  });

  it('the allow-list of the policy applies to every token of a key', async () => {
    const es = await asymmetric('ES256');
    const token = await es.sign(claims());
    const out = await verifyTokens({ keys: [es.key], policies: [{ ...policy, algorithms: ['RS256'] }], items: [{ ...item(token), alg: 'ES256' }] });
    assert.deepEqual(out.map(outcome), ['alg_not_allowed']);
  });
});

describe('tokens of one event-loop turn share pool tasks', () => {
  it('40 distinct tokens in one turn: every result right and its own, in at most a few tasks', async () => {
    const dir = await tempDir();
    const key = await makeKey('k1', 'ES256');
    const metrics = testMetrics();
    const identity = await createIdentity(identityConfig({ jwks: await dir.write('jwks.json', { keys: [key.jwk] }), authWorkers: 2 }), metrics, captureLogger().logger);
    try {
      const subs = Array.from({ length: 40 }, (_, i) => `dev-${i}`);
      const tokens = await Promise.all(subs.map((sub, i) => signToken(key, { sub, expiresInS: i === 7 ? -600 : 600 })));
      tokens[11] = tamper(tokens[11]!, 1);
      const req = (t: string): AuthRequest => ({ clientId: 'c', password: Buffer.from(t), protocolVersion: 4, remoteAddress: '127.0.0.1' });
      const outcomes = (await Promise.all(tokens.map((t) => identity.authenticator.authenticate(req(t))))) as AuthOutcome[];
      outcomes.forEach((o, i) => {
        if (i === 7) assert.deepEqual(o.ok ? 'ok' : o.reason, 'expired');
        else if (i === 11) assert.deepEqual(o.ok ? 'ok' : o.reason, 'bad_signature');
        else assert.equal(o.ok && o.identity.username, subs[i], `token ${i}`);
      });
      assert.equal(identity.pool.tasksSubmitted('verifyToken'), 40, 'every token verified');
      const tasks = await metricValue(metrics, 'authPoolTasksTotal', { task: 'verifyTokens' });
      assert.ok(tasks >= 2 && tasks <= 4, `40 tokens of one turn in 2-4 tasks over 2 threads, got ${tasks}`);
    } finally {
      await identity.close();
      await dir.remove();
    }
  });

  it('tokens of two keys in one batch: each verified with its own key, each key sent once', async () => {
    const dir = await tempDir();
    const k1 = await makeKey('k1', 'RS256');
    const k2 = await makeKey('k2', 'ES256');
    const metrics = testMetrics();
    const identity = await createIdentity(identityConfig({ jwks: await dir.write('jwks.json', { keys: [k1.jwk, k2.jwk] }), authWorkers: 1 }), metrics, captureLogger().logger);
    try {
      const subs = Array.from({ length: 20 }, (_, i) => `dev-${i}`);
      const tokens = await Promise.all(subs.map((sub, i) => signToken(i % 2 ? k2 : k1, { sub, expiresInS: 600 })));
      // a token naming k1 but signed by k2: verified with k1 only, so refused
      const crossed = await signToken(k2, { sub: 'crossed', expiresInS: 600, kid: 'k1' });
      const req = (t: string): AuthRequest => ({ clientId: 'c', password: Buffer.from(t), protocolVersion: 4, remoteAddress: '127.0.0.1' });
      const outcomes = (await Promise.all([...tokens, crossed].map((t) => identity.authenticator.authenticate(req(t))))) as AuthOutcome[];
      outcomes.slice(0, 20).forEach((o, i) => assert.equal(o.ok && o.identity.username, subs[i], `token ${i}`));
      const last = outcomes[20]!;
      assert.ok(!last.ok && (last.reason === 'alg_not_allowed' || last.reason === 'bad_signature'), `crossed: ${last.ok ? 'ok' : last.reason}`);
    } finally {
      await identity.close();
      await dir.remove();
    }
  });

  it('tokens arriving one per turn while the thread has a batch wait and leave together (a storm is not one task per turn)', async () => {
    const dir = await tempDir();
    const key = await makeKey('k1', 'RS256');
    const metrics = testMetrics();
    const identity = await createIdentity(identityConfig({ jwks: await dir.write('jwks.json', { keys: [key.jwk] }), authWorkers: 1 }), metrics, captureLogger().logger);
    try {
      const subs = Array.from({ length: 148 }, (_, i) => `dev-${i}`);
      const tokens = await Promise.all(subs.map((sub) => signToken(key, { sub, expiresInS: 600 })));
      const req = (t: string): AuthRequest => ({ clientId: 'c', password: Buffer.from(t), protocolVersion: 4, remoteAddress: '127.0.0.1' });
      // 128 in one turn keep the one thread busy for a few ms (two batches of 64), then one per turn
      const outcomes: Promise<AuthOutcome>[] = tokens.slice(0, 128).map(async (t) => identity.authenticator.authenticate(req(t)));
      for (const t of tokens.slice(128)) {
        await new Promise((r) => setImmediate(r));
        outcomes.push(Promise.resolve(identity.authenticator.authenticate(req(t))));
      }
      const done = await Promise.all(outcomes);
      done.forEach((o, i) => assert.equal(o.ok && o.identity.username, subs[i], `token ${i}`));
      assert.equal(identity.pool.tasksSubmitted('verifyToken'), 148, 'every token verified');
      // one task per turn would be 2 + 20
      const tasks = await metricValue(metrics, 'authPoolTasksTotal', { task: 'verifyTokens' });
      assert.ok(tasks >= 3 && tasks <= 8, `128 tokens, then 20 one per turn, on one thread: 3-8 tasks, got ${tasks}`);
    } finally {
      await identity.close();
      await dir.remove();
    }
  });
});

describe('auth threads', () => {
  it('VIGIL_AUTH_WORKERS 0: one per CPU the process may run on, at most 2; a set value is kept', () => {
    assert.equal(authThreads(0, 1), 1);
    assert.equal(authThreads(0, 2), 2);
    assert.equal(authThreads(0, 16), 2);
    assert.equal(authThreads(3, 1), 3);
    assert.equal(authThreads(1, 16), 1);
  });

  it('follows the affinity mask: a process pinned to one CPU gets one thread', () => {
    const pool = new URL('../../../src/auth/pool.js', import.meta.url).href;
    const pinned = execFileSync('taskset', ['-c', '0', process.execPath, '--input-type=module', '-e', `import { authThreads } from '${pool}'; console.log(authThreads(0))`], { encoding: 'utf8' });
    assert.equal(pinned.trim(), '1');
  });
});

// The registered-claim rules of jwt.ts (checkClaims, decodeClaimsSet), one rule at a time,
// with the reasons jose's errors used to map to; then the same rules end to end through a
// signed token (verifyJws), and the header memo (readProtectedHeader) returning each
// header's own result.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { checkClaims, decodeClaimsSet, readProtectedHeader, verifyJws, type ClaimRules } from '../../../src/auth/jwt.js';

const NOW_MS = 1_800_000_000_500; // .5 s into a second: "now" is the whole second, as jose takes it
const NOW = 1_800_000_000;
const rules = (r: Partial<ClaimRules> = {}): ClaimRules => ({ clockToleranceS: 0, ...r });
const check = (claims: Record<string, unknown>, r: Partial<ClaimRules> = {}) => checkClaims(claims, rules(r), NOW_MS) ?? 'ok';
const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

describe('checkClaims: exp', () => {
  it('required: missing is missing_exp, with or without other claims', () => {
    assert.equal(check({}), 'missing_exp');
    assert.equal(check({ sub: 'a', nbf: NOW - 10, iat: NOW }), 'missing_exp');
  });
  it('after now is valid; at now or before is expired (exp <= now - tolerance)', () => {
    assert.equal(check({ exp: NOW + 1 }), 'ok');
    assert.equal(check({ exp: NOW }), 'expired');
    assert.equal(check({ exp: NOW - 3600 }), 'expired');
  });
  it('the clock tolerance extends exp, to the second', () => {
    assert.equal(check({ exp: NOW - 29 }, { clockToleranceS: 30 }), 'ok');
    assert.equal(check({ exp: NOW - 30 }, { clockToleranceS: 30 }), 'expired');
  });
  it('not a number is expired (as jose), null included; a numeric string is not a number', () => {
    for (const exp of ['9999999999', null, true, [NOW + 60], { v: NOW + 60 }]) assert.equal(check({ exp }), 'expired', JSON.stringify(exp));
  });
  it('huge values: finite ones are numbers like any other; Infinity (JSON 1e999) is refused', () => {
    assert.equal(check({ exp: 1e300 }), 'ok');
    assert.equal(check({ exp: Number.MAX_SAFE_INTEGER }), 'ok');
    assert.equal(check(decodeClaimsSet(b64('{"exp":1e999}'))!), 'bad_claims');
    assert.equal(check(decodeClaimsSet(b64('{"exp":-1e999}'))!), 'bad_claims');
    assert.equal(check({ exp: Number.NaN }), 'bad_claims');
  });
});

describe('checkClaims: nbf and iat', () => {
  it('nbf after now (plus tolerance) is not_yet_valid; at now, or within the tolerance, valid', () => {
    assert.equal(check({ exp: NOW + 600, nbf: NOW }), 'ok');
    assert.equal(check({ exp: NOW + 600, nbf: NOW + 1 }), 'not_yet_valid');
    assert.equal(check({ exp: NOW + 600, nbf: NOW + 30 }, { clockToleranceS: 30 }), 'ok');
    assert.equal(check({ exp: NOW + 600, nbf: NOW + 31 }, { clockToleranceS: 30 }), 'not_yet_valid');
  });
  it('nbf not a number is not_yet_valid (as jose); not finite is bad_claims', () => {
    assert.equal(check({ exp: NOW + 600, nbf: 'now' }), 'not_yet_valid');
    assert.equal(check({ exp: NOW + 600, nbf: null }), 'not_yet_valid');
    assert.equal(check(decodeClaimsSet(b64(`{"exp":${NOW + 600},"nbf":-1e999}`))!), 'bad_claims');
  });
  it('iat, when present, must be a finite number (bad_claims otherwise); its value is not checked', () => {
    assert.equal(check({ exp: NOW + 600, iat: NOW + 86400 }), 'ok');
    assert.equal(check({ exp: NOW + 600, iat: 'then' }), 'bad_claims');
    assert.equal(check({ exp: NOW + 600, iat: null }), 'bad_claims');
    assert.equal(check(decodeClaimsSet(b64(`{"exp":${NOW + 600},"iat":1e999}`))!), 'bad_claims');
  });
  it('an nbf failure comes before an exp failure (jose order)', () => {
    assert.equal(check({ exp: NOW - 10, nbf: NOW + 10 }), 'not_yet_valid');
  });
});

describe('checkClaims: iss and aud', () => {
  const valid = { exp: NOW + 600 };
  it('without a configured issuer or audience, iss and aud are not checked', () => {
    assert.equal(check({ ...valid, iss: 42, aud: { any: 'thing' } }), 'ok');
    assert.equal(check({ ...valid }, { issuer: '', audience: '' }), 'ok', 'empty settings mean none');
  });
  it('iss must equal the issuer exactly; missing is issuer', () => {
    const r = { issuer: 'https://idp.example' };
    assert.equal(check({ ...valid, iss: 'https://idp.example' }, r), 'ok');
    assert.equal(check({ ...valid, iss: 'https://idp.example/' }, r), 'issuer');
    assert.equal(check({ ...valid, iss: 'https://IDP.example' }, r), 'issuer');
    assert.equal(check({ ...valid, iss: ['https://idp.example'] }, r), 'issuer');
    assert.equal(check({ ...valid }, r), 'issuer');
  });
  it('aud a string: equal to the audience; an array: the audience among its members; missing or another type: audience', () => {
    const r = { audience: 'vigil' };
    assert.equal(check({ ...valid, aud: 'vigil' }, r), 'ok');
    assert.equal(check({ ...valid, aud: 'vigil-2' }, r), 'audience');
    assert.equal(check({ ...valid, aud: ['other', 'vigil'] }, r), 'ok');
    assert.equal(check({ ...valid, aud: ['other', 'vigil2'] }, r), 'audience');
    assert.equal(check({ ...valid, aud: [] }, r), 'audience');
    assert.equal(check({ ...valid, aud: { vigil: true } }, r), 'audience');
    assert.equal(check({ ...valid, aud: null }, r), 'audience');
    assert.equal(check({ ...valid }, r), 'audience');
  });
  it('presence first (iss, aud, exp), then iss and aud values, then the times (jose order)', () => {
    assert.equal(check({ iss: 'x' }, { issuer: 'y' }), 'missing_exp');
    assert.equal(check({ iss: 'x', exp: NOW - 10 }, { issuer: 'y' }), 'issuer');
    assert.equal(check({ iss: 'y', aud: 'x', exp: NOW - 10 }, { issuer: 'y', audience: 'z' }), 'audience');
    assert.equal(check({}, { issuer: 'y', audience: 'z' }), 'issuer');
    assert.equal(check({ iss: 'y' }, { issuer: 'y', audience: 'z' }), 'audience');
    assert.equal(check({ iss: 'y', aud: 'z' }, { issuer: 'y', audience: 'z' }), 'missing_exp');
  });
  it('a claim inherited from Object.prototype does not count as present', () => {
    assert.equal(check(Object.create({ exp: NOW + 600 }) as Record<string, unknown>), 'missing_exp');
  });
});

describe('decodeClaimsSet: the payload is a UTF-8 JSON object', () => {
  it('an object decodes; arrays, strings, numbers, null, bad JSON and bad UTF-8 do not', () => {
    assert.deepEqual(decodeClaimsSet(b64({ sub: 'ä', exp: 1 })), { sub: 'ä', exp: 1 });
    for (const bad of ['[1]', '"x"', '5', 'null', 'true', '{"a":', '', ' ']) assert.equal(decodeClaimsSet(b64(bad)), undefined, bad);
    const badUtf8 = Buffer.concat([Buffer.from('{"sub":"'), Buffer.from([0xc3, 0x28]), Buffer.from('","exp":1}')]).toString('base64url');
    assert.equal(decodeClaimsSet(badUtf8), undefined);
  });
  it('a payload as deep or as long as a 16 KiB token allows decodes without throwing', () => {
    const deep = decodeClaimsSet(b64(`{"x":${'['.repeat(6000)}${']'.repeat(6000)},"exp":${NOW + 60}}`));
    assert.equal(deep && check(deep), 'ok');
    const wide = decodeClaimsSet(b64(JSON.stringify({ exp: NOW + 60, aud: Array.from({ length: 1500 }, (_, i) => `a${i}`) })));
    assert.equal(wide && check(wide, { audience: 'a1499' }), 'ok');
    assert.equal(decodeClaimsSet(b64(`{"exp":${'9'.repeat(400)}}`)) && check(decodeClaimsSet(b64(`{"exp":${'9'.repeat(400)}}`))!), 'bad_claims', 'a 400-digit exp is Infinity');
  });
  it('__proto__ in the payload is an own property, not a prototype', () => {
    const claims = decodeClaimsSet(b64('{"__proto__":{"exp":1},"sub":"a"}'))!;
    assert.equal(check(claims), 'missing_exp');
  });
});

describe('the claim rules on a signed token (verifyJws)', () => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...publicKey.export({ format: 'jwk' }), alg: 'RS256' } as const;
  const key = { kind: 'jwk', jwk, cacheKey: 'claims-rs256' } as const;
  const signed = (payload: string) => {
    const input = `${b64({ alg: 'RS256' })}.${b64(payload)}`;
    return `${input}.${sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
  };
  const verify = async (payload: string, r: Partial<ClaimRules> = {}) => {
    const v = await verifyJws(signed(payload), 'RS256', key, { algorithms: ['RS256'], clockToleranceS: 0, nowMs: NOW_MS, ...r });
    return v.ok ? 'ok' : v.reason;
  };
  it('each rule refuses a token with a valid signature', async () => {
    assert.equal(await verify(`{"sub":"a","exp":${NOW + 60}}`), 'ok');
    assert.equal(await verify(`{"sub":"a","exp":${NOW - 60}}`), 'expired');
    assert.equal(await verify(`{"sub":"a","exp":${NOW + 60},"nbf":${NOW + 60}}`), 'not_yet_valid');
    assert.equal(await verify(`{"sub":"a","exp":${NOW + 60},"iss":"x"}`, { issuer: 'y' }), 'issuer');
    assert.equal(await verify(`{"sub":"a","exp":${NOW + 60},"aud":["x"]}`, { audience: 'y' }), 'audience');
    assert.equal(await verify('{"sub":"a"}'), 'missing_exp');
    assert.equal(await verify('{"sub":"a","exp":"soon"}'), 'expired');
    assert.equal(await verify('{"sub":"a","exp":1e999}'), 'bad_claims');
    assert.equal(await verify('["not","an","object"]'), 'malformed');
  });
});

describe('readProtectedHeader memo', () => {
  it('each header segment gets its own result, also after many distinct headers and on repeat', () => {
    const p = b64({ exp: 1 });
    const results = new Map<string, unknown>();
    for (let i = 0; i < 200; i++) {
      const h = i % 3 === 0 ? b64({ alg: 'RS256', kid: `k${i}`, crit: ['x'] }) : b64({ alg: i % 2 ? 'ES256' : 'RS256', kid: `k${i}` });
      const r = readProtectedHeader(`${h}.${p}.sig`);
      results.set(h, r);
      if (i % 3 === 0) assert.deepEqual(r, { ok: false, reason: 'crit_unsupported' });
      else assert.deepEqual(r, { ok: true, header: { alg: i % 2 ? 'ES256' : 'RS256', kid: `k${i}` } });
    }
    for (const [h, r] of results) assert.deepEqual(readProtectedHeader(`${h}.${p}.sig`), r);
  });
  it('a memoised header is still refused inside a malformed token, and results cannot be changed by a caller', () => {
    const h = b64({ alg: 'RS256', kid: 'm' });
    const good = readProtectedHeader(`${h}.${b64({ exp: 1 })}.s`);
    assert.ok(good.ok);
    assert.deepEqual(readProtectedHeader(`${h}.${b64({ exp: 1 })}.s.x`), { ok: false, reason: 'malformed' });
    assert.deepEqual(readProtectedHeader(`${h}..s`), { ok: false, reason: 'malformed' });
    assert.throws(() => {
      (good.header as { alg: string }).alg = 'none';
    }, TypeError);
    assert.equal(readProtectedHeader(`${h}.${b64({ exp: 2 })}.s`).ok && readProtectedHeader(`${h}.${b64({ exp: 2 })}.s`), good);
  });
});

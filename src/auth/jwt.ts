// JWT pieces that need no key set and no pool: reading the protected header (so obviously bad
// tokens never reach a worker), the algorithm rules, mapping jose errors to reason strings and
// turning verified claims into identity fields. `verifyJws` is what the worker runs.
//
// The signature is checked with node:crypto on a KeyObject cached per key and algorithm:
// jose's WebCrypto path measured 98 µs per RS256 verify against 31 µs for crypto.verify, and
// it hops to libuv's thread pool and back for every token. jose still imports the keys (with
// its checks that a JWK fits the algorithm). The registered claims (exp, nbf, iat, iss, aud,
// clock tolerance) are checked by checkClaims below, jose's rules in jose's order: jose's
// UnsecuredJWT.decode cost ~10 µs a token in a storm (a second header, a second base64 pass,
// option parsing), a tenth of the auth thread's time per CONNECT.
import { isUtf8 } from 'node:buffer';
import { createSecretKey, KeyObject, timingSafeEqual, createHmac, verify as cryptoVerify, constants as cryptoConstants } from 'node:crypto';
import { errors, importJWK, type JWK, type JWTPayload } from 'jose';
import { parseTokenAcl } from './acl.js';
import type { AuthFailureReason } from './reasons.js';
import type { TokenAcl } from './types.js';

/** Larger tokens are refused before hashing or parsing: no IdP issues them, attackers do. */
export const MAX_TOKEN_LENGTH = 16 * 1024;

export const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;
export const HMAC_ALGORITHMS = ['HS256', 'HS384', 'HS512'] as const;

export function isHmac(alg: string): boolean {
  return (HMAC_ALGORITHMS as readonly string[]).includes(alg);
}

/**
 * The algorithms actually accepted. HS* needs a shared secret: listed without one it is
 * dropped; a configured secret with no HS* listed enables all three (the operator clearly
 * wants HMAC tokens). `none` is never accepted — config validation refuses it too.
 */
export function effectiveAlgorithms(configured: readonly string[], hasSecret: boolean): string[] {
  const known = new Set<string>([...ASYMMETRIC_ALGORITHMS, ...HMAC_ALGORITHMS]);
  const out = configured.filter((a) => known.has(a) && (hasSecret || !isHmac(a)));
  if (hasSecret && !out.some(isHmac)) out.push(...HMAC_ALGORITHMS);
  return [...new Set(out)];
}

export interface ProtectedHeader {
  readonly alg: string;
  readonly kid?: string;
  readonly crit?: readonly unknown[];
}

export type HeaderResult = { readonly ok: true; readonly header: ProtectedHeader } | { readonly ok: false; readonly reason: AuthFailureReason };

/** A compact JWS: header and payload non-empty, base64url only, exactly three parts. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/**
 * Parsed headers by header segment. An issuer signs every token with the same header (alg,
 * typ, kid), so the header of a storm's tokens is decoded once instead of once per CONNECT on
 * each thread (base64 + JSON.parse + checks, ~2-4 µs). The result depends on the segment alone;
 * each thread has its own memo, so the worker still reads every header itself.
 */
const headerMemo = new Map<string, HeaderResult>();
const HEADER_MEMO_MAX = 64;
/** Longer header segments are parsed every time, so the memo holds at most 64 × 512 bytes of them. */
const HEADER_MEMO_SEGMENT_MAX = 512;

/** Reads the protected header of a compact JWS without trusting anything in it. */
export function readProtectedHeader(token: string): HeaderResult {
  if (token.length === 0) return NO_TOKEN;
  if (token.length > MAX_TOKEN_LENGTH) return MALFORMED;
  // One pass, no split: this runs for every CONNECT on the main thread. Five parts is a JWE:
  // encrypted tokens are not accepted.
  if (!COMPACT_JWS.test(token)) return MALFORMED;
  const segment = token.slice(0, token.indexOf('.'));
  const known = headerMemo.get(segment);
  if (known) return known;
  const result = parseHeaderSegment(segment);
  if (segment.length <= HEADER_MEMO_SEGMENT_MAX) {
    if (headerMemo.size >= HEADER_MEMO_MAX) headerMemo.clear();
    headerMemo.set(segment, result);
  }
  return result;
}

const NO_TOKEN: HeaderResult = Object.freeze({ ok: false, reason: 'no_token' });
const MALFORMED: HeaderResult = Object.freeze({ ok: false, reason: 'malformed' });
const CRIT_UNSUPPORTED: HeaderResult = Object.freeze({ ok: false, reason: 'crit_unsupported' });

/** A header result, frozen: the memo hands the same object to every caller. */
function parseHeaderSegment(segment: string): HeaderResult {
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    return MALFORMED;
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) return MALFORMED;
  const h = header as Record<string, unknown>;
  if (typeof h.alg !== 'string') return MALFORMED;
  if (h.kid !== undefined && typeof h.kid !== 'string') return MALFORMED;
  // RFC 7515 §4.1.11: a recipient must refuse a token whose crit names an extension it does
  // not understand. Vigil understands none (b64:false tokens are refused with it).
  if (h.crit !== undefined) return CRIT_UNSUPPORTED;
  return Object.freeze({ ok: true, header: Object.freeze({ alg: h.alg, kid: h.kid as string | undefined }) });
}

/**
 * Whether a JWK may verify a token with `alg`. This is the algorithm-confusion guard on the
 * key side: an RSA key only verifies RS or PS, an EC key only the ES of its curve, an OKP key
 * only EdDSA, and a key that declares its own alg only that alg. Symmetric JWKs are never
 * loaded from a key set at all (see jwks.ts).
 */
export function keyFitsAlgorithm(jwk: JWK, alg: string): boolean {
  if (jwk.alg !== undefined && jwk.alg !== alg) return false;
  if (jwk.use !== undefined && jwk.use !== 'sig') return false;
  switch (jwk.kty) {
    case 'RSA':
      return /^(RS|PS)(256|384|512)$/.test(alg);
    case 'EC':
      return (alg === 'ES256' && jwk.crv === 'P-256') || (alg === 'ES384' && jwk.crv === 'P-384') || (alg === 'ES512' && jwk.crv === 'P-521');
    case 'OKP':
      return alg === 'EdDSA' && (jwk.crv === 'Ed25519' || jwk.crv === 'Ed448');
    default:
      return false;
  }
}

/** Maps an error of a JWK import (jose) to a reason; anything unrecognised is `malformed` (never thrown further). */
function reasonForImportError(err: unknown): AuthFailureReason {
  if (err instanceof errors.JOSENotSupported) return 'alg_not_allowed';
  // Importing a JWK for an alg it does not fit.
  if (err instanceof TypeError || err instanceof errors.JWKInvalid) return 'alg_not_allowed';
  return 'malformed';
}

export type VerificationKey =
  /** Public key from the key set; `cacheKey` (thumbprint) lets the worker reuse the import. */
  | { readonly kind: 'jwk'; readonly jwk: JWK; readonly cacheKey: string }
  | { readonly kind: 'secret'; readonly secret: string };

/** The registered-claim rules of the deployment (VIGIL_JWT_ISSUER, _AUDIENCE, _CLOCK_TOLERANCE_S). */
export interface ClaimRules {
  readonly issuer?: string;
  readonly audience?: string;
  readonly clockToleranceS: number;
}

export interface VerifyOptions extends ClaimRules {
  readonly algorithms: readonly string[];
  readonly nowMs: number;
}

export type VerifyResult = { readonly ok: true; readonly claims: JWTPayload } | { readonly ok: false; readonly reason: AuthFailureReason };

const importedKeys = new Map<string, KeyObject>();
const MAX_IMPORTED_KEYS = 256;

async function resolveKey(key: VerificationKey, alg: string): Promise<KeyObject> {
  // A key is checked against one algorithm at import (RSASSA-PKCS1 vs RSA-PSS), hence alg in the cache key.
  const cacheKey = key.kind === 'secret' ? `secret:${alg}` : `${key.cacheKey}:${alg}`;
  const cached = importedKeys.get(cacheKey);
  if (cached && (key.kind !== 'secret' || secretOf.get(cached) === key.secret)) return cached;
  let imported: KeyObject;
  if (key.kind === 'secret') {
    imported = createSecretKey(Buffer.from(key.secret, 'utf8'));
    secretOf.set(imported, key.secret);
  } else {
    imported = KeyObject.from(await importJWK(key.jwk, alg, { extractable: false }) as CryptoKey);
  }
  if (importedKeys.size >= MAX_IMPORTED_KEYS) importedKeys.clear();
  importedKeys.set(cacheKey, imported);
  return imported;
}
/** The secret a cached HMAC key was made from: a changed secret must not verify with the old one. */
const secretOf = new WeakMap<KeyObject, string>();

const EC_CURVE: Record<string, { curve: string; signatureBytes: number; hash: string }> = {
  ES256: { curve: 'prime256v1', signatureBytes: 64, hash: 'sha256' },
  ES384: { curve: 'secp384r1', signatureBytes: 96, hash: 'sha384' },
  ES512: { curve: 'secp521r1', signatureBytes: 132, hash: 'sha512' },
};
const HASH_OF: Record<string, string> = { '256': 'sha256', '384': 'sha384', '512': 'sha512' };

/**
 * The algorithm-confusion guard on the imported key, whatever the JWK said: an RSA key of at
 * least 2048 bits for RS/PS, an EC key on the algorithm's curve for ES, an Ed25519/Ed448 key
 * for EdDSA, a secret only for HS.
 */
export function keyObjectFitsAlgorithm(key: KeyObject, alg: string): boolean {
  if (isHmac(alg)) return key.type === 'secret';
  if (key.type !== 'public') return false;
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  if (/^RS(256|384|512)$/.test(alg)) return type === 'rsa' && (details.modulusLength ?? 0) >= 2048;
  if (/^PS(256|384|512)$/.test(alg)) return (type === 'rsa' || type === 'rsa-pss') && (details.modulusLength ?? 0) >= 2048;
  const ec = EC_CURVE[alg];
  if (ec) return type === 'ec' && details.namedCurve === ec.curve;
  if (alg === 'EdDSA') return type === 'ed25519' || type === 'ed448';
  return false;
}

/** The JWS signature check for one algorithm (RFC 7518 §3); ES signatures are JOSE's raw r||s. */
export function signatureValid(alg: string, key: KeyObject, signingInput: Buffer, signature: Buffer): boolean {
  const bits = alg.slice(2);
  switch (alg.slice(0, 2)) {
    case 'HS': {
      const mac = createHmac(HASH_OF[bits]!, key).update(signingInput).digest();
      return mac.length === signature.length && timingSafeEqual(mac, signature);
    }
    case 'RS':
      return cryptoVerify(HASH_OF[bits]!, signingInput, key, signature);
    case 'PS':
      return cryptoVerify(HASH_OF[bits]!, signingInput, { key, padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: cryptoConstants.RSA_PSS_SALTLEN_DIGEST }, signature);
    case 'ES': {
      const ec = EC_CURVE[alg]!;
      return signature.length === ec.signatureBytes && cryptoVerify(ec.hash, signingInput, { key, dsaEncoding: 'ieee-p1363' }, signature);
    }
    case 'Ed':
      return cryptoVerify(null, signingInput, key, signature);
    default:
      return false;
  }
}

/** A KeyObject that may verify tokens of one algorithm, or why not. */
export type UsableKey = { readonly ok: true; readonly key: KeyObject } | { readonly ok: false; readonly reason: AuthFailureReason };

/**
 * The key-side checks for one (key, alg) pair, then the cached import: the allow-list, an HS
 * key only for HS and never an HS alg with a public key, the JWK's kty/crv/alg/use, the
 * imported KeyObject's type and size. A batch of tokens does this once per pair.
 */
export async function usableKey(key: VerificationKey, alg: string, algorithms: readonly string[]): Promise<UsableKey> {
  if (!algorithms.includes(alg)) return { ok: false, reason: 'alg_not_allowed' };
  if (key.kind === 'secret' ? !isHmac(alg) : isHmac(alg) || !keyFitsAlgorithm(key.jwk, alg)) return { ok: false, reason: 'alg_not_allowed' };
  let keyObject: KeyObject;
  try {
    keyObject = await resolveKey(key, alg);
  } catch (err) {
    return { ok: false, reason: reasonForImportError(err) };
  }
  if (!keyObjectFitsAlgorithm(keyObject, alg)) return { ok: false, reason: 'alg_not_allowed' };
  return { ok: true, key: keyObject };
}

/**
 * Header, signature and registered claims of one token, with a key usableKey accepted for
 * `alg`. Synchronous and never throws: every failure is a reason.
 */
export function verifyWithKey(token: string, alg: string, key: KeyObject, rules: ClaimRules, nowMs: number): VerifyResult {
  // the header again, here: the worker trusts nothing the main thread read
  const header = readProtectedHeader(token);
  if (!header.ok) return header;
  if (header.header.alg !== alg) return { ok: false, reason: 'alg_not_allowed' };
  const firstDot = token.indexOf('.');
  const lastDot = token.lastIndexOf('.');
  const signingInput = Buffer.from(token.slice(0, lastDot), 'latin1');
  const signature = Buffer.from(token.slice(lastDot + 1), 'base64url');
  let valid: boolean;
  try {
    valid = signatureValid(alg, key, signingInput, signature);
  } catch {
    valid = false;
  }
  if (!valid) return { ok: false, reason: 'bad_signature' };
  const claims = decodeClaimsSet(token.slice(firstDot + 1, lastDot));
  if (claims === undefined) return { ok: false, reason: 'malformed' };
  const refused = checkClaims(claims, rules, nowMs);
  return refused === undefined ? { ok: true, claims } : { ok: false, reason: refused };
}

/** Verifies signature and registered claims. Never throws: every failure is a reason. */
export async function verifyJws(token: string, alg: string, key: VerificationKey, options: VerifyOptions): Promise<VerifyResult> {
  const usable = await usableKey(key, alg, options.algorithms);
  return usable.ok ? verifyWithKey(token, alg, usable.key, options, options.nowMs) : usable;
}

/** RFC 7519 §7.2 steps 9-10: the payload is UTF-8 JSON, a top-level object (as jose requires). */
export function decodeClaimsSet(segment: string): JWTPayload | undefined {
  const bytes = Buffer.from(segment, 'base64url');
  // Buffer's decoder would replace bad sequences with U+FFFD; jose's decoder is fatal, so is this
  if (!isUtf8(bytes)) return undefined;
  let claims: unknown;
  try {
    claims = JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) return undefined;
  return claims as JWTPayload;
}

/**
 * The registered claims, jose's rules (validateClaimsSet) in jose's order, so the reasons are
 * the ones jose's errors mapped to: presence of iss (when an issuer is configured), aud (when
 * an audience is), and exp (always); iss equal; aud equal or listed; iat, nbf, exp numbers;
 * nbf ≤ now + tolerance; exp > now − tolerance, with now in whole seconds. One rule stricter
 * than jose: a NumericDate that is not finite (JSON's 1e999 parses to Infinity, a token
 * that would never expire) is refused as bad_claims. Returns undefined when all hold.
 */
export function checkClaims(claims: JWTPayload, rules: ClaimRules, nowMs: number): AuthFailureReason | undefined {
  const issuer = rules.issuer || undefined;
  const audience = rules.audience || undefined;
  if (issuer !== undefined && !Object.hasOwn(claims, 'iss')) return 'issuer';
  if (audience !== undefined && !Object.hasOwn(claims, 'aud')) return 'audience';
  if (!Object.hasOwn(claims, 'exp')) return 'missing_exp';
  if (issuer !== undefined && claims.iss !== issuer) return 'issuer';
  if (audience !== undefined && !audienceListed(claims.aud, audience)) return 'audience';
  const now = Math.floor(nowMs / 1000);
  const tolerance = rules.clockToleranceS;
  const { iat, nbf, exp } = claims;
  if (iat !== undefined && !isNumericDate(iat)) return 'bad_claims';
  if (nbf !== undefined) {
    // jose: an nbf that is not a number is an nbf failure
    if (typeof nbf !== 'number') return 'not_yet_valid';
    if (!Number.isFinite(nbf)) return 'bad_claims';
    if (nbf > now + tolerance) return 'not_yet_valid';
  }
  // jose: an exp that is not a number is an exp failure (expired), a missing one missing_exp
  if (typeof exp !== 'number') return 'expired';
  if (!Number.isFinite(exp)) return 'bad_claims';
  if (exp <= now - tolerance) return 'expired';
  return undefined;
}

function isNumericDate(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

/** RFC 7519 §4.1.3: aud is one string or an array of them; the configured audience must be it or among them. */
function audienceListed(aud: unknown, audience: string): boolean {
  if (typeof aud === 'string') return aud === audience;
  return Array.isArray(aud) && aud.includes(audience);
}

export interface TokenIdentityFields {
  readonly username: string;
  readonly roles: readonly string[];
  readonly tokenAcl?: TokenAcl;
  readonly jti?: string;
  readonly expiresAtMs: number;
}

/**
 * Turns verified claims into identity fields. Roles may be an array of strings or one
 * space-separated string (OAuth `scope` style). A claim of the wrong shape refuses the token
 * rather than being ignored: a broken acl claim must not turn into "no narrowing".
 */
export function identityFieldsFromClaims(claims: JWTPayload, usernameClaim: string, rolesClaim: string): TokenIdentityFields | undefined {
  const username = claims[usernameClaim];
  if (typeof username !== 'string' || username.length === 0) return undefined;
  const rawRoles = claims[rolesClaim];
  let roles: string[];
  if (rawRoles === undefined) roles = [];
  else if (typeof rawRoles === 'string') roles = rawRoles.split(' ').filter(Boolean);
  else if (Array.isArray(rawRoles) && rawRoles.every((r) => typeof r === 'string')) roles = rawRoles as string[];
  else return undefined;
  let tokenAcl: TokenAcl | undefined;
  if (claims.acl !== undefined) {
    tokenAcl = parseTokenAcl(claims.acl);
    if (tokenAcl === undefined) return undefined;
  }
  if (claims.jti !== undefined && typeof claims.jti !== 'string') return undefined;
  if (typeof claims.exp !== 'number') return undefined;
  return { username, roles, tokenAcl, jti: claims.jti, expiresAtMs: claims.exp * 1000 };
}

// JWT pieces that need no key set and no pool: reading the protected header (so obviously bad
// tokens never reach a worker), the algorithm rules, mapping jose errors to reason strings and
// turning verified claims into identity fields. `verifyJws` is what the worker runs.
import { errors, importJWK, jwtVerify, type CryptoKey, type JWK, type JWTPayload } from 'jose';
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

const BASE64URL = /^[A-Za-z0-9_-]*$/;

/** Reads the protected header of a compact JWS without trusting anything in it. */
export function readProtectedHeader(token: string): HeaderResult {
  if (token.length === 0) return { ok: false, reason: 'no_token' };
  if (token.length > MAX_TOKEN_LENGTH) return { ok: false, reason: 'malformed' };
  const parts = token.split('.');
  // Five parts is a JWE: encrypted tokens are not accepted.
  if (parts.length !== 3 || !parts.every((p) => BASE64URL.test(p)) || parts[0]!.length === 0 || parts[1]!.length === 0) {
    return { ok: false, reason: 'malformed' };
  }
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8'));
  } catch {
    return { ok: false, reason: 'malformed' };
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) return { ok: false, reason: 'malformed' };
  const h = header as Record<string, unknown>;
  if (typeof h.alg !== 'string') return { ok: false, reason: 'malformed' };
  if (h.kid !== undefined && typeof h.kid !== 'string') return { ok: false, reason: 'malformed' };
  // RFC 7515 §4.1.11: a recipient must refuse a token whose crit names an extension it does
  // not understand. Vigil understands none (b64:false tokens are refused with it).
  if (h.crit !== undefined) return { ok: false, reason: 'crit_unsupported' };
  return { ok: true, header: { alg: h.alg, kid: h.kid as string | undefined } };
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

/** Maps a jose error to a reason; anything unrecognised is `malformed` (never thrown further). */
export function reasonForJoseError(err: unknown): AuthFailureReason {
  if (err instanceof errors.JWTExpired) return 'expired';
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'exp') return err.reason === 'missing' ? 'missing_exp' : 'expired';
    if (err.claim === 'nbf') return 'not_yet_valid';
    if (err.claim === 'iss') return 'issuer';
    if (err.claim === 'aud') return 'audience';
    return 'bad_claims';
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'bad_signature';
  if (err instanceof errors.JOSEAlgNotAllowed) return 'alg_not_allowed';
  if (err instanceof errors.JOSENotSupported) {
    return /crit|extension/i.test(err.message) ? 'crit_unsupported' : 'alg_not_allowed';
  }
  // Importing a JWK for an alg it does not fit.
  if (err instanceof TypeError || err instanceof errors.JWKInvalid) return 'alg_not_allowed';
  return 'malformed';
}

export type VerificationKey =
  /** Public key from the key set; `cacheKey` (thumbprint) lets the worker reuse the import. */
  | { readonly kind: 'jwk'; readonly jwk: JWK; readonly cacheKey: string }
  | { readonly kind: 'secret'; readonly secret: string };

export interface VerifyOptions {
  readonly algorithms: readonly string[];
  readonly issuer?: string;
  readonly audience?: string;
  readonly clockToleranceS: number;
  readonly nowMs: number;
}

export type VerifyResult = { readonly ok: true; readonly claims: JWTPayload } | { readonly ok: false; readonly reason: AuthFailureReason };

const importedKeys = new Map<string, CryptoKey | Uint8Array>();
const MAX_IMPORTED_KEYS = 256;

async function resolveKey(key: VerificationKey, alg: string): Promise<CryptoKey | Uint8Array> {
  if (key.kind === 'secret') return new TextEncoder().encode(key.secret);
  // A CryptoKey is bound to one algorithm (RSASSA-PKCS1 vs RSA-PSS), hence alg in the cache key.
  const cacheKey = `${key.cacheKey}:${alg}`;
  const cached = importedKeys.get(cacheKey);
  if (cached) return cached;
  const imported = await importJWK(key.jwk, alg);
  if (importedKeys.size >= MAX_IMPORTED_KEYS) importedKeys.clear();
  importedKeys.set(cacheKey, imported);
  return imported;
}

/** Verifies signature and registered claims. Never throws: every failure is a reason. */
export async function verifyJws(token: string, alg: string, key: VerificationKey, options: VerifyOptions): Promise<VerifyResult> {
  try {
    if (!options.algorithms.includes(alg)) return { ok: false, reason: 'alg_not_allowed' };
    if (key.kind === 'secret' ? !isHmac(alg) : isHmac(alg) || !keyFitsAlgorithm(key.jwk, alg)) return { ok: false, reason: 'alg_not_allowed' };
    const keyObject = await resolveKey(key, alg);
    const { payload } = await jwtVerify(token, keyObject, {
      algorithms: [alg],
      issuer: options.issuer || undefined,
      audience: options.audience || undefined,
      clockTolerance: options.clockToleranceS,
      currentDate: new Date(options.nowMs),
      requiredClaims: ['exp'],
    });
    return { ok: true, claims: payload };
  } catch (err) {
    return { ok: false, reason: reasonForJoseError(err) };
  }
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

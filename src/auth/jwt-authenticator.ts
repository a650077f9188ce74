// VIGIL_AUTH=jwt. The pipeline for one CONNECT (or MQTT 5 re-authentication):
//
//   take token → verified-token cache? → read header → pick algorithm and key
//     → (unknown kid: one single-flight JWKS refetch) → pool.verifyToken → identity fields
//
// then, for every request, cache hit or not: username match, re-auth subject, revocation.
// Cheap refusals (malformed, alg none, crit, unknown kid) never reach the pool. Concurrent
// CONNECTs with the same token share one verification.
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { JwksStore } from './jwks.js';
import { isHmac, readProtectedHeader, type VerificationKey } from './jwt.js';
import type { AuthPool } from './pool.js';
import { authFailure, type AuthFailureReason } from './reasons.js';
import type { RevocationList } from './revocation.js';
import { tokenCacheKey, VerifiedTokenCache, type VerifiedToken } from './token-cache.js';
import type { AuthOutcome, AuthRequest, Authenticator, Identity } from './types.js';
import { preciseNowMs, type TokenPolicy } from './worker.js';

/** MQTT 5 Authentication Method carrying the token in Authentication Data. */
export const JWT_AUTH_METHOD = 'JWT';

export interface JwtAuthenticatorOptions {
  readonly pool: AuthPool;
  /** Absent when only HS* (shared secret) tokens are accepted. */
  readonly jwks?: JwksStore;
  readonly revocations: RevocationList;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** Effective allow-list (see effectiveAlgorithms). */
  readonly algorithms: readonly string[];
  readonly secret?: string;
  readonly issuer?: string;
  readonly audience?: string;
  readonly clockToleranceS: number;
  readonly usernameClaim: string;
  readonly rolesClaim: string;
  readonly tokenCacheMax?: number;
  readonly now?: () => number;
}

/** `checked`: the failure came from a signature check in the pool (not from the header alone, or a refetch). */
type Verification = { readonly ok: true; readonly token: VerifiedToken } | { readonly ok: false; readonly reason: AuthFailureReason; readonly checked?: boolean };

/** Failures that a second verification of the same token would repeat: remembered briefly. */
const DETERMINISTIC_FAILURES = new Set<AuthFailureReason>(['bad_signature', 'expired', 'issuer', 'audience', 'missing_exp', 'bad_claims', 'malformed']);
const NEGATIVE_TTL_MS = 60_000;
const NEGATIVE_MAX = 10_000;

export class JwtAuthenticator implements Authenticator {
  readonly mode = 'jwt';
  private readonly cache: VerifiedTokenCache;
  private readonly inflight = new Map<string, Promise<Verification>>();
  private readonly recentFailures = new Map<string, { reason: AuthFailureReason; untilMs: number }>();
  private readonly now: () => number;
  private readonly unsubscribe: (() => void)[] = [];
  /** One object for every token: a batch carries it once (pool.ts batchInput). */
  private readonly policy: TokenPolicy;
  private readonly allowedVerified: { inc(): void };
  private readonly allowedFromCache: { inc(): void };

  constructor(private readonly options: JwtAuthenticatorOptions) {
    this.now = options.now ?? Date.now;
    this.policy = Object.freeze({
      algorithms: options.algorithms,
      issuer: options.issuer,
      audience: options.audience,
      clockToleranceS: options.clockToleranceS,
      usernameClaim: options.usernameClaim,
      rolesClaim: options.rolesClaim,
    });
    this.allowedVerified = options.metrics.authVerificationsTotal.bind({ outcome: 'allowed', reason: 'verified' });
    this.allowedFromCache = options.metrics.authVerificationsTotal.bind({ outcome: 'allowed', reason: 'cache' });
    this.cache = new VerifiedTokenCache({
      maxEntries: options.tokenCacheMax ?? 100_000,
      clockToleranceMs: options.clockToleranceS * 1000,
      now: this.now,
    });
    if (options.jwks) this.unsubscribe.push(options.jwks.onKeyRemoved((key) => this.cache.dropKey(key.thumbprint)));
    this.unsubscribe.push(options.revocations.onRevoked((entry) => this.cache.dropRevoked(entry)));
  }

  /** Entries in the verified-token cache (for the explain view and tests). */
  get cachedTokens(): number {
    return this.cache.size;
  }

  authenticate(req: AuthRequest): AuthOutcome | Promise<AuthOutcome> {
    let raw: Buffer | undefined;
    if (req.authMethod !== undefined) {
      if (req.authMethod !== JWT_AUTH_METHOD) return this.refuse(req, 'bad_auth_method');
      raw = req.authData;
    } else {
      raw = req.password;
    }
    const token = raw?.toString('utf8').trim() ?? '';
    if (token.length === 0) return this.refuse(req, 'no_token');

    const key = tokenCacheKey(token);
    const cached = this.cache.get(key);
    if (cached && (cached.keyThumbprint === undefined || this.options.jwks?.isVerifying(cached.keyThumbprint))) {
      this.options.metrics.authTokenCacheHitsTotal.inc();
      return this.admit(req, cached, 'cache');
    }
    const failed = this.recentFailures.size > 0 ? this.recentFailures.get(key) : undefined;
    if (failed && failed.untilMs > this.now()) return this.refuse(req, failed.reason);

    let verification = this.inflight.get(key);
    // only the request that starts a check pays for it (a shared one costs nothing more)
    let checking = false;
    if (!verification) {
      // Server busy is answered before any work, and is not shared with later requests.
      if (this.options.pool.admissionFull) return this.refuse(req, 'server_busy');
      // what an address may cost is limited, not who a token names (README, "Hostile traffic")
      if (req.verificationsLimited) return this.refuse(req, 'verifications_limited');
      const started = this.verify(token);
      if (!(started instanceof Promise)) return started.ok ? this.admit(req, started.token, 'verified') : this.refuse(req, started.reason);
      // one continuation settles the check for everyone sharing it: the cache, the failure memory, inflight
      verification = started.then(
        (v) => {
          this.inflight.delete(key);
          this.remember(key, v);
          return v;
        },
        (err: unknown) => {
          this.inflight.delete(key);
          throw err;
        },
      );
      this.inflight.set(key, verification);
      checking = true;
    }
    return verification.then(
      (v) => (v.ok ? this.admit(req, v.token, 'verified') : this.refuse(req, v.reason, undefined, checking && v.checked)),
      () => this.refuse(req, 'internal_error'),
    );
  }

  isRevoked(identity: Identity): boolean {
    return this.options.revocations.isRevoked(identity);
  }

  async close(): Promise<void> {
    for (const off of this.unsubscribe) off();
    this.cache.clear();
  }

  // -------------------------------------------------------------------------------------

  /** Synchronous result for refusals decided from the header alone. */
  private verify(token: string): Verification | Promise<Verification> {
    const parsed = readProtectedHeader(token);
    if (!parsed.ok) return parsed;
    const { alg, kid } = parsed.header;
    // Covers alg "none" and, without a secret, every HS* token — including the classic
    // confusion attack of an HS256 token "signed" with the RSA public key.
    if (!this.options.algorithms.includes(alg)) return { ok: false, reason: 'alg_not_allowed' };
    if (isHmac(alg)) {
      if (!this.options.secret) return { ok: false, reason: 'alg_not_allowed' };
      return this.runVerify(token, alg, kid, { kind: 'secret', secret: this.options.secret }, undefined);
    }
    const jwks = this.options.jwks;
    if (!jwks) return { ok: false, reason: 'alg_not_allowed' };
    const selected = jwks.select(kid, alg);
    if (selected.ok) return this.runVerify(token, alg, kid, { kind: 'jwk', jwk: selected.key.jwk, cacheKey: selected.key.thumbprint }, selected.key.thumbprint);
    if (selected.reason !== 'unknown_kid') return selected;
    return jwks.refreshForUnknownKid().then(() => {
      const again = jwks.select(kid, alg);
      if (!again.ok) return { ok: false, reason: again.reason === 'unknown_kid' && !jwks.loaded ? 'jwks_unavailable' : again.reason };
      if (this.options.pool.admissionFull) return { ok: false, reason: 'server_busy' };
      return this.runVerify(token, alg, kid, { kind: 'jwk', jwk: again.key.jwk, cacheKey: again.key.thumbprint }, again.key.thumbprint);
    });
  }

  private runVerify(token: string, alg: string, kid: string | undefined, key: VerificationKey, keyThumbprint: string | undefined): Promise<Verification> {
    const o = this.options;
    const now = this.now();
    return o.pool.verifyToken({ token, alg, key, policy: this.policy, nowMs: now, submittedAtMs: preciseNowMs() }).then((result): Verification => {
      o.metrics.authVerifySeconds.observe(result.runMs / 1000);
      if (!result.ok) return { ok: false, reason: result.reason, checked: true };
      const f = result.fields;
      // a literal of one shape, not a spread of the cloned object: this is what the cache keeps
      return { ok: true, token: { username: f.username, roles: f.roles, tokenAcl: f.tokenAcl, jti: f.jti, expiresAtMs: f.expiresAtMs, kid, keyThumbprint } };
    });
  }

  private remember(key: string, v: Verification): void {
    if (v.ok) {
      this.cache.set(key, v.token);
    } else if (DETERMINISTIC_FAILURES.has(v.reason)) {
      if (this.recentFailures.size >= NEGATIVE_MAX) this.recentFailures.clear();
      this.recentFailures.set(key, { reason: v.reason, untilMs: this.now() + NEGATIVE_TTL_MS });
    }
  }

  /** Per-request checks, the same for a cache hit and a fresh verification. */
  private admit(req: AuthRequest, token: VerifiedToken, via: 'cache' | 'verified'): AuthOutcome {
    // 3.1.1 clients must send a username with a password [MQTT-3.1.2-22]; an empty one counts as none.
    if (req.username !== undefined && req.username !== '' && req.username !== token.username) return this.refuse(req, 'username_mismatch', token);
    if (req.requireSubject !== undefined && req.requireSubject !== token.username) return this.refuse(req, 'subject_changed', token);
    if (this.options.revocations.isRevoked(token)) return this.refuse(req, 'revoked', token);
    const identity: Identity = Object.freeze({
      username: token.username,
      clientId: req.clientId,
      roles: Object.freeze([...token.roles]),
      tokenAcl: token.tokenAcl,
      jti: token.jti,
      expiresAtMs: token.expiresAtMs,
      kid: token.kid,
      certSubject: req.certSubject,
      authenticatedAtMs: this.now(),
    });
    (via === 'cache' ? this.allowedFromCache : this.allowedVerified).inc();
    this.options.logger.debug({ clientId: req.clientId, username: token.username, kid: token.kid, via }, 'authenticated');
    return { ok: true, identity };
  }

  private refuse(req: AuthRequest, reason: AuthFailureReason, token?: VerifiedToken, signatureChecked = false): AuthOutcome {
    this.options.metrics.authVerificationsTotal.inc({ outcome: 'refused', reason });
    this.options.logger.info(
      { clientId: req.clientId, remoteAddress: req.remoteAddress, reason, username: req.username, tokenUsername: token?.username },
      'authentication refused',
    );
    return signatureChecked ? { ...authFailure(reason), signatureChecked } : authFailure(reason);
  }
}

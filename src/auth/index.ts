// Identity for one broker node: who a client is (authenticator), what it may do (authorizer),
// who has been revoked, and the key set and policy behind them. server.ts builds it once with
// createIdentity and closes it at shutdown.
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { AclPolicyFile } from './acl-file.js';
import { AnonymousAuthenticator } from './anonymous-authenticator.js';
import { PolicyAuthorizer } from './authorizer.js';
import { JwksStore, type JwksKeyView } from './jwks.js';
import { effectiveAlgorithms, isHmac } from './jwt.js';
import { JwtAuthenticator } from './jwt-authenticator.js';
import { AuthPool, authThreads } from './pool.js';
import { MemoryRevocationList, type RevocationList } from './revocation.js';
import type { Authenticator } from './types.js';

export type { Identity, AuthRequest, AuthOutcome, Authenticator, Authorizer, Verdict, AuthAction, TokenAcl } from './types.js';
export type { RevocationList, RevocationEntry, RevocationKind, RevokeOptions } from './revocation.js';
export type { JwksKeyView } from './jwks.js';
export type { AclDecision } from './acl.js';
export { AUTH_FAILURES, type AuthFailureReason } from './reasons.js';
export { JWT_AUTH_METHOD } from './jwt-authenticator.js';
export { ANONYMOUS_ROLE } from './anonymous-authenticator.js';
export { PolicyAuthorizer } from './authorizer.js';
export { MemoryRevocationList } from './revocation.js';

export type IdentityConfig = Pick<
  Config,
  | 'auth' | 'acl' | 'authWorkers' | 'authQueueMax' | 'authAdmissionMax' | 'authAdmissionBytes' | 'jwks' | 'jwtSecret' | 'jwtIssuer' | 'jwtAudience' | 'jwtClockToleranceS'
  | 'jwtAlgorithms' | 'jwtUsernameClaim' | 'jwtRolesClaim' | 'jwksMinRefreshS' | 'jwksRetiredGraceS' | 'jwksMaxBytes'
>;

export interface IdentityOptions {
  /** Injected clock (ms since epoch) for tests. */
  readonly now?: () => number;
  /** Polling interval of the JWKS and ACL file watchers (default 1000 ms). */
  readonly watchIntervalMs?: number;
  /** A shared (cluster) revocation list; default in-memory. */
  readonly revocations?: RevocationList;
}

export interface IdentityModule {
  readonly authenticator: Authenticator;
  readonly authorizer: PolicyAuthorizer;
  readonly revocations: RevocationList;
  /** Present in jwt mode with VIGIL_JWKS set. */
  readonly jwks?: JwksStore;
  /** Present when VIGIL_ACL is set. */
  readonly aclFile?: AclPolicyFile;
  readonly pool: AuthPool;
  /** For the admin API: keys and their states, policy generation, revocations. */
  explain(): IdentityExplain;
  close(): Promise<void>;
}

export interface IdentityExplain {
  readonly mode: string;
  readonly algorithms: readonly string[];
  readonly keys: readonly JwksKeyView[];
  readonly aclFile?: string;
  readonly aclGeneration: number;
  readonly allowAll: boolean;
  readonly revocations: number;
}

/**
 * Builds identity from config. Throws (with the setting named) when a JWKS or ACL file cannot
 * be loaded at start; a JWKS URL that is down at start is retried in the background.
 */
export async function createIdentity(config: IdentityConfig, metrics: Metrics, logger: Logger, options: IdentityOptions = {}): Promise<IdentityModule> {
  const log = logger.child({ component: 'identity' });
  const now = options.now ?? Date.now;
  const revocations = options.revocations ?? new MemoryRevocationList({
    now,
    onRevokedMetric: (kind) => metrics.revocationsTotal.inc({ kind }),
    onListenerError: (err) => log.error({ err: String(err) }, 'revocation listener failed'),
  });
  const pool = new AuthPool({ threads: authThreads(config.authWorkers), queueMax: config.authQueueMax, admissionMax: config.authAdmissionMax, admissionBytes: config.authAdmissionBytes, metrics });
  let jwks: JwksStore | undefined;
  let aclFile: AclPolicyFile | undefined;
  try {
    const algorithms = effectiveAlgorithms(config.jwtAlgorithms, config.jwtSecret !== '');
    let authenticator: Authenticator;
    if (config.auth === 'jwt') {
      if (!config.jwtSecret && config.jwtAlgorithms.some(isHmac)) log.warn('HS* algorithms are listed but VIGIL_JWT_SECRET is unset: HMAC tokens will be refused');
      if (config.jwtSecret && Buffer.byteLength(config.jwtSecret) < 32) log.warn('VIGIL_JWT_SECRET is shorter than 32 bytes: HS256 secrets should have at least 256 bits');
      if (config.jwks) {
        if (/^http:\/\//i.test(config.jwks) && !isLoopbackUrl(config.jwks)) throw new Error('VIGIL_JWKS: http:// is accepted for loopback only; use https://');
        jwks = await JwksStore.open({
          source: config.jwks,
          minRefreshS: config.jwksMinRefreshS,
          retiredGraceS: config.jwksRetiredGraceS,
          maxBytes: config.jwksMaxBytes,
          metrics,
          logger: log,
          now,
          watchIntervalMs: options.watchIntervalMs,
        });
      }
      authenticator = new JwtAuthenticator({
        pool,
        jwks,
        revocations,
        metrics,
        logger: log,
        algorithms,
        secret: config.jwtSecret || undefined,
        issuer: config.jwtIssuer || undefined,
        audience: config.jwtAudience || undefined,
        clockToleranceS: config.jwtClockToleranceS,
        usernameClaim: config.jwtUsernameClaim,
        rolesClaim: config.jwtRolesClaim,
        now,
      });
    } else {
      authenticator = new AnonymousAuthenticator(revocations, metrics, now);
    }
    if (config.acl) {
      aclFile = await AclPolicyFile.open({ path: config.acl, logger: log, metrics, watchIntervalMs: options.watchIntervalMs });
    } else if (config.auth === 'jwt') {
      log.warn('VIGIL_AUTH=jwt without VIGIL_ACL: everything is denied except what a token acl claim grants');
    }
    const authorizer = new PolicyAuthorizer({ pool, policyFile: aclFile ?? null, allowAll: config.auth === 'none', revocations, metrics, logger: log });
    const ownsRevocations = options.revocations === undefined;
    return {
      authenticator,
      authorizer,
      revocations,
      jwks,
      aclFile,
      pool,
      explain: () => ({
        mode: authenticator.mode,
        algorithms: config.auth === 'jwt' ? algorithms : [],
        keys: jwks?.describe() ?? [],
        aclFile: config.acl || undefined,
        aclGeneration: aclFile?.current.generation ?? 0,
        allowAll: authorizer.allowAll,
        revocations: revocations.list().length,
      }),
      async close() {
        await authorizer.close();
        await authenticator.close();
        await aclFile?.close();
        await jwks?.close();
        if (ownsRevocations) await revocations.close();
        await pool.close();
      },
    };
  } catch (err) {
    await aclFile?.close();
    await jwks?.close();
    await pool.close();
    throw err;
  }
}

function isLoopbackUrl(url: string): boolean {
  try {
    return ['127.0.0.1', 'localhost', '[::1]', '::1'].includes(new URL(url).hostname);
  } catch {
    return false;
  }
}

// VIGIL_AUTH=none: everyone is let in, synchronously, with role `anonymous`. The CONNECT
// username (unverified) becomes the identity's username so %u rules and revocation by name
// still work for operators who run an open broker behind a trusted network.
import type { Metrics } from '../metrics.js';
import type { RevocationList } from './revocation.js';
import { authFailure } from './reasons.js';
import type { AuthOutcome, AuthRequest, Authenticator, Identity } from './types.js';

export const ANONYMOUS_ROLE = 'anonymous';
/** Every anonymous identity's roles: one frozen array, not one per CONNECT. */
const ANONYMOUS_ROLES: readonly string[] = Object.freeze([ANONYMOUS_ROLE]);

export class AnonymousAuthenticator implements Authenticator {
  readonly mode = 'none';

  /** Bound once: a label lookup on every CONNECT was measurable in a connect storm. */
  private readonly allowed: { inc(): void };

  constructor(
    private readonly revocations: RevocationList,
    private readonly metrics: Metrics,
    private readonly now: () => number = Date.now,
  ) {
    this.allowed = metrics.authVerificationsTotal.bind({ outcome: 'allowed', reason: 'anonymous' });
  }

  authenticate(req: AuthRequest): AuthOutcome {
    // An MQTT 5 client asking for enhanced authentication gets Bad Authentication Method:
    // this mode implements none (MQTT 5 §4.12).
    if (req.authMethod !== undefined) return this.refuse('bad_auth_method');
    const identity: Identity = Object.freeze({
      username: req.username ?? '',
      clientId: req.clientId,
      roles: ANONYMOUS_ROLES,
      certSubject: req.certSubject,
      authenticatedAtMs: this.now(),
    });
    if (this.revocations.isRevoked(identity)) return this.refuse('revoked');
    this.allowed.inc();
    return { ok: true, identity };
  }

  isRevoked(identity: Identity): boolean {
    return this.revocations.isRevoked(identity);
  }

  async close(): Promise<void> {}

  private refuse(reason: 'bad_auth_method' | 'revoked'): AuthOutcome {
    this.metrics.authVerificationsTotal.inc({ outcome: 'refused', reason });
    return authFailure(reason);
  }
}

// Contracts between the protocol code (main thread) and identity: who a client is
// (authentication) and what it may do (authorization). Everything that crosses the
// piscina boundary is plain structured-cloneable data.
import type { ReasonCode } from '../protocol/reason-codes.js';

/** What a client proved at CONNECT (or at MQTT 5 re-authentication). Immutable snapshot. */
export interface Identity {
  /** Username claim (jwt mode) or the CONNECT username / '' (none mode). */
  readonly username: string;
  readonly clientId: string;
  readonly roles: readonly string[];
  /** Optional per-token ACL claim; it narrows the role grants (docs/acl.md). */
  readonly tokenAcl?: TokenAcl;
  readonly jti?: string;
  /** Token expiry, ms since epoch; undefined = never (none mode). */
  readonly expiresAtMs?: number;
  /** Key id that signed the token (for explain views). */
  readonly kid?: string;
  /** Certificate subject of a TLS client certificate, when one was presented. */
  readonly certSubject?: string;
  /** When authentication happened, ms since epoch. */
  readonly authenticatedAtMs: number;
}

export interface TokenAcl {
  readonly publish?: readonly string[];
  readonly subscribe?: readonly string[];
}

export type AuthAction = 'publish' | 'subscribe';

/** What the channel hands to the authenticator at CONNECT or AUTH. */
export interface AuthRequest {
  readonly clientId: string;
  readonly username?: string;
  readonly password?: Buffer;
  /** MQTT 5 Authentication Method / Data. */
  readonly authMethod?: string;
  readonly authData?: Buffer;
  readonly protocolVersion: 3 | 4 | 5;
  readonly remoteAddress: string;
  readonly certSubject?: string;
  /** Set on re-authentication: the subject the new token must name. */
  readonly requireSubject?: string;
  /**
   * The source address is over its budget of failed signature checks: a token that needs a
   * new check is refused (verifications_limited) before any crypto; one whose verification is
   * known (the verified-token cache) is admitted as usual.
   */
  readonly verificationsLimited?: boolean;
}

/**
 * Outcome of authentication. MQTT 5 reason codes are used throughout; the channel maps
 * them to 3.1.1 CONNACK return codes in one place (protocol/reason-codes.ts).
 */
export type AuthOutcome =
  | { readonly ok: true; readonly identity: Identity }
  | {
      readonly ok: false;
      readonly reasonCode: ReasonCode;
      readonly reason: string;
      /** A signature check ran for this request and failed: the CPU an attacker costs (limited per address). */
      readonly signatureChecked?: boolean;
    };

export interface Authenticator {
  /** 'none' | 'jwt' */
  readonly mode: string;
  /** Sync result when no crypto is needed (none mode, cache hit); a promise otherwise. */
  authenticate(req: AuthRequest): AuthOutcome | Promise<AuthOutcome>;
  /** True when a subject or jti has been revoked (checked at will fire and by the session sweep). */
  isRevoked(identity: Identity): boolean;
  close(): Promise<void>;
}

/**
 * Delivery verdicts, answered synchronously on the main thread: one per topic, shared by every
 * identity the subscribe rules cannot tell apart, valid for one policy and revocation state.
 */
export interface ReceiveVerdicts {
  /** True once a policy reload or a revocation happened: these verdicts no longer apply. */
  readonly stale: boolean;
  allows(topic: string): boolean;
}

export type Verdict = { readonly allowed: true } | { readonly allowed: false; readonly reason: string };

/**
 * Authorization at the moment of every send. `check` answers synchronously from the
 * main-thread verdict cache when it can; a miss goes to the worker pool once.
 */
export interface Authorizer {
  /** True when there is no policy at all: every check is allowed, callers may skip checking. */
  readonly allowAll: boolean;
  check(identity: Identity, action: AuthAction, topic: string): Verdict | Promise<Verdict>;
  /**
   * What this identity may receive, for the delivery check (docs/acl.md "Delivery"). Null when
   * there is no policy at all: every delivery is allowed. Ask again once it is `stale`.
   */
  receiveVerdicts(identity: Identity): ReceiveVerdicts | null;
  /** Whether the policy's client-id rules let this identity connect with this client id. */
  clientIdAllowed(identity: Identity, clientId: string): boolean;
  /** Generation counter bumped on policy reload / revocation so per-session caches can drop stale verdicts. */
  readonly generation: number;
  close(): Promise<void>;
}

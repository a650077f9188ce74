// Every reason an authentication can be refused for, and the MQTT 5 CONNACK reason code it
// maps to, in one table. The reason string is the `reason` label of
// vigil_auth_verifications_total and the `reason` field of the log line; it never carries
// token content.
import { RC, type ReasonCode } from '../protocol/reason-codes.js';

export const AUTH_FAILURES = {
  /** No password / Authentication Data. */
  no_token: RC.BAD_USERNAME_OR_PASSWORD,
  /** Not a compact JWS, bad base64url / JSON, oversize, or a JWE. */
  malformed: RC.BAD_USERNAME_OR_PASSWORD,
  /** alg none, an algorithm off the allow-list, HS* without a secret, alg not fitting the key. */
  alg_not_allowed: RC.BAD_USERNAME_OR_PASSWORD,
  /** A `crit` header names an extension Vigil does not implement. */
  crit_unsupported: RC.BAD_USERNAME_OR_PASSWORD,
  /** No key with the token's kid, even after a refetch. */
  unknown_kid: RC.BAD_USERNAME_OR_PASSWORD,
  /** The token has no kid and the key set holds more than one candidate key. */
  missing_kid: RC.BAD_USERNAME_OR_PASSWORD,
  bad_signature: RC.BAD_USERNAME_OR_PASSWORD,
  expired: RC.BAD_USERNAME_OR_PASSWORD,
  not_yet_valid: RC.BAD_USERNAME_OR_PASSWORD,
  /** Tokens must carry exp: a token that never expires cannot be cached or bounded. */
  missing_exp: RC.BAD_USERNAME_OR_PASSWORD,
  issuer: RC.BAD_USERNAME_OR_PASSWORD,
  audience: RC.BAD_USERNAME_OR_PASSWORD,
  /** Username claim missing / not a string, roles or acl claim of the wrong shape. */
  bad_claims: RC.BAD_USERNAME_OR_PASSWORD,
  /** CONNECT User Name differs from the token's username claim. */
  username_mismatch: RC.BAD_USERNAME_OR_PASSWORD,
  /** The token's subject or jti is on the revocation list. */
  revoked: RC.NOT_AUTHORIZED,
  /** Re-authentication presented a token for another subject. */
  subject_changed: RC.NOT_AUTHORIZED,
  /** MQTT 5 Authentication Method other than JWT (or any method when auth=none). */
  bad_auth_method: RC.BAD_AUTHENTICATION_METHOD,
  /**
   * The token needs a signature check and its source address spent its budget of failed
   * checks (VIGIL_AUTH_FAILURES_PER_ADDRESS). A token already verified is still admitted.
   */
  verifications_limited: RC.CONNECTION_RATE_EXCEEDED,
  /** The pool queue is full. */
  server_busy: RC.SERVER_BUSY,
  /** The key set could not be loaded at all (URL down since start). */
  jwks_unavailable: RC.SERVER_UNAVAILABLE,
  /** A worker crashed or returned something unexpected. */
  internal_error: RC.UNSPECIFIED_ERROR,
} as const;

export type AuthFailureReason = keyof typeof AUTH_FAILURES;

export function authFailure(reason: AuthFailureReason): { readonly ok: false; readonly reasonCode: ReasonCode; readonly reason: AuthFailureReason } {
  return { ok: false, reasonCode: AUTH_FAILURES[reason], reason };
}

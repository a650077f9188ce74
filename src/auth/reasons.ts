// Every reason an authentication can be refused for, and the MQTT 5 CONNACK reason code it
// maps to, in one table. The reason string is the `reason` label of
// vigil_auth_verifications_total and the `reason` field of the log line; it never carries
// token content.

export const REASON_CODE = {
  SUCCESS: 0x00,
  UNSPECIFIED_ERROR: 0x80,
  BAD_USERNAME_OR_PASSWORD: 0x86,
  NOT_AUTHORIZED: 0x87,
  SERVER_UNAVAILABLE: 0x88,
  SERVER_BUSY: 0x89,
  BAD_AUTHENTICATION_METHOD: 0x8c,
  CONNECTION_RATE_EXCEEDED: 0x9f,
} as const;

export const AUTH_FAILURES = {
  /** No password / Authentication Data. */
  no_token: REASON_CODE.BAD_USERNAME_OR_PASSWORD,
  /** Not a compact JWS, bad base64url / JSON, oversize, or a JWE. */
  malformed: REASON_CODE.BAD_USERNAME_OR_PASSWORD,
  /** alg none, an algorithm off the allow-list, HS* without a secret, alg not fitting the key. */
  alg_not_allowed: REASON_CODE.BAD_USERNAME_OR_PASSWORD,
  /** A `crit` header names an extension Vigil does not implement. */
  crit_unsupported: REASON_CODE.BAD_USERNAME_OR_PASSWORD,
  /** No key with the token's kid, even after a refetch. */
  unknown_kid: REASON_CODE.BAD_USERNAME_OR_PASSWORD,
  /** The token has no kid and the key set holds more than one candidate key. */
  missing_kid: REASON_CODE.BAD_USERNAME_OR_PASSWORD,
  bad_signature: REASON_CODE.BAD_USERNAME_OR_PASSWORD,
  expired: REASON_CODE.BAD_USERNAME_OR_PASSWORD,
  not_yet_valid: REASON_CODE.BAD_USERNAME_OR_PASSWORD,
  /** Tokens must carry exp: a token that never expires cannot be cached or bounded. */
  missing_exp: REASON_CODE.BAD_USERNAME_OR_PASSWORD,
  issuer: REASON_CODE.BAD_USERNAME_OR_PASSWORD,
  audience: REASON_CODE.BAD_USERNAME_OR_PASSWORD,
  /** Username claim missing / not a string, roles or acl claim of the wrong shape. */
  bad_claims: REASON_CODE.BAD_USERNAME_OR_PASSWORD,
  /** CONNECT User Name differs from the token's username claim. */
  username_mismatch: REASON_CODE.BAD_USERNAME_OR_PASSWORD,
  /** The token's subject or jti is on the revocation list. */
  revoked: REASON_CODE.NOT_AUTHORIZED,
  /** Re-authentication presented a token for another subject. */
  subject_changed: REASON_CODE.NOT_AUTHORIZED,
  /** MQTT 5 Authentication Method other than JWT (or any method when auth=none). */
  bad_auth_method: REASON_CODE.BAD_AUTHENTICATION_METHOD,
  /**
   * The token needs a signature check and its source address spent its budget of failed
   * checks (VIGIL_AUTH_FAILURES_PER_ADDRESS). A token already verified is still admitted.
   */
  verifications_limited: REASON_CODE.CONNECTION_RATE_EXCEEDED,
  /** The pool queue is full. */
  server_busy: REASON_CODE.SERVER_BUSY,
  /** The key set could not be loaded at all (URL down since start). */
  jwks_unavailable: REASON_CODE.SERVER_UNAVAILABLE,
  /** A worker crashed or returned something unexpected. */
  internal_error: REASON_CODE.UNSPECIFIED_ERROR,
} as const;

export type AuthFailureReason = keyof typeof AUTH_FAILURES;

export function authFailure(reason: AuthFailureReason): { readonly ok: false; readonly reasonCode: number; readonly reason: AuthFailureReason } {
  return { ok: false, reasonCode: AUTH_FAILURES[reason], reason };
}

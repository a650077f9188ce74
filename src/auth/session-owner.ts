// Who a session belongs to. A session, and the will it holds, belong to the identity that
// created them (docs/acl.md, "Sessions belong to an identity"): a CONNECT for the same client
// id from another identity may not resume the session, cancel its will or close its
// connection. The owner is a short string compared for equality, on this node and inside
// the claim script in Redis.
import type { Identity } from './types.js';

/**
 * jwt: the verified username (the VIGIL_JWT_USERNAME_CLAIM claim). none: the verified TLS
 * client certificate's subject when the client presented one, else everyone is `anonymous`
 * (the CONNECT username is not verified in that mode, so it cannot own anything).
 */
export function sessionOwner(identity: Identity, authMode: string): string {
  if (authMode === 'jwt') return `user:${identity.username}`;
  return identity.certSubject !== undefined ? `cert:${identity.certSubject}` : 'anonymous';
}

// A JWK Set document as Vigil accepts it: read from an HTTP response within a byte cap,
// then parsed key by key. Public signing keys of an asymmetric type only: symmetric (oct)
// keys and any private key material are refused, one key at a time, so a document with one
// bad key still yields the others (the store, jwks.ts, decides what an empty result means).
import { calculateJwkThumbprint, type JWK } from 'jose';

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

/** The document as a whole is unusable (not JSON, no keys array, too large). */
export class JwksError extends Error {}

export interface ParsedKey {
  readonly jwk: JWK;
  readonly thumbprint: string;
}

/** Validates a JWKS document. Throws JwksError when the document as a whole is unusable. */
export async function parseJwks(text: string): Promise<{ keys: ParsedKey[]; skipped: string[] }> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new JwksError(`not valid JSON: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { keys?: unknown }).keys)) {
    throw new JwksError('expected an object with a "keys" array');
  }
  const keys: ParsedKey[] = [];
  const skipped: string[] = [];
  for (const [i, raw] of ((doc as { keys: unknown[] }).keys).entries()) {
    const label = typeof (raw as JWK)?.kid === 'string' ? `kid ${(raw as JWK).kid}` : `keys[${i}]`;
    if (typeof raw !== 'object' || raw === null) {
      skipped.push(`${label}: not an object`);
      continue;
    }
    const jwk = raw as JWK;
    if (jwk.use !== undefined && jwk.use !== 'sig') continue; // encryption keys are normal in a JWKS
    if (jwk.kty !== 'RSA' && jwk.kty !== 'EC' && jwk.kty !== 'OKP') {
      // Symmetric (oct) keys are refused: HMAC is only ever verified with VIGIL_JWT_SECRET.
      skipped.push(`${label}: key type ${JSON.stringify(jwk.kty)} is not accepted`);
      continue;
    }
    if (PRIVATE_MEMBERS.some((m) => m in jwk)) {
      skipped.push(`${label}: holds private key material; publish only public keys`);
      continue;
    }
    if (jwk.kid !== undefined && typeof jwk.kid !== 'string') {
      skipped.push(`${label}: kid is not a string`);
      continue;
    }
    try {
      keys.push({ jwk, thumbprint: await calculateJwkThumbprint(jwk) });
    } catch (err) {
      skipped.push(`${label}: ${(err as Error).message}`);
    }
  }
  return { keys, skipped };
}

/**
 * Reads a response body as text, streamed, abandoning it (and the connection) once it passes
 * `maxBytes`: a body without Content-Length is never held whole before the check. The fetch's
 * timeout signal also ends a body that trickles.
 */
export async function readCapped(response: Response, maxBytes: number): Promise<string> {
  const declared = Number(response.headers.get('content-length') ?? 0);
  if (declared > maxBytes) {
    await response.body?.cancel();
    throw new JwksError(`response of ${declared} bytes is larger than ${maxBytes}`);
  }
  const reader = response.body?.getReader();
  if (!reader) return '';
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      throw new JwksError(`response is larger than ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, total).toString('utf8');
}

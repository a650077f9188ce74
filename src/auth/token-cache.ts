// Verified tokens on the main thread, so a reconnect storm with the same tokens does no crypto
// twice. Keyed by the sha256 of the token (the token itself is never kept). An entry lives
// until the token expires, until the key that verified it leaves the key set, or until its
// subject or jti is revoked. What is per-connection (username match, revocation, the clock) is
// still checked by the caller on every hit.
import * as nodeCrypto from 'node:crypto';
import type { RevocationEntry } from './revocation.js';
import type { TokenIdentityFields } from './jwt.js';

export interface VerifiedToken extends TokenIdentityFields {
  readonly kid?: string;
  /** Thumbprint of the JWKS key that verified it; undefined for HMAC (shared secret). */
  readonly keyThumbprint?: string;
}

/** One-shot crypto.hash (Node ≥ 20.12): a third of createHash's cost, which builds a Hash object per CONNECT. */
const oneShotHash = (nodeCrypto as { hash?: (algorithm: string, data: string, encoding: 'base64url') => string }).hash;

export function tokenCacheKey(token: string): string {
  if (oneShotHash) return oneShotHash('sha256', token, 'base64url');
  return nodeCrypto.createHash('sha256').update(token).digest('base64url');
}

export interface VerifiedTokenCacheOptions {
  readonly maxEntries: number;
  /** Same tolerance jose applies to exp, so a cached token expires when a fresh verify would fail. */
  readonly clockToleranceMs: number;
  readonly now: () => number;
}

export class VerifiedTokenCache {
  private readonly entries = new Map<string, VerifiedToken>();

  constructor(private readonly options: VerifiedTokenCacheOptions) {}

  get size(): number {
    return this.entries.size;
  }

  get(key: string): VerifiedToken | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAtMs + this.options.clockToleranceMs <= this.options.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return entry;
  }

  set(key: string, token: VerifiedToken): void {
    if (this.entries.size >= this.options.maxEntries) this.evict();
    this.entries.set(key, token);
  }

  /** The key left the set (after its grace): what it vouched for must be verified again. */
  dropKey(thumbprint: string): void {
    for (const [k, v] of this.entries) if (v.keyThumbprint === thumbprint) this.entries.delete(k);
  }

  dropRevoked(entry: Pick<RevocationEntry, 'kind' | 'value'>): void {
    for (const [k, v] of this.entries) {
      if (entry.kind === 'subject' ? v.username === entry.value : v.jti === entry.value) this.entries.delete(k);
    }
  }

  clear(): void {
    this.entries.clear();
  }

  /** Drops expired entries; if that frees less than a tenth, drops the oldest tenth. */
  private evict(): void {
    const now = this.options.now();
    for (const [k, v] of this.entries) if (v.expiresAtMs + this.options.clockToleranceMs <= now) this.entries.delete(k);
    const target = Math.floor(this.options.maxEntries * 0.9);
    for (const k of this.entries.keys()) {
      if (this.entries.size <= target) break;
      this.entries.delete(k);
    }
  }
}

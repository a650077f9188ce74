// Revoked subjects and token ids. `isRevoked` is synchronous because it sits on hot paths
// (every CONNECT, every ACL check, every will at fire time): a shared (Redis) implementation
// keeps a local mirror fed by pub/sub and answers from it. Listeners hear every revocation so
// the broker can disconnect live connections of the subject.
import type { Identity } from './types.js';

export type RevocationKind = 'subject' | 'jti';

export interface RevocationEntry {
  readonly kind: RevocationKind;
  readonly value: string;
  /** When the entry stops applying, ms since epoch; undefined = until removed. */
  readonly untilMs?: number;
  readonly revokedAtMs: number;
  /** Free text from the operator, for the admin API. */
  readonly note?: string;
}

export interface RevokeOptions {
  readonly untilMs?: number;
  readonly note?: string;
}

export type RevocationListener = (entry: RevocationEntry) => void;

export interface RevocationList {
  revokeSubject(subject: string, options?: RevokeOptions): void | Promise<void>;
  revokeJti(jti: string, options?: RevokeOptions): void | Promise<void>;
  /** Lifts a revocation early; returns whether there was one. */
  unrevoke(kind: RevocationKind, value: string): boolean | Promise<boolean>;
  isRevoked(identity: Pick<Identity, 'username' | 'jti'>): boolean;
  /** Active entries, for the admin API. */
  list(): RevocationEntry[];
  /** Called for every new revocation (local or, in a shared implementation, from another node). */
  onRevoked(listener: RevocationListener): () => void;
  close(): Promise<void>;
}

export interface MemoryRevocationListOptions {
  readonly now?: () => number;
  readonly onRevokedMetric?: (kind: RevocationKind) => void;
  /** A throwing listener must not stop the others from hearing the revocation. */
  readonly onListenerError?: (err: unknown) => void;
}

/** Single-node revocation list. Expired entries are dropped lazily and on `list()`. */
export class MemoryRevocationList implements RevocationList {
  private readonly subjects = new Map<string, RevocationEntry>();
  private readonly jtis = new Map<string, RevocationEntry>();
  private readonly listeners = new Set<RevocationListener>();
  private readonly now: () => number;

  constructor(private readonly options: MemoryRevocationListOptions = {}) {
    this.now = options.now ?? Date.now;
  }

  revokeSubject(subject: string, options: RevokeOptions = {}): void {
    this.add(this.subjects, { kind: 'subject', value: subject, revokedAtMs: this.now(), ...options });
  }

  revokeJti(jti: string, options: RevokeOptions = {}): void {
    this.add(this.jtis, { kind: 'jti', value: jti, revokedAtMs: this.now(), ...options });
  }

  unrevoke(kind: RevocationKind, value: string): boolean {
    return (kind === 'subject' ? this.subjects : this.jtis).delete(value);
  }

  isRevoked(identity: Pick<Identity, 'username' | 'jti'>): boolean {
    if (this.subjects.size > 0 && this.active(this.subjects, identity.username)) return true;
    return identity.jti !== undefined && this.jtis.size > 0 && this.active(this.jtis, identity.jti);
  }

  list(): RevocationEntry[] {
    const now = this.now();
    const out: RevocationEntry[] = [];
    for (const map of [this.subjects, this.jtis]) {
      for (const [value, entry] of map) {
        if (entry.untilMs !== undefined && entry.untilMs <= now) map.delete(value);
        else out.push(entry);
      }
    }
    return out;
  }

  onRevoked(listener: RevocationListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.listeners.clear();
  }

  private add(map: Map<string, RevocationEntry>, entry: RevocationEntry): void {
    if (entry.untilMs !== undefined && entry.untilMs <= entry.revokedAtMs) return;
    map.set(entry.value, entry);
    this.options.onRevokedMetric?.(entry.kind);
    for (const listener of this.listeners) {
      try {
        listener(entry);
      } catch (err) {
        this.options.onListenerError?.(err);
      }
    }
  }

  private active(map: Map<string, RevocationEntry>, value: string): boolean {
    const entry = map.get(value);
    if (!entry) return false;
    if (entry.untilMs !== undefined && entry.untilMs <= this.now()) {
      map.delete(value);
      return false;
    }
    return true;
  }
}

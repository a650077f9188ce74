// Revocations shared by every node: a Redis hash holds the entries, a pub/sub channel
// announces each new one, and every node keeps a local mirror so `isRevoked` stays
// synchronous on the hot paths. A revocation on any node disconnects the subject's live
// connections on every node (listeners run for remote entries too) within one pub/sub hop.
import type { Identity } from '../auth/types.js';
import type { RevocationEntry, RevocationKind, RevocationList, RevocationListener, RevokeOptions } from '../auth/revocation.js';
import type { Logger } from '../log.js';
import type { ClusterKeys } from './keys.js';
import type { RedisConnection, VigilRedis } from '../redis/connection.js';
import { closeConnection } from '../redis/connection.js';

export interface RedisRevocationOptions {
  readonly redis: VigilRedis;
  readonly keys: ClusterKeys;
  readonly log?: Logger;
  readonly now?: () => number;
  readonly onRevokedMetric?: (kind: RevocationKind) => void;
}

const field = (kind: RevocationKind, value: string) => `${kind}:${value}`;

export class RedisRevocationList implements RevocationList {
  private readonly entries = new Map<string, RevocationEntry>();
  private readonly listeners = new Set<RevocationListener>();
  private subscriber?: RedisConnection;
  private readonly now: () => number;

  constructor(private readonly o: RedisRevocationOptions) {
    this.now = o.now ?? Date.now;
  }

  /** Subscribes first, then loads every entry, so none can fall between the two. */
  async start(): Promise<void> {
    const sub = this.o.redis.duplicate();
    this.subscriber = sub;
    sub.on('message', (_channel: string, text: string) => this.received(text));
    sub.on('ready', () => void this.reload().catch((err: Error) => this.o.log?.warn({ err: err.message }, 'revocation reload failed')));
    await sub.subscribe(this.o.keys.revocationsChannel);
    await this.reload();
  }

  private async reload(): Promise<void> {
    const all = await this.o.redis.client.hgetall(this.o.keys.revocations);
    for (const text of Object.values(all)) this.received(text);
  }

  private received(text: string): void {
    let entry: RevocationEntry;
    try {
      entry = JSON.parse(text) as RevocationEntry;
    } catch {
      return;
    }
    if (entry.kind !== 'subject' && entry.kind !== 'jti') return;
    this.apply(entry);
  }

  /** Adds an entry to the mirror; listeners hear it once per node, whoever revoked it. */
  private apply(entry: RevocationEntry): void {
    if (entry.untilMs !== undefined && entry.untilMs <= this.now()) return;
    const key = field(entry.kind, entry.value);
    const known = this.entries.get(key);
    if (known && known.revokedAtMs >= entry.revokedAtMs) return;
    this.entries.set(key, entry);
    this.o.onRevokedMetric?.(entry.kind);
    for (const listener of this.listeners) {
      try {
        listener(entry);
      } catch (err) {
        this.o.log?.error({ err: String(err) }, 'revocation listener failed');
      }
    }
  }

  revokeSubject(subject: string, options: RevokeOptions = {}): Promise<void> {
    return this.revoke({ kind: 'subject', value: subject, revokedAtMs: this.now(), ...options });
  }

  revokeJti(jti: string, options: RevokeOptions = {}): Promise<void> {
    return this.revoke({ kind: 'jti', value: jti, revokedAtMs: this.now(), ...options });
  }

  private async revoke(entry: RevocationEntry): Promise<void> {
    const text = JSON.stringify(entry);
    await this.o.redis.client.multi().hset(this.o.keys.revocations, field(entry.kind, entry.value), text).publish(this.o.keys.revocationsChannel, text).exec();
    this.apply(entry);
  }

  async unrevoke(kind: RevocationKind, value: string): Promise<boolean> {
    const removed = await this.o.redis.client.hdel(this.o.keys.revocations, field(kind, value));
    this.entries.delete(field(kind, value));
    return removed > 0;
  }

  isRevoked(identity: Pick<Identity, 'username' | 'jti'>): boolean {
    if (this.entries.size === 0) return false;
    return this.active(field('subject', identity.username)) || (identity.jti !== undefined && this.active(field('jti', identity.jti)));
  }

  private active(key: string): boolean {
    const e = this.entries.get(key);
    if (!e) return false;
    if (e.untilMs !== undefined && e.untilMs <= this.now()) {
      this.entries.delete(key);
      return false;
    }
    return true;
  }

  list(): RevocationEntry[] {
    const now = this.now();
    return [...this.entries.values()].filter((e) => e.untilMs === undefined || e.untilMs > now);
  }

  onRevoked(listener: RevocationListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.listeners.clear();
    const sub = this.subscriber;
    this.subscriber = undefined;
    if (sub) await closeConnection(sub);
  }
}

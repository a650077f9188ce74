// Retained messages in Redis, mirrored in memory on every node so that match() stays
// synchronous and fast. Writes go through retain-set.lua (fenced by writer incarnation, see
// docs/cluster.md "Retained fencing"), which announces each change on a channel in the
// order Redis applied it; each node applies announcements to its mirror, ignoring any whose
// sequence number is not newer than what the mirror holds for that topic. A (re)load
// subscribes first, then scans the hash, so no change can fall between the two.
import type { Logger } from '../../log.js';
import type { Metrics } from '../../metrics.js';
import type { RetainedCursor, RetainedStore, StoredMessage } from '../types.js';
import { MemoryRetainedStore } from '../memory/retained.js';
import type { StoreKeys } from './keys.js';
import type { RedisConnection, VigilRedis } from '../../redis/connection.js';
import { closeConnection, num, str } from '../../redis/connection.js';
import { decodeMessage, encodeMessage } from './codec.js';
import { RetainedFencedError, scriptStatus } from '../errors.js';

export interface RedisRetainedOptions {
  readonly redis: VigilRedis;
  readonly keys: StoreKeys;
  readonly log?: Logger;
  readonly metrics?: Metrics;
  /** How long a delete keeps fencing older incarnations of its writer (default 24 h). */
  readonly tombstoneTtlMs?: number;
}

type Change = { seq: number; topic: string; message?: StoredMessage };

function splitSeq(v: Buffer): { seq: number; rest: Buffer } {
  const nl = v.indexOf(10);
  return { seq: Number(v.toString('latin1', 0, nl)), rest: v.subarray(nl + 1) };
}

export class RedisRetainedStore implements RetainedStore {
  private mirror = new MemoryRetainedStore();
  /** Latest applied sequence per topic, deletes included (so a late older change is ignored). */
  private versions = new Map<string, number>();
  private subscriber?: RedisConnection;
  private loading?: Change[];
  private loadedOnce = false;
  private stopped = false;

  constructor(private readonly o: RedisRetainedOptions) {}

  /** Subscribes and loads every retained message; match() is complete once this resolves. */
  async start(): Promise<void> {
    const sub = this.o.redis.duplicate();
    this.subscriber = sub;
    sub.on('messageBuffer', (_channel: Buffer, payload: Buffer) => this.onAnnouncement(payload));
    sub.on('ready', () => {
      // A reconnect may have lost announcements: reload. ioredis emits 'ready' before it
      // re-sends SUBSCRIBE, so wait a turn and round-trip a PING on the subscriber first:
      // the subscription is then active before the scan starts.
      if (!this.loadedOnce || this.stopped) return;
      setImmediate(() => {
        void (async () => {
          await (sub as unknown as { ping(): Promise<unknown> }).ping().catch(() => undefined);
          await this.reload();
        })().catch((err: Error) => this.o.log?.error({ err: err.message }, 'retained reload failed'));
      });
    });
    await sub.subscribe(this.o.keys.retainedChannel);
    await this.reload();
    this.loadedOnce = true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const sub = this.subscriber;
    this.subscriber = undefined;
    if (sub) await closeConnection(sub);
  }

  /** RetainedStore.set: never rejects (the broker does not await it); failures are logged. */
  async set(message: StoredMessage, writerEpoch?: number): Promise<void> {
    try {
      await this.trySet(message, writerEpoch);
    } catch (err) {
      if (err instanceof RetainedFencedError) {
        // a late write of an older incarnation (a will after its client reconnected elsewhere)
        this.o.metrics?.messagesDroppedTotal.inc({ reason: 'retained_fenced' });
        this.o.log?.info({ topic: message.topic, clientId: message.origin, epoch: writerEpoch }, 'retained write from an older incarnation ignored');
        return;
      }
      this.o.log?.error({ topic: message.topic, err: (err as Error).message }, 'storing retained message failed');
    }
  }

  /**
   * Stores (or, empty payload, deletes) with the fencing rule; `writerEpoch` is the epoch of
   * the publishing client's incarnation (a will: the will record's epoch). Without it the
   * write is not fenced.
   */
  async trySet(message: StoredMessage, writerEpoch?: number): Promise<void> {
    const k = this.o.keys;
    const encoded = message.payload.length === 0 ? '' : encodeMessage(message);
    const reply = (await this.o.redis.run('retainSet', [k.retainedMessages, k.retainedMeta, k.retainedTombstones, k.retainedSeq], [
      message.topic,
      message.origin,
      writerEpoch === undefined ? '' : writerEpoch,
      encoded,
      k.retainedChannel,
      this.o.tombstoneTtlMs ?? 86_400_000,
    ])) as unknown[];
    // 'fenced' throws RetainedFencedError (caught by set())
    scriptStatus('retain-set', reply, { topic: message.topic, clientId: message.origin, epoch: writerEpoch });
    const seq = num(reply[1]);
    // read-your-writes on this node without waiting for the announcement
    if (seq > 0) this.apply({ seq, topic: message.topic, message: encoded === '' ? undefined : message });
  }

  match(filter: string, nowMs: number): StoredMessage[] {
    return this.mirror.match(filter, nowMs);
  }

  /**
   * Over the local mirror. A reload replaces the mirror: a cursor started before it finishes
   * its walk over the mirror it started on (a reload follows a lost subscription, rarely).
   */
  cursor(filter: string): RetainedCursor {
    return this.mirror.cursor(filter);
  }

  count(): number {
    return this.mirror.count();
  }

  private onAnnouncement(payload: Buffer): void {
    let change: Change;
    try {
      const kind = payload[0];
      const { seq, rest } = splitSeq(payload.subarray(1));
      if (kind === 0x53 /* S */) {
        const message = decodeMessage(rest);
        change = { seq, topic: message.topic, message };
      } else {
        change = { seq, topic: rest.toString('utf8') };
      }
    } catch (err) {
      this.o.log?.error({ err: (err as Error).message }, 'bad retained announcement');
      return;
    }
    if (this.loading) this.loading.push(change);
    else this.apply(change);
  }

  private apply(c: Change, mirror = this.mirror, versions = this.versions): void {
    const known = versions.get(c.topic);
    if (known !== undefined && known >= c.seq) return;
    versions.set(c.topic, c.seq);
    if (c.message) mirror.set(c.message);
    else mirror.set({ topic: c.topic, payload: Buffer.alloc(0), qos: 0, retain: true, origin: '' });
  }

  private async reload(): Promise<void> {
    const buffered: Change[] = [];
    this.loading = buffered;
    try {
      const mirror = new MemoryRetainedStore();
      const versions = new Map<string, number>();
      const now = Date.now();
      let cursor = '0';
      do {
        const [next, flat] = await this.o.redis.client.hscanBuffer(this.o.keys.retainedMessages, cursor, 'COUNT', 500);
        cursor = next.toString();
        for (let i = 0; i < flat.length; i += 2) {
          const { seq, rest } = splitSeq(flat[i + 1]);
          const message = decodeMessage(rest);
          if (message.expiresAtMs !== undefined && message.expiresAtMs <= now) continue;
          this.apply({ seq, topic: message.topic, message }, mirror, versions);
        }
      } while (cursor !== '0');
      for (const c of buffered) this.apply(c, mirror, versions);
      this.mirror = mirror;
      this.versions = versions;
    } finally {
      if (this.loading === buffered) this.loading = undefined;
    }
  }
}

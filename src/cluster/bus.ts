// The cross-node bus: a message is forwarded to one node member, once, through a Redis
// Stream per member read with a consumer group. The receiver acknowledges (XACK + XDEL) only
// after its handler has finished (stored the message in sessions / delivered it), so a
// handler failure leaves the entry pending and it is read again. Sends use NOMKSTREAM: only
// the receiving member creates its stream (at start), and the reaper deletes a dead
// member's stream, after which sends to it report `false` instead of piling up.
// Entries are binary (bus-codec.ts).
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { StoredMessage } from '../store/types.js';
import type { ClusterKeys } from './keys.js';
import type { RedisConnection, VigilRedis } from '../redis/connection.js';
import { BatchWriter, decodeEntry, type BusEnvelope, type PublishEnvelope } from './bus-codec.js';
import { scriptStatus } from '../store/errors.js';

export type BusHandler = (envelope: BusEnvelope) => void | Promise<void>;

export interface MessageBusOptions {
  readonly redis: VigilRedis;
  readonly keys: ClusterKeys;
  readonly member: string;
  readonly metrics?: Metrics;
  readonly log?: Logger;
  /** Approximate cap of a member's stream (XADD MAXLEN ~). */
  readonly maxLength?: number;
  readonly blockMs?: number;
  readonly batch?: number;
}

const GROUP = 'vigil';
const NONE: PublishEnvelope['shared'] = [];

/** What is sent to one member in one event-loop turn. */
interface Batch {
  envelopes: BatchWriter;
  /** send() callers, told whether the entry was stored. */
  waiters: { resolve(sent: boolean): void; reject(err: Error): void }[];
  /** post()ed QoS 0 publishes in it (counted when the entry cannot be stored). */
  posts: number;
  /** store()d publishes in it, and the one promise they all wait on. */
  stores: number;
  stored?: { promise: Promise<void>; resolve(): void; reject(err: Error): void };
}
type StreamReply = [Buffer, [Buffer, Buffer[]][]][] | null;

export class MessageBus {
  private selfMember: string;
  private reader?: RedisConnection;
  /** Readers whose stream was found gone with the lease: said once per reader. */
  private readonly reapedLogged = new WeakSet<RedisConnection>();
  private running = false;
  private loop?: Promise<void>;
  private handler?: BusHandler;
  private readonly outgoing = new Map<string, Batch>();
  /** The largest batch of the last flush: a new batch's buffer starts at that size (rarely grown). */
  private batchSizeHint = 1024;

  constructor(private readonly o: MessageBusOptions) {
    this.selfMember = o.member;
  }

  get member(): string {
    return this.selfMember;
  }

  async start(handler: BusHandler): Promise<void> {
    this.handler = handler;
    await this.open();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.reader?.disconnect();
    this.reader = undefined;
    await this.loop;
  }

  /**
   * Switches to the stream of a new member id (after a rejoin). Other nodes keep forwarding
   * to the previous member until they see it reaped; those entries are not read here (the
   * sessions they were for now belong to the reaper): the reaper takes them (takeDead) and
   * delivers them to the sessions it adopted.
   */
  async rejoined(newMember: string): Promise<void> {
    const old = this.reader;
    this.reader = undefined;
    // not awaited: the old loop may sit in a blocked read on a connection that died with
    // Redis; it ends when that read does. The new stream must exist at once, or every
    // forward to this node fails until it does.
    old?.disconnect();
    this.selfMember = newMember;
    await this.open();
  }

  /**
   * The reaper's part: every publish still in a dead member's stream, in order. The stream is
   * first renamed away in one step, so a forward racing the reaper fails (not acknowledged,
   * resent by its publisher) instead of landing after the read and being purged unread.
   */
  async takeDead(member: string): Promise<PublishEnvelope[]> {
    const taken = this.o.keys.nodeBusTaken(member);
    try {
      await this.o.redis.client.rename(this.o.keys.nodeBus(member), taken);
    } catch (err) {
      if (!/no such key/i.test((err as Error).message)) throw err;
    }
    const entries = (await this.o.redis.client.xrangeBuffer(taken, '-', '+')) as [Buffer, Buffer[]][];
    const out: PublishEnvelope[] = [];
    for (const [, fields] of entries) {
      if (!fields || fields.length < 2) continue;
      for (const e of decodeEntry(fields[0], fields[1])) if (e.kind === 'publish') out.push(e);
    }
    return out;
  }

  /**
   * Appends to a member's stream; false when the member has no stream (gone, or never
   * started). Everything sent to one member within an event-loop turn goes as one stream
   * entry (a batch), so Redis work follows the number of turns, not of messages.
   */
  send(member: string, envelope: BusEnvelope): Promise<boolean> {
    const b = this.batchFor(member);
    b.envelopes.add(envelope);
    return new Promise<boolean>((resolve, reject) => b.waiters.push({ resolve, reject }));
  }

  /**
   * A QoS 0 publish for a member's plain subscriptions: sent like send(), but nobody waits
   * for it; a batch that could not be stored is counted (dropped, node_gone) and logged.
   */
  post(member: string, message: StoredMessage, normal: boolean): void {
    const b = this.batchFor(member);
    b.envelopes.add({ kind: 'publish', from: this.selfMember, message, normal, shared: NONE });
    b.posts++;
  }

  /**
   * A publish whose sender waits until it is stored (QoS 1/2): resolves once the entry is in
   * the member's stream, rejects when it is not (no stream: counted dropped, node_gone; or the
   * command failed). Every publish of one batch shares one promise: no promise, waiter or
   * callback of its own per message.
   */
  store(member: string, message: StoredMessage, normal: boolean): Promise<void> {
    const b = this.batchFor(member);
    b.envelopes.add({ kind: 'publish', from: this.selfMember, message, normal, shared: NONE });
    b.stores++;
    if (!b.stored) {
      let resolve!: () => void;
      let reject!: (err: Error) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      b.stored = { promise, resolve, reject };
    }
    return b.stored.promise;
  }

  private batchFor(member: string): Batch {
    let batch = this.outgoing.get(member);
    if (!batch) {
      batch = { envelopes: new BatchWriter(this.batchSizeHint), waiters: [], posts: 0, stores: 0 };
      this.outgoing.set(member, batch);
      if (this.outgoing.size === 1) setImmediate(() => this.flush());
    }
    return batch;
  }

  private flush(): void {
    const all = [...this.outgoing];
    this.outgoing.clear();
    this.batchSizeHint = 1024;
    for (const [member, batch] of all) {
      const count = batch.envelopes.count;
      this.batchSizeHint = Math.max(this.batchSizeHint, batch.envelopes.size);
      const { field, body } = batch.envelopes.finish();
      this.o.redis.client
        .xadd(this.o.keys.nodeBus(member), 'NOMKSTREAM', 'MAXLEN', '~', this.o.maxLength ?? 100_000, '*', field, body)
        .then(
          (id) => {
            if (id !== null) this.o.metrics?.crossNodeMessagesTotal.inc({ direction: 'out' }, count);
            else if (batch.posts + batch.stores > 0) this.o.metrics?.messagesDroppedTotal.inc({ reason: 'node_gone' }, batch.posts + batch.stores);
            for (const w of batch.waiters) w.resolve(id !== null);
            // not stored, so not acknowledged
            if (id !== null) batch.stored?.resolve();
            else batch.stored?.reject(new Error(`no bus stream for ${member}`));
          },
          (err: Error) => {
            if (batch.posts > 0) this.o.log?.warn({ member, messages: batch.posts, err: err.message }, 'QoS 0 forward failed');
            for (const w of batch.waiters) w.reject(err);
            batch.stored?.reject(err);
          },
        );
    }
  }

  forward(member: string, message: StoredMessage, target: { normal: boolean; shared?: PublishEnvelope['shared']; only?: readonly string[]; hops?: number }): Promise<boolean> {
    return this.send(member, { kind: 'publish', from: this.selfMember, message, normal: target.normal, shared: target.shared ?? [], only: target.only, hops: target.hops });
  }

  kick(member: string, clientId: string, epoch: number): Promise<boolean> {
    return this.send(member, { kind: 'kick', from: this.selfMember, clientId, epoch });
  }

  /** The reaper's part, once takeDead's entries are handed on: deletes a dead member's stream. */
  async purge(member: string): Promise<void> {
    await this.o.redis.client.del(this.o.keys.nodeBus(member));
    await this.o.redis.client.del(this.o.keys.nodeBusTaken(member));
  }

  private async open(): Promise<void> {
    const key = this.o.keys.nodeBus(this.selfMember);
    try {
      await this.o.redis.client.xgroup('CREATE', key, GROUP, '$', 'MKSTREAM');
    } catch (err) {
      if (!/BUSYGROUP/.test((err as Error).message)) throw err;
    }
    const reader = this.o.redis.duplicate({ blocking: true });
    const drops = { count: 0 };
    reader.on('close', () => drops.count++);
    this.reader = reader;
    this.running = true;
    this.loop = this.readLoop(reader, key, drops);
  }

  /**
   * This member's stream is gone. Recreated only while the member's lease is still in the
   * leases ZSET (Redis lost the stream, not the member). Without it the member was reaped: the
   * reaper took the stream, and a stream made again here would take forwards that NOMKSTREAM
   * refuses for a dead member, acknowledged to their publishers and read by nobody once this
   * node rejoins as a new member (a node reaped while it still served, until its renewal
   * answers 'reaped'). The loop retries until the rejoin replaces this reader. On one Redis
   * the check and the create are one script (bus-reopen.lua), so a reap cannot fall between
   * them; in a Redis Cluster the two keys are in different slots and a reap between the
   * check and the XGROUP can still recreate it.
   */
  private async streamVanished(key: string, member: string, reader: RedisConnection): Promise<void> {
    const redis = this.o.redis;
    let reopened: boolean;
    if (redis.isCluster) {
      reopened = (await redis.client.zscore(this.o.keys.nodeLeases, member).catch(() => null)) !== null;
      if (reopened) await redis.client.xgroup('CREATE', key, GROUP, '$', 'MKSTREAM').catch(() => undefined);
    } else {
      const reply = await redis.run('busReopen', [this.o.keys.nodeLeases, key], [member, GROUP]).catch(() => undefined);
      // a failed call (Redis away): the read loop runs into NOGROUP again and retries
      if (reply === undefined) return;
      reopened = scriptStatus('bus-reopen', reply, { member }) !== 'gone';
    }
    if (!reopened) {
      if (!this.reapedLogged.has(reader)) this.o.log?.warn({ key, member }, 'bus stream gone with the member\'s lease (reaped): not recreated; waiting for the rejoin');
      this.reapedLogged.add(reader);
      return;
    }
    this.o.log?.error({ key }, 'bus stream vanished; recreating');
  }

  private async readLoop(reader: RedisConnection, key: string, drops: { count: number }): Promise<void> {
    const member = this.selfMember; // whose stream `key` is (open() built it just now)
    // first our own pending entries (read before, never acknowledged), then new ones
    let from = '0';
    let acking: Promise<unknown> = Promise.resolve();
    while (this.running && this.reader === reader) {
      // pending entries are read again only once the acknowledgements sent so far landed
      if (from === '0') await acking;
      let reply: StreamReply;
      const dropsBefore = drops.count;
      try {
        reply = (await reader.callBuffer('XREADGROUP', 'GROUP', GROUP, 'c', 'COUNT', this.o.batch ?? 1000, 'BLOCK', this.o.blockMs ?? 1000, 'STREAMS', key, from)) as StreamReply;
      } catch (err) {
        if (!this.running || this.reader !== reader) return;
        if (/NOGROUP/.test((err as Error).message)) {
          await this.streamVanished(key, member, reader);
        } else {
          this.o.log?.warn({ err: (err as Error).message }, 'bus read failed');
        }
        // Redis may have handed out entries whose reply was lost with the connection: they
        // are pending under this consumer and only a read from '0' returns them
        from = '0';
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      if (drops.count !== dropsBefore) {
        // The connection dropped while this read was out and ioredis sent it again on the new
        // one (autoResendUnfulfilledCommands), so no error came. Redis may have served the
        // first send (a restart that fsyncs on SHUTDOWN keeps that in the AOF) and its reply,
        // with entries now pending under this consumer, died with the connection: a '>' read
        // never returns them again. Read every pending entry from '0', in stream order (this
        // reply's entries are pending too), instead of trusting this reply.
        from = '0';
        continue;
      }
      const entries = reply?.[0]?.[1] ?? [];
      if (from === '0' && entries.length === 0) {
        from = '>';
        continue;
      }
      // Hand every entry of the batch to the handler in stream order (delivery happens as it is
      // called), then wait for their writes together and acknowledge the batch in one XACK and
      // one XDEL; an entry whose handler failed stays pending and is read again.
      const done: string[] = [];
      const waiting: { id: string; result: Promise<void> }[] = [];
      for (const [idBuf, fields] of entries) {
        const id = idBuf.toString();
        if (!fields || fields.length < 2) {
          done.push(id); // deleted while pending: nothing to deliver
          continue;
        }
        try {
          const envelopes = decodeEntry(fields[0], fields[1]);
          this.o.metrics?.crossNodeMessagesTotal.inc({ direction: 'in' }, envelopes.length);
          const results: Promise<void>[] = [];
          for (const envelope of envelopes) {
            const result = this.handler!(envelope);
            if (result instanceof Promise) results.push(result);
          }
          if (results.length > 0) waiting.push({ id, result: Promise.all(results).then(() => undefined) });
          else done.push(id);
        } catch (err) {
          // stop here: this entry and the ones after it stay pending and come again, in order
          this.o.log?.error({ id, err: (err as Error).message }, 'bus handler failed; will retry');
          break;
        }
      }
      const settled = await Promise.allSettled(waiting.map((w) => w.result));
      let failed = false;
      settled.forEach((r, i) => {
        if (r.status === 'fulfilled') done.push(waiting[i].id);
        else {
          failed = true;
          this.o.log?.error({ id: waiting[i].id, err: (r.reason as Error)?.message }, 'bus handler failed; will retry');
        }
      });
      // a read of new entries does not wait for the acknowledgement (one round trip less per
      // batch); an entry whose acknowledgement is lost stays pending and comes again after a failure
      if (done.length > 0) acking = this.ack(key, done).catch((err: Error) => this.o.log?.warn({ err: err.message }, 'bus ack failed'));
      if (failed || done.length < entries.length) {
        from = '0';
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  private async ack(key: string, ids: string[]): Promise<void> {
    await Promise.all([this.o.redis.client.xack(key, GROUP, ...ids), this.o.redis.client.xdel(key, ...ids)]);
  }
}

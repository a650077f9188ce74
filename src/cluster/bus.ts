// The cross-node bus: a message is forwarded to one node member, once, through a Redis
// Stream per member read with a consumer group. The receiver acknowledges (XACK + XDEL) only
// after its handler has finished (stored the message in sessions / delivered it), so a
// handler failure leaves the entry pending and it is read again. Sends use NOMKSTREAM: only
// the receiving member creates its stream (at start), and the reaper deletes a dead
// member's stream, after which sends to it report `false` instead of piling up.
// Entries are binary. A publish (the hot path) is one flat record, no JSON unless it carries
// rarely used parts (encodePublish); a kick is a codec frame {k, f, ...}.
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { MessageProperties, StoredMessage } from '../store/types.js';
import type { ClusterKeys } from './keys.js';
import type { RedisConnection, VigilRedis } from '../redis/connection.js';
import { decodeFramed, decodeMessage, encodeFramed, encodeMessage } from '../store/redis/codec.js';

export interface PublishEnvelope {
  readonly kind: 'publish';
  readonly from: string;
  readonly message: StoredMessage;
  /** Deliver to the receiver's matching non-shared subscriptions. */
  readonly normal: boolean;
  /** Shared groups the receiver was picked for: it delivers to one local member of each. */
  readonly shared: readonly { readonly group: string; readonly filter: string }[];
  /** Only these sessions may get it (a reaper re-delivering a dead node's entries to where its clients went). */
  readonly only?: readonly string[];
  /** How many times this message was handed on after its session moved (bounds the chase). */
  readonly hops?: number;
}

export interface KickEnvelope {
  readonly kind: 'kick';
  readonly from: string;
  /** The connection of this client with an epoch below `epoch` must close (taken over). */
  readonly clientId: string;
  readonly epoch: number;
}

export type BusEnvelope = PublishEnvelope | KickEnvelope;
export type BusHandler = (envelope: BusEnvelope) => void | Promise<void>;

interface Header {
  k: 'p' | 'k';
  f: string;
  n?: 1;
  s?: [string, string][];
  c?: string;
  e?: number;
  o?: string[];
  h?: number;
}

export function encodeEnvelope(e: BusEnvelope): Buffer {
  if (e.kind === 'kick') return encodeFramed({ k: 'k', f: e.from, c: e.clientId, e: e.epoch } satisfies Header, Buffer.alloc(0));
  const flat = encodePublish(e);
  if (flat) return flat;
  const h: Header = { k: 'p', f: e.from };
  if (e.normal) h.n = 1;
  if (e.shared.length > 0) h.s = e.shared.map((s) => [s.group, s.filter]);
  if (e.only) h.o = [...e.only];
  if (e.hops) h.h = e.hops;
  return encodeFramed(h, encodeMessage(e.message));
}

// A flat publish record:
//   u8 PUBLISH_FLAT | u8 flags | str from | str topic | str origin | [str id] | [f64 BE expiresAtMs]
//   | [u32 BE n | n bytes JSON: shared groups, only, hops, properties] | payload (the rest)
// where str = u16 BE byte length + UTF-8. A JSON-framed value starts with a u32 header length,
// whose first byte is never PUBLISH_FLAT (headers are far below 0xB1000000 bytes).
const PUBLISH_FLAT = 0xb1;
const F_NORMAL = 1;
const F_RETAIN = 2;
const F_ID = 4;
const F_EXPIRES = 8;
const F_EXTRA = 16;
const QOS_SHIFT = 5;

interface PublishExtra {
  s?: [string, string][];
  o?: string[];
  h?: number;
  p?: Omit<MessageProperties, 'correlationData'> & { correlationData?: string };
}

/** The flat encoding of a publish envelope, or undefined when a string is too long for it. */
function encodePublish(e: PublishEnvelope): Buffer | undefined {
  const m = e.message;
  let flags = (m.qos << QOS_SHIFT) | (e.normal ? F_NORMAL : 0) | (m.retain ? F_RETAIN : 0);
  let extra: Buffer | undefined;
  if (e.shared.length > 0 || e.only || e.hops || m.properties) {
    const x: PublishExtra = {};
    if (e.shared.length > 0) x.s = e.shared.map((s) => [s.group, s.filter]);
    if (e.only) x.o = [...e.only];
    if (e.hops) x.h = e.hops;
    if (m.properties) {
      const { correlationData, ...rest } = m.properties;
      x.p = correlationData ? { ...rest, correlationData: correlationData.toString('base64') } : rest;
    }
    extra = Buffer.from(JSON.stringify(x), 'utf8');
    flags |= F_EXTRA;
  }
  const fromLen = Buffer.byteLength(e.from);
  const topicLen = Buffer.byteLength(m.topic);
  const originLen = Buffer.byteLength(m.origin);
  const idLen = m.id === undefined ? 0 : Buffer.byteLength(m.id);
  if (fromLen > 0xffff || topicLen > 0xffff || originLen > 0xffff || idLen > 0xffff) return undefined;
  let size = 2 + 2 + fromLen + 2 + topicLen + 2 + originLen + m.payload.length;
  if (m.id !== undefined) {
    flags |= F_ID;
    size += 2 + idLen;
  }
  if (m.expiresAtMs !== undefined) {
    flags |= F_EXPIRES;
    size += 8;
  }
  if (extra) size += 4 + extra.length;
  const out = Buffer.allocUnsafe(size);
  out[0] = PUBLISH_FLAT;
  out[1] = flags;
  let at = out.writeUInt16BE(fromLen, 2);
  at += out.write(e.from, at, 'utf8');
  at = out.writeUInt16BE(topicLen, at);
  at += out.write(m.topic, at, 'utf8');
  at = out.writeUInt16BE(originLen, at);
  at += out.write(m.origin, at, 'utf8');
  if (m.id !== undefined) {
    at = out.writeUInt16BE(idLen, at);
    at += out.write(m.id, at, 'utf8');
  }
  if (m.expiresAtMs !== undefined) at = out.writeDoubleBE(m.expiresAtMs, at);
  if (extra) {
    at = out.writeUInt32BE(extra.length, at);
    at += extra.copy(out, at);
  }
  m.payload.copy(out, at);
  return out;
}

function decodePublish(buf: Buffer): PublishEnvelope {
  let at = 2;
  const take = (n: number): number => {
    if (at + n > buf.length) throw new Error('bus entry truncated');
    const from = at;
    at += n;
    return from;
  };
  const str = (): string => {
    const n = buf.readUInt16BE(take(2));
    const from = take(n);
    return buf.toString('utf8', from, from + n);
  };
  const flags = buf[1];
  const from = str();
  const message: StoredMessage = { topic: str(), payload: EMPTY, qos: ((flags >> QOS_SHIFT) & 3) as 0 | 1 | 2, retain: (flags & F_RETAIN) !== 0, origin: str() };
  if (flags & F_ID) message.id = str();
  if (flags & F_EXPIRES) message.expiresAtMs = buf.readDoubleBE(take(8));
  let x: PublishExtra = {};
  if (flags & F_EXTRA) {
    const n = buf.readUInt32BE(take(4));
    const start = take(n);
    x = JSON.parse(buf.toString('utf8', start, start + n)) as PublishExtra;
  }
  if (x.p) {
    const { correlationData, ...rest } = x.p;
    message.properties = correlationData !== undefined ? { ...rest, correlationData: Buffer.from(correlationData, 'base64') } : rest;
  }
  // a copy: the entry is a view into a reply buffer that queued messages must not pin
  message.payload = Buffer.from(buf.subarray(at));
  const e: PublishEnvelope = { kind: 'publish', from, message, normal: (flags & F_NORMAL) !== 0, shared: (x.s ?? []).map(([group, filter]) => ({ group, filter })) };
  return x.o ? { ...e, only: x.o, hops: x.h ?? 0 } : e;
}

const EMPTY = Buffer.alloc(0);

export function decodeEnvelope(buf: Buffer): BusEnvelope {
  if (buf[0] === PUBLISH_FLAT) return decodePublish(buf);
  const { header: h, body } = decodeFramed<Header>(buf);
  if (h.k === 'k') return { kind: 'kick', from: h.f, clientId: h.c ?? '', epoch: h.e ?? 0 };
  const e: PublishEnvelope = { kind: 'publish', from: h.f, message: decodeMessage(body), normal: h.n === 1, shared: (h.s ?? []).map(([group, filter]) => ({ group, filter })) };
  return h.o ? { ...e, only: h.o, hops: h.h ?? 0 } : e;
}

/** Several envelopes in one stream entry: [u32 length][envelope] repeated. */
function encodeBatch(frames: readonly Buffer[]): Buffer {
  let size = 0;
  for (const f of frames) size += 4 + f.length;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const f of frames) {
    out.writeUInt32BE(f.length, at);
    f.copy(out, at + 4);
    at += 4 + f.length;
  }
  return out;
}

function decodeBatch(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at + 4 <= buf.length; ) {
    const n = buf.readUInt32BE(at);
    out.push(buf.subarray(at + 4, at + 4 + n));
    at += 4 + n;
  }
  return out;
}

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
  frames: Buffer[];
  /** send() callers, told whether the entry was stored. */
  waiters: { resolve(sent: boolean): void; reject(err: Error): void }[];
  /** post()ed QoS 0 publishes in it (counted when the entry cannot be stored). */
  posts: number;
}
type StreamReply = [Buffer, [Buffer, Buffer[]][]][] | null;

export class MessageBus {
  private selfMember: string;
  private reader?: RedisConnection;
  private running = false;
  private loop?: Promise<void>;
  private handler?: BusHandler;
  private readonly outgoing = new Map<string, Batch>();

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
      const frames = fields[0].toString() === 'b' ? decodeBatch(fields[1]) : [fields[1]];
      for (const frame of frames) {
        const e = decodeEnvelope(frame);
        if (e.kind === 'publish') out.push(e);
      }
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
    b.frames.push(encodeEnvelope(envelope));
    return new Promise<boolean>((resolve, reject) => b.waiters.push({ resolve, reject }));
  }

  /**
   * A QoS 0 publish for a member's plain subscriptions: sent like send(), but nobody waits
   * for it; a batch that could not be stored is counted (dropped, node_gone) and logged.
   */
  post(member: string, message: StoredMessage, normal: boolean): void {
    const b = this.batchFor(member);
    b.frames.push(encodeEnvelope({ kind: 'publish', from: this.selfMember, message, normal, shared: NONE }));
    b.posts++;
  }

  private batchFor(member: string): Batch {
    let batch = this.outgoing.get(member);
    if (!batch) {
      batch = { frames: [], waiters: [], posts: 0 };
      this.outgoing.set(member, batch);
      if (this.outgoing.size === 1) setImmediate(() => this.flush());
    }
    return batch;
  }

  private flush(): void {
    const all = [...this.outgoing];
    this.outgoing.clear();
    for (const [member, batch] of all) {
      const body = batch.frames.length === 1 ? batch.frames[0] : encodeBatch(batch.frames);
      this.o.redis.client
        .xadd(this.o.keys.nodeBus(member), 'NOMKSTREAM', 'MAXLEN', '~', this.o.maxLength ?? 100_000, '*', batch.frames.length === 1 ? 'm' : 'b', body)
        .then(
          (id) => {
            if (id !== null) this.o.metrics?.crossNodeMessagesTotal.inc({ direction: 'out' }, batch.frames.length);
            else if (batch.posts > 0) this.o.metrics?.messagesDroppedTotal.inc({ reason: 'node_gone' }, batch.posts);
            for (const w of batch.waiters) w.resolve(id !== null);
          },
          (err: Error) => {
            if (batch.posts > 0) this.o.log?.warn({ member, messages: batch.posts, err: err.message }, 'QoS 0 forward failed');
            for (const w of batch.waiters) w.reject(err);
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
    this.reader = this.o.redis.duplicate({ blocking: true });
    this.running = true;
    this.loop = this.readLoop(this.reader, key);
  }

  private async readLoop(reader: RedisConnection, key: string): Promise<void> {
    // first our own pending entries (read before, never acknowledged), then new ones
    let from = '0';
    let acking: Promise<unknown> = Promise.resolve();
    while (this.running && this.reader === reader) {
      // pending entries are read again only once the acknowledgements sent so far landed
      if (from === '0') await acking;
      let reply: StreamReply;
      try {
        reply = (await reader.callBuffer('XREADGROUP', 'GROUP', GROUP, 'c', 'COUNT', this.o.batch ?? 1000, 'BLOCK', this.o.blockMs ?? 1000, 'STREAMS', key, from)) as StreamReply;
      } catch (err) {
        if (!this.running || this.reader !== reader) return;
        if (/NOGROUP/.test((err as Error).message)) {
          this.o.log?.error({ key }, 'bus stream vanished (reaped?); recreating');
          await this.o.redis.client.xgroup('CREATE', key, GROUP, '$', 'MKSTREAM').catch(() => undefined);
        } else {
          this.o.log?.warn({ err: (err as Error).message }, 'bus read failed');
        }
        // Redis may have handed out entries whose reply was lost with the connection: they
        // are pending under this consumer and only a read from '0' returns them
        from = '0';
        await new Promise((r) => setTimeout(r, 200));
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
          const frames = fields[0].toString() === 'b' ? decodeBatch(fields[1]) : [fields[1]];
          this.o.metrics?.crossNodeMessagesTotal.inc({ direction: 'in' }, frames.length);
          const results: Promise<void>[] = [];
          for (const frame of frames) {
            const result = this.handler!(decodeEnvelope(frame));
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

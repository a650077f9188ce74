// The bus's wire format: what one Redis stream entry holds. A publish (the hot path) is one
// flat binary record, no JSON unless it carries rarely used parts (BatchWriter.publish); a kick is
// a codec frame {k, f, ...}. Several envelopes sent to one member in one event-loop turn go
// as one entry (BatchWriter, decodeEntry). The reader loop that moves these is bus.ts.
import type { MessageProperties, StoredMessage } from '../store/types.js';
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

/** One envelope on its own (the value of an `m` entry). */
export function encodeEnvelope(e: BusEnvelope): Buffer {
  const w = new BatchWriter();
  w.add(e);
  return w.finish().body;
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
/** The most a str field may hold; a longer string sends the envelope JSON-framed. */
const STR_MAX = 0xffff;

interface PublishExtra {
  s?: [string, string][];
  o?: string[];
  h?: number;
  p?: Omit<MessageProperties, 'correlationData'> & { correlationData?: string };
}

function publishExtra(e: PublishEnvelope): Buffer | undefined {
  const m = e.message;
  if (!(e.shared.length > 0 || e.only || e.hops || m.properties)) return undefined;
  const x: PublishExtra = {};
  if (e.shared.length > 0) x.s = e.shared.map((s) => [s.group, s.filter]);
  if (e.only) x.o = [...e.only];
  if (e.hops) x.h = e.hops;
  if (m.properties) {
    const { correlationData, ...rest } = m.properties;
    x.p = correlationData ? { ...rest, correlationData: correlationData.toString('base64') } : rest;
  }
  return Buffer.from(JSON.stringify(x), 'utf8');
}

/** Whether a string's UTF-8 form fits a str field (no counting for the usual short strings). */
function fitsStr(s: string): boolean {
  // a UTF-16 unit is at most 3 UTF-8 bytes
  return s.length * 3 <= STR_MAX || Buffer.byteLength(s) <= STR_MAX;
}

/**
 * Envelopes for one member, written straight into one buffer in the batch format
 * ([u32 length][envelope] repeated): no buffer per message and no copy into a batch afterwards.
 * The usual publish (short ASCII strings) is written byte by byte: for strings of a few dozen
 * characters that is cheaper than a call into Buffer.write.
 */
export class BatchWriter {
  private buf: Buffer;
  private at = 0;
  private frames = 0;
  /** The last from string and its bytes (a node sends every publish under its own member id). */
  private fromStr = '';
  private fromBuf = EMPTY;

  constructor(sizeHint = 1024) {
    this.buf = Buffer.allocUnsafe(Math.max(256, sizeHint));
  }

  get count(): number {
    return this.frames;
  }

  get size(): number {
    return this.at;
  }

  add(e: BusEnvelope): void {
    const start = this.at;
    try {
      this.ensure(4);
      this.at += 4;
      if (e.kind !== 'publish' || !this.publish(e)) {
        const framed = encodeFramedEnvelope(e);
        this.ensure(framed.length);
        this.buf.set(framed, this.at);
        this.at += framed.length;
      }
    } catch (err) {
      this.at = start; // the batch stays whole without it
      throw err;
    }
    this.buf.writeUInt32BE(this.at - start - 4, start);
    this.frames++;
  }

  /** The stream entry: one envelope alone under field `m`, several as a batch under `b`. */
  finish(): { field: 'm' | 'b'; body: Buffer } {
    const body = this.frames === 1 ? this.buf.subarray(4, this.at) : this.buf.subarray(0, this.at);
    // a body much smaller than its buffer would pin the rest while the command is queued
    return { field: this.frames === 1 ? 'm' : 'b', body: body.length * 2 < this.buf.length ? Buffer.from(body) : body };
  }

  private ensure(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + n));
    this.buf.copy(grown, 0, 0, this.at);
    this.buf = grown;
  }

  /** The flat record; false when a string is too long for it (the caller frames it as JSON). */
  private publish(e: PublishEnvelope): boolean {
    const m = e.message;
    if (!fitsStr(e.from) || !fitsStr(m.topic) || !fitsStr(m.origin) || (m.id !== undefined && !fitsStr(m.id))) return false;
    const extra = publishExtra(e);
    let flags = (m.qos << QOS_SHIFT) | (e.normal ? F_NORMAL : 0) | (m.retain ? F_RETAIN : 0);
    if (m.id !== undefined) flags |= F_ID;
    if (m.expiresAtMs !== undefined) flags |= F_EXPIRES;
    if (extra) flags |= F_EXTRA;
    this.ensure(2);
    this.buf[this.at++] = PUBLISH_FLAT;
    this.buf[this.at++] = flags;
    if (e.from !== this.fromStr) {
      this.fromStr = e.from;
      this.fromBuf = Buffer.from(e.from, 'utf8');
    }
    this.ensure(2 + this.fromBuf.length);
    this.buf.writeUInt16BE(this.fromBuf.length, this.at);
    this.buf.set(this.fromBuf, this.at + 2);
    this.at += 2 + this.fromBuf.length;
    this.str(m.topic);
    this.str(m.origin);
    if (m.id !== undefined) this.str(m.id);
    if (m.expiresAtMs !== undefined) {
      this.ensure(8);
      this.at = this.buf.writeDoubleBE(m.expiresAtMs, this.at);
    }
    if (extra) {
      this.ensure(4 + extra.length);
      this.at = this.buf.writeUInt32BE(extra.length, this.at);
      this.buf.set(extra, this.at);
      this.at += extra.length;
    }
    this.ensure(m.payload.length);
    this.buf.set(m.payload, this.at);
    this.at += m.payload.length;
    return true;
  }

  /** A str field (its length fits, checked by the caller). */
  private str(s: string): void {
    const n = s.length;
    this.ensure(2 + 3 * n);
    const buf = this.buf;
    const at = this.at + 2;
    let i = 0;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7f) break;
      buf[at + i] = c;
    }
    const len = i === n ? n : buf.write(s, at, 'utf8');
    buf[this.at] = len >>> 8;
    buf[this.at + 1] = len & 0xff;
    this.at = at + len;
  }
}

function encodeFramedEnvelope(e: BusEnvelope): Buffer {
  if (e.kind === 'kick') return encodeFramed({ k: 'k', f: e.from, c: e.clientId, e: e.epoch } satisfies Header, Buffer.alloc(0));
  const h: Header = { k: 'p', f: e.from };
  if (e.normal) h.n = 1;
  if (e.shared.length > 0) h.s = e.shared.map((s) => [s.group, s.filter]);
  if (e.only) h.o = [...e.only];
  if (e.hops) h.h = e.hops;
  return encodeFramed(h, encodeMessage(e.message));
}

/**
 * Strings the receiving node decodes again and again (the sending member, topics, publishers'
 * client ids) come from a small table: no native call per string, and the same string object
 * each time, whose hash the route cache's Map lookup has already computed. Direct-mapped by a
 * hash of the bytes, compared byte for byte on a hit; only ASCII strings of up to 64 bytes.
 */
const INTERN_SLOTS = 512;
const INTERN_MAX = 64;
const internBytes: (Buffer | undefined)[] = new Array(INTERN_SLOTS);
const internStrs: string[] = new Array(INTERN_SLOTS);

function decodeStr(buf: Buffer, start: number, end: number): string {
  const n = end - start;
  if (n === 0) return '';
  if (n > INTERN_MAX) return buf.toString('utf8', start, end);
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) {
    const c = buf[i];
    if (c > 0x7f) return buf.toString('utf8', start, end);
    h = Math.imul(h ^ c, 0x01000193);
  }
  const slot = (h ^ (h >>> 15)) & (INTERN_SLOTS - 1);
  const known = internBytes[slot];
  if (known !== undefined && known.length === n) {
    let i = 0;
    while (i < n && known[i] === buf[start + i]) i++;
    if (i === n) return internStrs[slot];
  }
  const s = buf.toString('latin1', start, end);
  const copy = Buffer.allocUnsafeSlow(n);
  buf.copy(copy, 0, start, end);
  internBytes[slot] = copy;
  internStrs[slot] = s;
  return s;
}

/** Decodes the flat record in buf[start, end). */
function decodePublish(buf: Buffer, start: number, end: number): PublishEnvelope {
  let at = start + 2;
  const flags = buf[start + 1];
  // str fields: u16 length, then bytes; any field running past the end is a truncated entry
  if (at + 2 > end) throw truncated();
  let n = (buf[at] << 8) | buf[at + 1];
  if ((at += 2) + n > end) throw truncated();
  const from = decodeStr(buf, at, (at += n));
  if (at + 2 > end) throw truncated();
  n = (buf[at] << 8) | buf[at + 1];
  if ((at += 2) + n > end) throw truncated();
  const topic = decodeStr(buf, at, (at += n));
  if (at + 2 > end) throw truncated();
  n = (buf[at] << 8) | buf[at + 1];
  if ((at += 2) + n > end) throw truncated();
  const origin = decodeStr(buf, at, (at += n));
  const message: StoredMessage = { topic, payload: EMPTY, qos: ((flags >> QOS_SHIFT) & 3) as 0 | 1 | 2, retain: (flags & F_RETAIN) !== 0, origin };
  if (flags & F_ID) {
    if (at + 2 > end) throw truncated();
    n = (buf[at] << 8) | buf[at + 1];
    if ((at += 2) + n > end) throw truncated();
    // unique per message: not worth a table slot
    message.id = buf.toString('utf8', at, (at += n));
  }
  if (flags & F_EXPIRES) {
    if (at + 8 > end) throw truncated();
    message.expiresAtMs = buf.readDoubleBE(at);
    at += 8;
  }
  let x: PublishExtra | undefined;
  if (flags & F_EXTRA) {
    if (at + 4 > end) throw truncated();
    n = buf.readUInt32BE(at);
    if ((at += 4) + n > end) throw truncated();
    x = JSON.parse(buf.toString('utf8', at, (at += n))) as PublishExtra;
    if (x.p) {
      const { correlationData, ...rest } = x.p;
      message.properties = correlationData !== undefined ? { ...rest, correlationData: Buffer.from(correlationData, 'base64') } : rest;
    }
  }
  // A view into the Redis reply, not a copy, as a PUBLISH's payload is a view into its socket
  // chunk: a message kept for long (queued for a subscriber, retained) gets bytes of its own
  // there (store/own-payload.ts). Copying here cost a pool allocation and a copy per message,
  // and a queued message was then copied a second time. But a message in flight to a
  // subscriber that never acknowledges is kept too, and a bus entry is a whole turn's batch
  // (one buffer of its own size when the reply spanned socket reads): the view is kept only
  // while what it pins is no larger than a socket chunk, else the payload is copied, so a
  // held message never pins more than a PUBLISH read from a socket does.
  if (end > at) {
    const view = buf.subarray(at, end);
    message.payload = view.buffer.byteLength <= VIEW_PIN_MAX ? view : Buffer.from(view);
  }
  const e: PublishEnvelope = { kind: 'publish', from, message, normal: (flags & F_NORMAL) !== 0, shared: x?.s ? x.s.map(([group, filter]) => ({ group, filter })) : NO_SHARED };
  return x?.o ? { ...e, only: x.o, hops: x.h ?? 0 } : e;
}

const truncated = (): Error => new Error('bus entry truncated');
/** The most memory a payload view into a bus entry may keep alive: a socket read's chunk (64 KiB). */
const VIEW_PIN_MAX = 64 * 1024;
const NO_SHARED: PublishEnvelope['shared'] = Object.freeze([]) as PublishEnvelope['shared'];

const EMPTY = Buffer.alloc(0);

export function decodeEnvelope(buf: Buffer): BusEnvelope {
  return decodeAt(buf, 0, buf.length);
}

function decodeAt(buf: Buffer, start: number, end: number): BusEnvelope {
  if (buf[start] === PUBLISH_FLAT) return decodePublish(buf, start, end);
  const { header: h, body } = decodeFramed<Header>(buf.subarray(start, end));
  if (h.k === 'k') return { kind: 'kick', from: h.f, clientId: h.c ?? '', epoch: h.e ?? 0 };
  const e: PublishEnvelope = { kind: 'publish', from: h.f, message: decodeMessage(body), normal: h.n === 1, shared: (h.s ?? []).map(([group, filter]) => ({ group, filter })) };
  return h.o ? { ...e, only: h.o, hops: h.h ?? 0 } : e;
}

const BATCH_FIELD = 0x62; // 'b'

/**
 * The envelopes of one stream entry, in order: field `m` holds one, field `b` a batch
 * ([u32 length][envelope] repeated, BatchWriter). Throws on a damaged entry before returning any.
 */
export function decodeEntry(field: Buffer, body: Buffer): BusEnvelope[] {
  if (!(field.length === 1 && field[0] === BATCH_FIELD)) return [decodeAt(body, 0, body.length)];
  const out: BusEnvelope[] = [];
  for (let at = 0; at + 4 <= body.length; ) {
    const end = at + 4 + body.readUInt32BE(at);
    if (end > body.length) throw truncated();
    out.push(decodeAt(body, at + 4, end));
    at = end;
  }
  return out;
}

// The bus's wire format: what one Redis stream entry holds. A publish (the hot path) is one
// flat binary record, no JSON unless it carries rarely used parts (encodePublish); a kick is
// a codec frame {k, f, ...}. Several envelopes sent to one member in one event-loop turn go
// as one entry (encodeBatch). The reader loop that moves these is bus.ts.
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
export function encodeBatch(frames: readonly Buffer[]): Buffer {
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

export function decodeBatch(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at + 4 <= buf.length; ) {
    const n = buf.readUInt32BE(at);
    out.push(buf.subarray(at + 4, at + 4 + n));
    at += 4 + n;
  }
  return out;
}

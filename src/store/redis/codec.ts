// Compact binary encodings of what crosses Redis: a small JSON header followed by the raw
// payload bytes (no base64 for payloads). Layout of every encoding:
//   u32 BE header length | header (UTF-8 JSON) | body
// StoredMessage: body = payload. PendingMessage / WillRecord / bus envelope: body = an
// encoded StoredMessage. Lua never parses these; it stores and returns them whole.
import type { PendingMessage, StoredMessage, WillRecord, MessageProperties } from '../types.js';

interface MessageHeader {
  t: string;
  q: 0 | 1 | 2;
  r?: 1;
  o: string;
  x?: number;
  u?: string;
  i?: string;
  p?: Omit<MessageProperties, 'correlationData'> & { correlationData?: string };
}

function frame(header: unknown, body: Buffer): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const out = Buffer.allocUnsafe(4 + json.length + body.length);
  out.writeUInt32BE(json.length, 0);
  json.copy(out, 4);
  body.copy(out, 4 + json.length);
  return out;
}

function unframe<H>(buf: Buffer): { header: H; body: Buffer } {
  if (buf.length < 4) throw new Error('encoded value too short');
  const len = buf.readUInt32BE(0);
  if (4 + len > buf.length) throw new Error('encoded header overruns value');
  const header = JSON.parse(buf.toString('utf8', 4, 4 + len)) as H;
  return { header, body: buf.subarray(4 + len) };
}

export function encodeMessage(m: StoredMessage): Buffer {
  const h: MessageHeader = { t: m.topic, q: m.qos, o: m.origin };
  if (m.retain) h.r = 1;
  if (m.expiresAtMs !== undefined) h.x = m.expiresAtMs;
  if (m.id !== undefined) h.i = m.id;
  if (m.publisher !== undefined) h.u = m.publisher;
  if (m.properties) {
    const { correlationData, ...rest } = m.properties;
    h.p = correlationData ? { ...rest, correlationData: correlationData.toString('base64') } : rest;
  }
  return frame(h, m.payload);
}

export function decodeMessage(buf: Buffer): StoredMessage {
  const { header: h, body } = unframe<MessageHeader>(buf);
  // copy: the body may be a view into a larger reply buffer
  const m: StoredMessage = { topic: h.t, payload: Buffer.from(body), qos: h.q, retain: h.r === 1, origin: h.o };
  if (h.x !== undefined) m.expiresAtMs = h.x;
  if (h.i !== undefined) m.id = h.i;
  if (h.u !== undefined) m.publisher = h.u;
  if (h.p) {
    const { correlationData, ...rest } = h.p;
    m.properties = correlationData !== undefined ? { ...rest, correlationData: Buffer.from(correlationData, 'base64') } : rest;
  }
  return m;
}

interface PendingHeader {
  q: 0 | 1 | 2;
  r?: 1;
  s?: number[];
}

/** The immutable part of a pending message; packetId / released are stored apart. */
export function encodePending(p: PendingMessage): Buffer {
  const h: PendingHeader = { q: p.qos };
  if (p.retainFlag) h.r = 1;
  if (p.subscriptionIds) h.s = p.subscriptionIds;
  return frame(h, encodeMessage(p.message));
}

export function decodePending(buf: Buffer): PendingMessage {
  const { header: h, body } = unframe<PendingHeader>(buf);
  const p: PendingMessage = { message: decodeMessage(body), qos: h.q, retainFlag: h.r === 1 };
  if (h.s) p.subscriptionIds = h.s;
  return p;
}

type WillHeader = Omit<WillRecord, 'message'>;

export function encodeWill(w: WillRecord): Buffer {
  const { message, ...rest } = w;
  return frame(rest, encodeMessage(message));
}

export function decodeWill(buf: Buffer): WillRecord {
  const { header, body } = unframe<WillHeader>(buf);
  // the parsed header is a fresh object: it becomes the record (no copy per will of a reaper's 10,000)
  const w = header as WillRecord;
  w.message = decodeMessage(body);
  return w;
}

/** Generic JSON header + message frame (bus envelopes). */
export function encodeFramed(header: unknown, body: Buffer): Buffer {
  return frame(header, body);
}
export function decodeFramed<H>(buf: Buffer): { header: H; body: Buffer } {
  return unframe<H>(buf);
}

// A payload read straight from a socket chunk (transport/strict-parser.ts, and mqtt-packet's
// own slices) is a view that keeps the whole chunk alive: up to 64 KiB behind a 10-byte
// message. That is free while a message passes through, but a message kept for long — queued
// for an offline or slow subscriber, retained — would make memory follow the chunks a client
// happened to send rather than the byte limits that count payloads (VIGIL_MAX_QUEUED_BYTES,
// VIGIL_QUEUED_BYTES_BUDGET). Those keep a copy of their own bytes instead.
import type { StoredMessage } from './types.js';

/** Gives the message a payload of its own when it is a small view of a much larger buffer (in place: the bytes are the same). */
export function ownPayload(message: StoredMessage): void {
  const p = message.payload;
  if (p.buffer.byteLength <= 2 * p.byteLength + 1024) return;
  const own = Buffer.allocUnsafeSlow(p.byteLength); // not from the shared pool: a pooled copy would be a view again
  p.copy(own);
  message.payload = own;
}

// A minimal MQTT 3.1.1 client for load generation: raw `net` sockets, packets built with
// mqtt-packet's `generate`, and a hand-written frame scanner on the receive side.
// mqtt.js (and mqtt-packet's object-building parser) cost more CPU per message than the
// brokers under test spend; a load generator must not be the bottleneck, so the hot path
// only reads the bytes it needs (type, packet id, the timestamp in the payload).
import net from 'node:net';
import mqttPacket from 'mqtt-packet';

const { generate } = mqttPacket;

export const PAYLOAD_BYTES = 64;
/** Payload layout: [0..8) send time in µs (float64), [8..12) sequence, [12..16) publisher index. */
export const TS_OFFSET = 0;
export const SEQ_OFFSET = 8;
export const PUB_OFFSET = 12;

const TYPE_CONNACK = 2;
const TYPE_PUBLISH = 3;
const TYPE_PUBACK = 4;
const TYPE_SUBACK = 9;

const DISCONNECT = generate({ cmd: 'disconnect' });

/** Monotonic µs on a clock shared by every process on the machine (CLOCK_MONOTONIC). */
let clockBase = process.hrtime.bigint();
export function setClockBase(base) {
  clockBase = BigInt(base);
}
export function nowUs() {
  return Number(process.hrtime.bigint() - clockBase) / 1000;
}

/** A PUBLISH template whose payload timestamp, sequence and packet id are patched per send. */
export class PublishTemplate {
  constructor(topic, qos, publisherIndex, retain = false) {
    const payload = Buffer.alloc(PAYLOAD_BYTES);
    payload.writeUInt32BE(publisherIndex >>> 0, PUB_OFFSET);
    this.buf = generate({ cmd: 'publish', topic, payload, qos, retain, messageId: qos > 0 ? 1 : undefined });
    this.len = this.buf.length;
    this.payloadOffset = this.len - PAYLOAD_BYTES;
    // In 3.1.1 the packet id sits right before the payload (no properties).
    this.idOffset = qos > 0 ? this.payloadOffset - 2 : -1;
  }

  /** Writes `count` copies into one buffer (one socket write), seqs from firstSeq, ids from nextId(). */
  batch(count, firstSeq, tsUs, nextId) {
    const out = Buffer.allocUnsafe(this.len * count);
    for (let i = 0; i < count; i++) {
      const at = i * this.len;
      this.buf.copy(out, at);
      out.writeDoubleBE(tsUs, at + this.payloadOffset + TS_OFFSET);
      out.writeUInt32BE((firstSeq + i) >>> 0, at + this.payloadOffset + SEQ_OFFSET);
      if (this.idOffset >= 0) out.writeUInt16BE(nextId(), at + this.idOffset);
    }
    return out;
  }
}

/**
 * One MQTT connection. Callbacks are plain fields so the hot path has no EventEmitter cost:
 *   onPublish(buf, payloadStart, qos, packetId, receivedAtUs, payloadLength, topicStart, topicLength)
 *   onPuback(packetId)
 */
export class RawClient {
  constructor({ port, host = '127.0.0.1', localAddress, clientId, keepalive = 600, clean = true, username, password, will }) {
    this.opts = { port, host, localAddress, clientId, keepalive, clean, username, password, will };
    this.socket = null;
    this.pending = null;
    this.onPublish = null;
    this.onPuback = null;
    this.onClose = null;
    this.ackBatch = null; // QoS 1 PUBACKs to send, flushed once per 'data' event
    this.autoAck = true;
    this.connackWaiter = null;
    this.subackWaiter = null;
    this.closed = false;
  }

  /** Resolves with the CONNACK return code (0 = accepted). Rejects on socket error or timeout. */
  connect(timeoutMs = 10000) {
    const o = this.opts;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.destroy();
        reject(new Error(`connect timeout (${o.clientId})`));
      }, timeoutMs);
      this.connackWaiter = (rc) => {
        clearTimeout(timer);
        resolve(rc);
      };
      const sock = net.connect({ port: o.port, host: o.host, localAddress: o.localAddress });
      this.socket = sock;
      sock.setNoDelay(true);
      sock.on('connect', () => {
        const packet = {
          cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: o.clean,
          clientId: o.clientId, keepalive: o.keepalive,
        };
        if (o.username !== undefined) packet.username = o.username;
        if (o.password !== undefined) packet.password = Buffer.isBuffer(o.password) ? o.password : Buffer.from(o.password);
        if (o.will) packet.will = o.will;
        sock.write(generate(packet));
      });
      sock.on('data', (chunk) => this.#onData(chunk));
      sock.on('error', (err) => {
        clearTimeout(timer);
        if (this.connackWaiter) {
          this.connackWaiter = null;
          reject(err);
        }
      });
      sock.on('close', () => {
        this.closed = true;
        clearTimeout(timer);
        if (this.connackWaiter) {
          this.connackWaiter = null;
          reject(new Error(`closed before CONNACK (${o.clientId})`));
        }
        if (this.subackWaiter) {
          const w = this.subackWaiter;
          this.subackWaiter = null;
          w(-1);
        }
        if (this.onClose) this.onClose();
      });
    });
  }

  /** Resolves with the SUBACK granted QoS (128 = refused, -1 = connection closed). */
  subscribe(topic, qos, timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`suback timeout (${topic})`)), timeoutMs);
      this.subackWaiter = (granted) => {
        clearTimeout(timer);
        resolve(granted);
      };
      this.socket.write(generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos }] }));
    });
  }

  write(buf) {
    return this.socket.write(buf);
  }

  /** Polite close: DISCONNECT then FIN. */
  disconnect() {
    if (this.closed || !this.socket) return;
    this.socket.end(DISCONNECT);
  }

  destroy() {
    if (this.socket) this.socket.destroy();
  }

  #onData(chunk) {
    const now = nowUs();
    let buf = chunk;
    if (this.pending) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = null;
    }
    const end = buf.length;
    let pos = 0;
    while (pos < end) {
      // Fixed header: type/flags byte, then Remaining Length as a 1-4 byte varint [MQTT-2.2.3].
      if (end - pos < 2) break;
      let len = 0;
      let mul = 1;
      let p = pos + 1;
      let complete = false;
      for (let i = 0; i < 4 && p < end; i++) {
        const b = buf[p++];
        len += (b & 0x7f) * mul;
        mul *= 128;
        if ((b & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete || p + len > end) break;
      const first = buf[pos];
      const type = first >> 4;
      if (type === TYPE_PUBLISH) {
        const qos = (first >> 1) & 3;
        const topicLen = buf.readUInt16BE(p);
        let q = p + 2 + topicLen;
        let packetId = 0;
        if (qos > 0) {
          packetId = buf.readUInt16BE(q);
          q += 2;
          if (this.autoAck) {
            if (this.ackBatch === null) this.ackBatch = [];
            this.ackBatch.push(packetId);
          }
        }
        if (this.onPublish) this.onPublish(buf, q, qos, packetId, now, p + len - q, p + 2, topicLen);
      } else if (type === TYPE_PUBACK) {
        if (this.onPuback) this.onPuback(buf.readUInt16BE(p));
      } else if (type === TYPE_CONNACK) {
        const w = this.connackWaiter;
        this.connackWaiter = null;
        if (w) w(buf[p + 1]);
      } else if (type === TYPE_SUBACK) {
        const w = this.subackWaiter;
        this.subackWaiter = null;
        if (w) w(buf[p + 2]);
      }
      pos = p + len;
    }
    if (pos < end) this.pending = buf.subarray(pos);
    if (this.ackBatch !== null && !ackDirty.has(this)) {
      ackDirty.add(this);
      if (!ackFlushScheduled) {
        ackFlushScheduled = true;
        setImmediate(flushAcks);
      }
    }
  }

  flushAcks() {
    const ids = this.ackBatch;
    this.ackBatch = null;
    if (ids === null || this.closed) return;
    const out = Buffer.allocUnsafe(ids.length * 4);
    for (let i = 0; i < ids.length; i++) {
      out[i * 4] = 0x40;
      out[i * 4 + 1] = 2;
      out.writeUInt16BE(ids[i], i * 4 + 2);
    }
    this.socket.write(out);
  }
}

// PUBACKs are written once per event-loop turn per connection, after every 'data' event of
// that turn has been read: fewer, larger writes keep the generator's CPU low.
const ackDirty = new Set();
let ackFlushScheduled = false;
function flushAcks() {
  ackFlushScheduled = false;
  for (const c of ackDirty) c.flushAcks();
  ackDirty.clear();
}

/** Spreads client sockets over 127.0.0.2..127.0.0.254 so connect storms do not run out of ephemeral ports. */
export function loopbackSource(i) {
  return `127.0.0.${2 + (i % 253)}`;
}

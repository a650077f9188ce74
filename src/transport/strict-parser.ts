// mqtt-packet's parser made as strict as the specifications where it is lenient. Framing
// only: a rule that needs session state is a protocol step (protocol/handlers), and the
// per-packet property rules are protocol/properties.ts. Every error carries the reason code
// the channel answers with (5.0 DISCONNECT, or CONNACK while CONNECT is unanswered).
//
// What mqtt-packet 9.0.2 already refuses (and Vigil relies on): reserved fixed-header flags
// [MQTT-2.2.2-2], PUBLISH QoS 3 [MQTT-3.3.1-4], CONNECT reserved flag [MQTT-3.1.2-3], will
// QoS/retain without the will flag [MQTT-3.1.2-11, -13], protocol name [MQTT-3.1.2-1],
// remaining length over 4 bytes, subscription options reserved bits [MQTT-3.8.3-5],
// unknown property ids, reason codes not defined for the packet. What it lets through, and
// this class refuses: below.
import { createRequire } from 'node:module';
import { isUtf8 } from 'node:buffer';
import type { Packet as MqttPacket, Parser } from 'mqtt-packet';
import { RC } from '../protocol/reason-codes.js';

/** A framing error with the reason code to answer it with. */
export interface FramingError extends Error {
  reasonCode?: number;
}

interface ParserInternals {
  packet: { cmd?: string | null; length: number; protocolVersion?: number; retain?: boolean; qos?: number; dup?: boolean; topic?: string | null; payload?: unknown };
  settings: { protocolVersion?: number };
  _stateCounter: number;
  parse(buf: Buffer): number;
  emit(event: string, arg: unknown): boolean;
  error: Error | null;
  _pos: number;
  _list: { length: number; readUInt8(offset: number): number; slice(start: number, end: number): Buffer };
  _parseString(): string | null;
  _parseByte(): number | undefined;
  _parseByType(type: string): unknown;
  _parseProperties(): unknown;
  _parsePayload(): boolean;
  _emitError(err: Error): void;
  _resetState(): void;
  listenerCount(event: string): number;
  removeAllListeners(): unknown;
}

type ParserClass = new () => ParserInternals & { parser(opt: object): unknown };
const requireHere = createRequire(import.meta.url);
const Base = requireHere('mqtt-packet/parser.js') as ParserClass;
// The Packet and BufferList classes mqtt-packet itself uses (bl resolved from mqtt-packet's own place).
const requireFromMqttPacket = createRequire(requireHere.resolve('mqtt-packet'));
const Packet = requireFromMqttPacket('./packet') as new () => ParserInternals['packet'];
const { BufferList } = requireFromMqttPacket('bl') as { BufferList: new () => ParserInternals['_list'] };

/** mqtt-packet's own errors that 5.0 calls a Protocol Error rather than a Malformed Packet. */
const PROTOCOL_ERRORS: Record<string, number> = {
  'Invalid retain handling, must be <= 2': RC.PROTOCOL_ERROR, // MQTT 5 §3.8.3.1 Retain Handling 3
  'Invalid subscribe QoS, must be <= 2': RC.PROTOCOL_ERROR, // MQTT 5 §3.8.3.1 Maximum QoS 3
};

/** Packets whose every byte is a field: anything after the last one is malformed. PUBLISH ends in its payload. */
const FIELDED = new Set(['connect', 'puback', 'pubrec', 'pubrel', 'pubcomp', 'subscribe', 'unsubscribe', 'pingreq', 'disconnect', 'auth']);

/** The acknowledgements by their first byte, with the flags the specs require [MQTT-2.2.2-1] (PUBREL 0b0010). */
const CONFIRMATIONS: Record<number, string | undefined> = { 0x40: 'puback', 0x50: 'pubrec', 0x62: 'pubrel', 0x70: 'pubcomp' };

/** A released parser's settings until its CONNECT: mqtt-packet and this class replace settings, never write into them. */
const LEVEL_4 = Object.freeze({ protocolVersion: 4 });

/** The `_list` of a parser that has buffered nothing yet (length 0; appended to never). */
const NO_BYTES = Object.freeze(new BufferList());

/** The packet wholeFrame found: remaining length, where its body starts and where it ends. */
const frame = { length: 0, body: 0, end: 0 };

/** Whether the packet at `at` is whole in `buf` (its fixed header read into `frame`). */
function wholeFrame(buf: Buffer, at: number): boolean {
  let length = 0;
  let i = at + 1;
  for (let shift = 0; ; shift += 7) {
    if (i >= buf.length || shift > 21) return false;
    const digit = buf[i++];
    length += (digit & 0x7f) * 2 ** shift;
    if ((digit & 0x80) === 0) break;
  }
  frame.length = length;
  frame.body = i;
  frame.end = i + length;
  return frame.end <= buf.length;
}

/**
 * wholeConnect's place in the CONNECT it reads (module-level like `frame`, and for the same
 * reason: the field readers were two closures, and their context, allocated per CONNECT).
 */
const cursor = { at: 0, end: 0 };

/** The start of the length-prefixed field at the cursor, which moves past it; -1 when it overruns the packet. */
function field(buf: Buffer): number {
  const i = cursor.at;
  if (i + 2 > cursor.end) return -1;
  const start = i + 2;
  const stop = start + buf.readUInt16BE(i);
  if (stop > cursor.end) return -1;
  cursor.at = stop;
  return start;
}

/** The UTF-8 string field at the cursor; undefined when it overruns or holds U+0000 or U+FFFD (left to the state machine). */
function fieldString(buf: Buffer): string | undefined {
  const start = field(buf);
  if (start < 0) return undefined;
  const s = buf.toString('utf8', start, cursor.at);
  return s.includes('\u0000') || s.includes('\uFFFD') ? undefined : s;
}

/** 3.1.1's "MQTT" or 3.1's "MQIsdp" at the cursor, compared as bytes (no string made per CONNECT); undefined for anything else. */
function protocolName(buf: Buffer): 'MQTT' | 'MQIsdp' | undefined {
  const start = field(buf);
  if (start < 0) return undefined;
  const n = cursor.at - start;
  if (n === 4 && buf[start] === 0x4d && buf[start + 1] === 0x51 && buf[start + 2] === 0x54 && buf[start + 3] === 0x54) return 'MQTT';
  if (n === 6 && buf.toString('latin1', start, start + 6) === 'MQIsdp') return 'MQIsdp';
  return undefined;
}

/** A Packet as mqtt-packet's constructor leaves it. */
function untouched(p: ParserInternals['packet']): boolean {
  return p.cmd === null && p.length === -1 && p.retain === false && p.qos === 0 && p.dup === false && p.topic === null && p.payload === null;
}

class StrictParser extends Base {
  constructor() {
    super();
    this.parser({ protocolVersion: 4 });
  }

  /** As new: level 4, nothing buffered, no error, no sink, no listeners (releaseParser). */
  reuse(): void {
    this.sink = undefined;
    this.settings = LEVEL_4;
    this._resetState();
    this._pos = 0;
    if (this.listenerCount('packet') + this.listenerCount('error') > 0) this.removeAllListeners();
  }

  /**
   * Cheap to create: the stock parser buffers input in a `bl` stream, a full Duplex
   * (EventEmitter plus readable and writable state) per connection, which a connect storm
   * paid on every CONNECT. The parser only uses bl's BufferList methods: a plain BufferList,
   * made when the state machine first needs one (a connection whose packets all arrive
   * whole never does). Until then `_list` is the shared empty one, which is never written.
   * The packet under construction is kept when the state machine never started one (the
   * whole-packet paths make their own): a released parser allocates nothing (reuse).
   */
  override _resetState(): void {
    // (undefined when mqtt-packet's constructor calls this)
    if (this.packet === undefined || !untouched(this.packet)) this.packet = new Packet();
    this.error = null;
    this._list = NO_BYTES;
    this._stateCounter = 0;
  }

  /**
   * Whole PUBLISH packets (and 2-byte acknowledgements) at the start of a chunk, with nothing buffered before them, are read
   * straight from the chunk; everything else goes through mqtt-packet's state machine. The
   * stock path appends the chunk to a BufferList and slices and consumes it field by field,
   * which made the list's bookkeeping about a sixth of the broker's CPU in the QoS 0 pairs
   * benchmark. Only the plain, well-formed case is taken here: a packet that is cut by the
   * chunk's end, has QoS 3, carries 5.0 properties or a topic with U+0000 or U+FFFD, or is
   * short of its fields is left, with all that follows it, to mqtt-packet and the checks
   * above, so every error keeps its reason code. test/unit/strict-parser.test.ts holds both
   * paths equal on random streams cut at random places.
   */
  override parse(buf: Buffer): number {
    if (this._list.length !== 0 || this._stateCounter !== 0 || this.error) return this.stateMachine(buf);
    const n = buf.length;
    let at = 0;
    while (at < n) {
      const first = buf[at];
      const end =
        first >> 4 === 3 ? this.wholePublish(buf, at)
        : CONFIRMATIONS[first] !== undefined ? this.wholeConfirmation(buf, at)
        : first === 0x10 ? this.wholeConnect(buf, at)
        : first === 0xe0 || first === 0xc0 ? this.wholeEmpty(buf, at)
        : -1;
      if (end < 0) break;
      at = end;
    }
    return at === n ? 0 : this.stateMachine(at === 0 ? buf : buf.subarray(at));
  }

  /** mqtt-packet's parse, with a BufferList of this parser's own to append to. */
  private stateMachine(buf: Buffer): number {
    if (this.error) this._resetState();
    if (this._list === NO_BYTES) this._list = new BufferList();
    return super.parse(buf);
  }

  /** A 2-byte PUBACK, PUBREC, PUBREL or PUBCOMP (5.0: reason code 0 by omission [MQTT 5 §3.4.2.1]). */
  private wholeConfirmation(buf: Buffer, at: number): number {
    if (at + 4 > buf.length || buf[at + 1] !== 2) return -1;
    const first = buf[at];
    const packet = new Packet() as ParserInternals['packet'] & { qos: number; messageId: number; reasonCode?: number };
    packet.cmd = CONFIRMATIONS[first];
    packet.qos = (first >> 1) & 3; // as mqtt-packet reads it: PUBREL's required flags give 1
    packet.length = 2;
    packet.messageId = buf.readUInt16BE(at + 2);
    if (this.settings.protocolVersion === 5) packet.reasonCode = 0;
    this.emit('packet', packet);
    return at + 4;
  }

  /**
   * A 3.1 or 3.1.1 CONNECT whole in the chunk, the packet of every connection. Read as
   * mqtt-packet's _parseConnect reads it, fields in the same order, into the same Packet;
   * anything it would refuse or that needs a closer look (5.0, bridge mode, reserved flag,
   * will flags without a will, a string with U+0000 or U+FFFD, a field past the end, bytes
   * after the last field) is left to the state machine, which gives the error and its code.
   * test/unit/strict-parser.test.ts holds both paths equal.
   */
  private wholeConnect(buf: Buffer, at: number): number {
    if (!wholeFrame(buf, at)) return -1;
    const { length, end } = frame;
    cursor.at = frame.body;
    cursor.end = end;
    const protocolId = protocolName(buf);
    if (protocolId === undefined) return -1;
    let i = cursor.at;
    if (i + 4 > end) return -1;
    const level = buf[i];
    const flags = buf[i + 1];
    if ((level !== 3 && level !== 4) || (flags & 0x01) !== 0) return -1;
    const hasWill = (flags & 0x04) !== 0;
    const willQos = (flags >> 3) & 3;
    const willRetain = (flags & 0x20) !== 0;
    if (!hasWill && (willQos !== 0 || willRetain)) return -1;
    const keepalive = buf.readUInt16BE(i + 2);
    cursor.at = i + 4;
    const clientId = fieldString(buf);
    if (clientId === undefined) return -1;
    let will: { retain: boolean; qos: number; topic?: string; payload?: Buffer } | undefined;
    if (hasWill) {
      will = { retain: willRetain, qos: willQos };
      const topic = fieldString(buf);
      if (topic === undefined) return -1;
      will.topic = topic;
      const payloadAt = field(buf);
      if (payloadAt < 0) return -1;
      will.payload = buf.subarray(payloadAt, cursor.at);
    }
    let username: string | undefined;
    if ((flags & 0x80) !== 0) {
      username = fieldString(buf);
      if (username === undefined) return -1;
    }
    let password: Buffer | undefined;
    if ((flags & 0x40) !== 0) {
      const passwordAt = field(buf);
      if (passwordAt < 0) return -1;
      password = buf.subarray(passwordAt, cursor.at);
    }
    i = cursor.at;
    if (i !== end) return -1; // bytes after the last field: the state machine refuses them
    const packet = new Packet() as ParserInternals['packet'] & Record<string, unknown>;
    packet.cmd = 'connect';
    packet.length = length;
    packet.protocolId = protocolId;
    packet.protocolVersion = level;
    if (will) packet.will = will;
    packet.clean = (flags & 0x02) !== 0;
    packet.keepalive = keepalive;
    packet.clientId = clientId;
    if (username !== undefined) packet.username = username;
    if (password !== undefined) packet.password = password;
    this.settings = packet; // as mqtt-packet: later packets are read at the CONNECT's level
    this.emit('packet', packet);
    return end;
  }

  /** DISCONNECT and PINGREQ with no body (3.1/3.1.1 DISCONNECT; a 5.0 one gets its reason code from the state machine). */
  private wholeEmpty(buf: Buffer, at: number): number {
    if (at + 2 > buf.length || buf[at + 1] !== 0) return -1;
    const first = buf[at];
    if (first === 0xe0 && this.settings.protocolVersion === 5) return -1;
    const packet = new Packet();
    packet.cmd = first === 0xe0 ? 'disconnect' : 'pingreq';
    packet.length = 0;
    this.emit('packet', packet);
    return at + 2;
  }

  /** Emits the PUBLISH at `at` and returns where it ends, or -1 to leave it to the state machine. */
  private wholePublish(buf: Buffer, at: number): number {
    const first = buf[at];
    const qos = (first >> 1) & 3;
    if (first >> 4 !== 3 || qos === 3) return -1;
    if (!wholeFrame(buf, at)) return -1;
    const { length, end } = frame;
    let i = frame.body;
    if (i + 2 > end) return -1;
    const topicEnd = i + 2 + buf.readUInt16BE(i);
    if (topicEnd > end) return -1;
    const topic = buf.toString('utf8', i + 2, topicEnd);
    if (topic.includes('\u0000') || topic.includes('\uFFFD')) return -1;
    i = topicEnd;
    let messageId: number | undefined;
    if (qos > 0) {
      if (i + 2 > end) return -1;
      messageId = buf.readUInt16BE(i);
      i += 2;
    }
    if (this.settings.protocolVersion === 5) {
      if (i >= end || buf[i] !== 0) return -1; // properties: the state machine reads and checks them
      i += 1;
    }
    const packet = new Packet() as ParserInternals['packet'] & { retain: boolean; qos: number; dup: boolean; topic: string; payload: Buffer; messageId?: number };
    packet.cmd = 'publish';
    packet.retain = (first & 1) === 1;
    packet.qos = qos;
    packet.dup = (first & 8) !== 0;
    packet.length = length;
    packet.topic = topic;
    if (messageId !== undefined) packet.messageId = messageId;
    packet.payload = buf.subarray(i, end);
    this.emit('packet', packet);
    return end;
  }

  /**
   * The connection's handlers, called directly: mqtt-packet emits every packet and error as
   * an event, and an EventEmitter dispatch (plus two listener registrations per connection)
   * is measurable when every connection lives for one CONNECT. An object, not two closures:
   * those were two more allocations (and a context) per connection. Without it, events as usual.
   */
  sink?: PacketSink;

  override emit(event: string, arg: unknown): boolean {
    if (event === 'packet' && this.sink) this.sink.packet(arg as never);
    else if (event === 'error' && this.sink) this.sink.framingError(arg as FramingError);
    else return super.emit(event, arg);
    return true;
  }

  /** The remaining length of a packet whose header is read and whose body is still arriving; -1 between packets. */
  get pendingLength(): number {
    return this.packet.length;
  }

  /** The protocol level of a CONNECT being parsed (5 once its level byte is read), for the refusal's form. */
  get connectVersion(): number | undefined {
    return this.packet.cmd === 'connect' ? this.packet.protocolVersion : undefined;
  }

  private fail(message: string, reasonCode: number): void {
    const err: FramingError = new Error(message);
    err.reasonCode = reasonCode;
    this._emitError(err);
  }

  /** One error per packet: the first, which names the real cause, not mqtt-packet's follow-up. */
  override _emitError(err: FramingError): void {
    if (this.error) return;
    if (err.reasonCode === undefined) err.reasonCode = PROTOCOL_ERRORS[err.message] ?? RC.MALFORMED_PACKET;
    super._emitError(err);
  }

  /**
   * mqtt-packet decodes strings leniently: ill-formed UTF-8 (and encoded surrogates) becomes
   * U+FFFD [MQTT-1.5.4-1, 3.1.1: MQTT-1.5.3-1], and U+0000 passes [MQTT-1.5.4-2, 3.1.1:
   * MQTT-1.5.3-2]. Both make the packet malformed. Only a string that decoded to U+FFFD needs
   * the exact check, so well-formed traffic pays one scan at most.
   */
  override _parseString(): string | null {
    const start = this._pos;
    const s = super._parseString();
    if (s === null) return s;
    if (s.includes('\u0000')) {
      this.fail('string contains U+0000', RC.MALFORMED_PACKET);
      return null;
    }
    if (s.includes('\uFFFD') && !isUtf8(this._list.slice(start + 2, this._pos))) {
      this.fail('string is not well-formed UTF-8', RC.MALFORMED_PACKET);
      return null;
    }
    return s;
  }

  /**
   * mqtt-packet reads one-byte flag properties as booleans, so 0x02 would come out as 1 and
   * be forwarded altered [MQTT-3.3.2-4]. A value other than 0 or 1 is a Protocol Error
   * (MQTT 5 §3.1.2.11.6, §3.1.2.11.7, §3.3.2.3.2).
   */
  override _parseByType(type: string): unknown {
    if (type !== 'byte') return super._parseByType(type);
    const value = this._parseByte();
    if (value !== undefined && value > 1) this.fail(`property value ${value}, must be 0 or 1`, RC.PROTOCOL_ERROR);
    return value !== 0;
  }

  /** The properties must end exactly where their length says (MQTT 5 §2.2.2.1). */
  override _parseProperties(): unknown {
    const start = this._pos;
    const result = super._parseProperties();
    if (result === false || this.error) return result;
    let length = 0;
    let i = start;
    for (let shift = 0; shift < 28 && i < this._list.length; shift += 7) {
      const b = this._list.readUInt8(i++);
      length += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) break;
    }
    if (this._pos !== i + length) this.fail('properties overrun their length', RC.MALFORMED_PACKET);
    return result;
  }

  /** Bytes left over after the last field of a packet make it malformed (e.g. after CONNECT's last field, MQTT 5 §3.1.3). */
  override _parsePayload(): boolean {
    const complete = super._parsePayload();
    if (complete && !this.error && FIELDED.has(this.packet.cmd!) && this._pos !== this.packet.length) {
      this.fail(`${this.packet.length - this._pos} bytes after the last field of ${this.packet.cmd}`, RC.MALFORMED_PACKET);
    }
    return complete;
  }
}

/** Where a parser delivers its packets and framing errors, instead of emitting them. */
export interface PacketSink {
  packet(packet: MqttPacket): void;
  framingError(err: FramingError): void;
}

export type StrictMqttParser = Parser & {
  readonly connectVersion: number | undefined;
  readonly pendingLength: number;
  sink?: PacketSink;
};

/**
 * Parsers of closed connections, ready for the next ones. A parser is an EventEmitter with a
 * state machine, settings and a Packet, ~600 bytes that a connect storm allocated per CONNECT
 * (about a fourteenth of all it allocated); bounded, so a storm that ends leaves at most this many.
 */
const idle: StrictParser[] = [];
const IDLE_MAX = 256;

/** A parser for one connection; it starts at protocol level 4 and follows the CONNECT. */
export function strictParser(): StrictMqttParser {
  return (idle.pop() ?? new StrictParser()) as unknown as StrictMqttParser;
}

/**
 * The parser's connection is gone and nothing will call it again (not from inside its own
 * parse): it is reset to what strictParser() makes and may serve another connection.
 */
export function releaseParser(parser: StrictMqttParser): void {
  if (idle.length >= IDLE_MAX) return;
  const p = parser as unknown as StrictParser;
  p.reuse();
  idle.push(p);
}

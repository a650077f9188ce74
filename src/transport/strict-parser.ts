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
import type { Parser } from 'mqtt-packet';
import { RC } from '../protocol/reason-codes.js';

/** A framing error with the reason code to answer it with. */
export interface FramingError extends Error {
  reasonCode?: number;
}

interface ParserInternals {
  packet: { cmd?: string; length: number; protocolVersion?: number };
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

class StrictParser extends Base {
  constructor() {
    super();
    this.parser({ protocolVersion: 4 });
  }

  /**
   * Cheap to create: the stock parser buffers input in a `bl` stream, a full Duplex
   * (EventEmitter plus readable and writable state) per connection, which a connect storm
   * paid on every CONNECT. The parser only uses bl's BufferList methods: a plain BufferList.
   */
  override _resetState(): void {
    this.packet = new Packet();
    this.error = null;
    this._list = new BufferList();
    (this as unknown as { _stateCounter: number })._stateCounter = 0;
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

export type StrictMqttParser = Parser & { readonly connectVersion: number | undefined };

/** A parser for one connection; it starts at protocol level 4 and follows the CONNECT. */
export function strictParser(): StrictMqttParser {
  return new StrictParser() as unknown as StrictMqttParser;
}

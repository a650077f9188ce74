// Encodes an outgoing PUBLISH once per distinct form (protocol version, QoS, RETAIN flag,
// topic alias use) and reuses the bytes for every subscriber that gets that form. QoS 1/2
// forms and forms with a topic alias are templates: each subscriber gets a copy with its own
// packet id, DUP bit and alias number patched in, so outgoing aliases (5.0) keep the
// encode-once path.
import '../transport/quiet-debug.js'; // before mqtt-packet: its per-packet debug calls become no-ops
import mqttPacket from 'mqtt-packet';
import type { IPublishPacket } from 'mqtt-packet';
import type { StoredMessage } from '../store/types.js';

/** How a 5.0 PUBLISH carries its topic: no alias, topic and alias (sets it), alias and an empty topic. */
export const enum AliasUse {
  None = 0,
  Set = 1,
  Use = 2,
}

export interface EncodedPublish {
  readonly bytes: Buffer;
  /** Offset of the 2-byte packet id, or -1 for QoS 0. */
  readonly idOffset: number;
  /** Offset of the 2-byte Topic Alias value, or -1 without one. */
  readonly aliasOffset: number;
  /** QoS 0 with an alias: the last copy made, reused for every client with the same alias number. */
  lastAlias?: number;
  lastBytes?: Buffer;
}

/** One routed message on its way out; lives for one routing pass (or one resend). */
export class OutgoingPublish {
  private readonly forms: (EncodedPublish | undefined)[] = [];

  constructor(readonly message: StoredMessage, readonly nowMs: number) {}

  /** Remaining Message Expiry Interval in seconds, rounded up, or undefined. */
  get expiryS(): number | undefined {
    const at = this.message.expiresAtMs;
    return at === undefined ? undefined : Math.max(1, Math.ceil((at - this.nowMs) / 1000));
  }

  get expired(): boolean {
    const at = this.message.expiresAtMs;
    return at !== undefined && at <= this.nowMs;
  }

  encode(version: number, qos: 0 | 1 | 2, retain: boolean, subscriptionIds?: readonly number[], alias: AliasUse = AliasUse.None): EncodedPublish {
    const v5 = version === 5;
    if (v5 && subscriptionIds && subscriptionIds.length > 0) return this.build(version, qos, retain, subscriptionIds, alias);
    const slot = (v5 ? 6 + alias * 6 : 0) + qos * 2 + (retain ? 1 : 0);
    return (this.forms[slot] ??= this.build(version, qos, retain, undefined, v5 ? alias : AliasUse.None));
  }

  private build(version: number, qos: 0 | 1 | 2, retain: boolean, subscriptionIds: readonly number[] | undefined, alias: AliasUse): EncodedPublish {
    const m = this.message;
    if (version !== 5 || (alias === AliasUse.None && subscriptionIds === undefined && m.expiresAtMs === undefined && noProperties(m.properties))) {
      return plainPublish(m, version === 5, qos, retain);
    }
    const packet: IPublishPacket = { cmd: 'publish', topic: alias === AliasUse.Use ? '' : m.topic, payload: m.payload, qos, retain, dup: false };
    if (qos > 0) packet.messageId = 1;
    if (version === 5) {
      // the alias goes first, so its value sits right after the property length; 1 is a placeholder
      const props: NonNullable<IPublishPacket['properties']> = alias === AliasUse.None ? { ...m.properties } : { topicAlias: 1, ...m.properties };
      const expiry = this.expiryS;
      if (expiry !== undefined) props.messageExpiryInterval = expiry;
      if (subscriptionIds && subscriptionIds.length > 0) props.subscriptionIdentifier = subscriptionIds.length === 1 ? subscriptionIds[0] : [...subscriptionIds];
      packet.properties = props;
    }
    const bytes = mqttPacket.generate(packet, { protocolVersion: version });
    let i = 1;
    while (bytes[i] & 0x80) i++; // remaining length is a variable byte integer
    i += 1;
    i += 2 + bytes.readUInt16BE(i); // topic
    const idOffset = qos > 0 ? i : -1;
    if (qos > 0) i += 2;
    let aliasOffset = -1;
    if (alias !== AliasUse.None) {
      while (bytes[i] & 0x80) i++; // property length
      aliasOffset = i + 2; // after the length's last byte and the Topic Alias identifier (0x23)
    }
    return { bytes, idOffset, aliasOffset, lastAlias: -1, lastBytes: undefined };
  }
}

function noProperties(props: StoredMessage['properties']): boolean {
  if (props === undefined) return true;
  for (const key in props) if ((props as Record<string, unknown>)[key] !== undefined) return false;
  return true;
}

/**
 * A PUBLISH without properties (every 3.1.1 one, and 5.0 with none to carry), written in one
 * allocation: fixed header, Remaining Length, topic, packet id placeholder (QoS 1/2), the
 * empty 5.0 property length, payload [MQTT-3.3.1, 3.3.2]. mqtt-packet's generate() builds the
 * same bytes through a stream accumulator and a concat (about 8 % of the broker's CPU in the
 * QoS 0 pairs benchmark); test/unit/publish-encoder.test.ts holds the two equal.
 */
function plainPublish(m: StoredMessage, v5: boolean, qos: 0 | 1 | 2, retain: boolean): EncodedPublish {
  const topicLength = Buffer.byteLength(m.topic);
  const remaining = 2 + topicLength + (qos > 0 ? 2 : 0) + (v5 ? 1 : 0) + m.payload.length;
  const lengthBytes = remaining < 0x80 ? 1 : remaining < 0x4000 ? 2 : remaining < 0x200000 ? 3 : 4;
  const bytes = Buffer.allocUnsafe(1 + lengthBytes + remaining);
  bytes[0] = 0x30 | (qos << 1) | (retain ? 1 : 0);
  let i = 1;
  for (let n = remaining; ; ) {
    const digit = n & 0x7f;
    n >>>= 7;
    if (n === 0) {
      bytes[i++] = digit;
      break;
    }
    bytes[i++] = digit | 0x80;
  }
  bytes.writeUInt16BE(topicLength, i);
  i += 2;
  i += bytes.write(m.topic, i, 'utf8');
  let idOffset = -1;
  if (qos > 0) {
    idOffset = i;
    bytes.writeUInt16BE(1, i); // placeholder; forClient() writes each subscriber's id
    i += 2;
  }
  if (v5) bytes[i++] = 0; // property length
  m.payload.copy(bytes, i);
  return { bytes, idOffset, aliasOffset: -1, lastAlias: -1, lastBytes: undefined };
}

/** A copy of a template with its packet id and DUP flag (QoS 1/2) and topic alias set. */
export function forClient(form: EncodedPublish, packetId: number, dup: boolean, alias: number): Buffer {
  // QoS 0 differs between clients only in the alias number, and clients that get the same
  // topics tend to get the same numbers: one copy per number, not per client
  if (form.idOffset < 0 && form.lastAlias === alias) return form.lastBytes!;
  const out = Buffer.allocUnsafe(form.bytes.length);
  form.bytes.copy(out);
  if (form.idOffset >= 0) {
    out.writeUInt16BE(packetId, form.idOffset);
    if (dup) out[0] |= 0x08;
  }
  if (form.aliasOffset >= 0) out.writeUInt16BE(alias, form.aliasOffset);
  if (form.idOffset < 0) {
    form.lastAlias = alias;
    form.lastBytes = out;
  }
  return out;
}

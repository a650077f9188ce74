// Encodes an outgoing PUBLISH once per distinct form (protocol version, QoS, RETAIN flag,
// topic alias use) and reuses the bytes for every subscriber that gets that form. QoS 1/2
// forms and forms with a topic alias are templates: each subscriber gets a copy with its own
// packet id, DUP bit and alias number patched in, so outgoing aliases (5.0) keep the
// encode-once path.
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

// Encodes an outgoing PUBLISH once per distinct form (protocol version, QoS, RETAIN flag)
// and reuses the bytes for every subscriber that gets that form. QoS 1/2 forms are
// templates: each subscriber gets a copy with its own packet id (and DUP bit) patched in.
import mqttPacket from 'mqtt-packet';
import type { IPublishPacket } from 'mqtt-packet';
import type { StoredMessage } from '../store/types.js';

export interface EncodedPublish {
  readonly bytes: Buffer;
  /** Offset of the 2-byte packet id, or -1 for QoS 0. */
  readonly idOffset: number;
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

  encode(version: number, qos: 0 | 1 | 2, retain: boolean, subscriptionIds?: readonly number[]): EncodedPublish {
    const v5 = version === 5;
    if (v5 && subscriptionIds && subscriptionIds.length > 0) return this.build(version, qos, retain, subscriptionIds);
    const slot = (v5 ? 6 : 0) + qos * 2 + (retain ? 1 : 0);
    return (this.forms[slot] ??= this.build(version, qos, retain, undefined));
  }

  private build(version: number, qos: 0 | 1 | 2, retain: boolean, subscriptionIds: readonly number[] | undefined): EncodedPublish {
    const m = this.message;
    const packet: IPublishPacket = { cmd: 'publish', topic: m.topic, payload: m.payload, qos, retain, dup: false };
    if (qos > 0) packet.messageId = 1;
    if (version === 5) {
      const props: NonNullable<IPublishPacket['properties']> = { ...m.properties };
      const expiry = this.expiryS;
      if (expiry !== undefined) props.messageExpiryInterval = expiry;
      if (subscriptionIds && subscriptionIds.length > 0) props.subscriptionIdentifier = subscriptionIds.length === 1 ? subscriptionIds[0] : [...subscriptionIds];
      packet.properties = props;
    }
    const bytes = mqttPacket.generate(packet, { protocolVersion: version });
    let idOffset = -1;
    if (qos > 0) {
      let i = 1;
      while (bytes[i] & 0x80) i++; // remaining length is a variable byte integer
      idOffset = i + 1 + 2 + bytes.readUInt16BE(i + 1);
    }
    return { bytes, idOffset };
  }
}

/** A copy of a QoS 1/2 template with its packet id and DUP flag set. */
export function withPacketId(form: EncodedPublish, packetId: number, dup: boolean): Buffer {
  const out = Buffer.allocUnsafe(form.bytes.length);
  form.bytes.copy(out);
  out.writeUInt16BE(packetId, form.idOffset);
  if (dup) out[0] |= 0x08;
  return out;
}

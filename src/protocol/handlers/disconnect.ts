// DISCONNECT from a client: only 0x00 (normal disconnection) discards the will; 0x04 and every
// other reason code (0x80 unspecified error, ...) keep it [MQTT-3.1.2-10, MQTT-3.14.4-3]. MQTT 5
// may change the session expiry, but not from zero [MQTT-3.14.2-2].
import type { IDisconnectPacket } from 'mqtt-packet';
import type { Channel } from '../channel.js';
import { ProtocolViolation, RC } from '../reason-codes.js';

export function handleDisconnect(ch: Channel, packet: IDisconnectPacket): void {
  const session = ch.session!;
  const requestedExpiry = packet.properties?.sessionExpiryInterval;
  if (ch.protocolVersion === 5 && requestedExpiry !== undefined) {
    if (session.expiryIntervalS === 0 && requestedExpiry !== 0) throw new ProtocolViolation(RC.PROTOCOL_ERROR, 'session expiry changed from 0');
    session.expiryIntervalS = Math.min(requestedExpiry, ch.ctx.config.maxSessionExpiryS);
  }
  const reason = packet.reasonCode ?? 0;
  if (reason === RC.SUCCESS) {
    ch.normalDisconnect = true;
    if (ch.will && !ch.ctx.broker.cluster) ch.ctx.metrics.willsCancelledTotal.inc({ cause: 'normal' }); // the cluster registry counts its own
  }
  // The server closes the connection (§3.14.4, both versions) owing the client nothing: the
  // client closes too and sends nothing more [MQTT-3.14.4-1, MQTT-3.14.4-2], and nothing is
  // sent after a client's DISCONNECT (a server DISCONNECT is for a close the server starts).
  ch.close(undefined, reason === 0 ? 'client_disconnect' : `client_disconnect_0x${reason.toString(16)}`, true);
}

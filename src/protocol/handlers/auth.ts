// MQTT 5 AUTH: re-authentication with a new token (reason 0x19, method as in CONNECT).
// The new token must name the same subject; on success the identity is swapped in one
// assignment (verdict caches key on the identity object, so they start fresh) and the
// expiry timer follows the new token. The will keeps the identity it was registered with.
import type { IAuthPacket } from 'mqtt-packet';
import type { AuthOutcome } from '../../auth/types.js';
import type { Channel } from '../channel.js';
import { ProtocolViolation, RC } from '../reason-codes.js';

export function handleAuth(ch: Channel, packet: IAuthPacket): void {
  const method = packet.properties?.authenticationMethod;
  // MQTT 5 §4.12: AUTH only when CONNECT named a method, and with the same method
  if (!ch.authMethod || method !== ch.authMethod) throw new ProtocolViolation(RC.PROTOCOL_ERROR, 'AUTH without the CONNECT authentication method');
  if (packet.reasonCode !== RC.REAUTHENTICATE) throw new ProtocolViolation(RC.PROTOCOL_ERROR, 'only re-authentication (0x19) is supported');
  if (ch.state === 'reauthenticating') throw new ProtocolViolation(RC.PROTOCOL_ERROR, 're-authentication already in progress');
  ch.state = 'reauthenticating';
  const outcome = ch.ctx.authenticator.authenticate({
    clientId: ch.clientId,
    username: ch.identity?.username,
    authMethod: method,
    authData: packet.properties?.authenticationData,
    protocolVersion: 5,
    remoteAddress: ch.io.remoteAddress,
    certSubject: ch.io.certSubject,
    requireSubject: ch.identity?.username,
  });
  if (outcome instanceof Promise) {
    // publishing goes on while the token is checked (MQTT 5 §4.12.1): do not hold the backlog
    outcome.then((o) => reauthenticated(ch, o), () => reauthenticated(ch, { ok: false, reasonCode: RC.UNSPECIFIED_ERROR, reason: 'internal error' }));
  } else {
    reauthenticated(ch, outcome);
  }
}

function reauthenticated(ch: Channel, outcome: AuthOutcome): void {
  if (ch.state !== 'reauthenticating') return;
  const { metrics, log } = ch.ctx;
  if (!outcome.ok) {
    metrics.reauthTotal.inc({ outcome: 'refused' });
    log.info({ clientId: ch.clientId, username: ch.identity?.username, reason: outcome.reason }, 're-authentication refused');
    ch.state = 'connected';
    ch.close(outcome.reasonCode, `re-authentication refused: ${outcome.reason}`);
    return;
  }
  ch.identity = outcome.identity;
  ch.session?.receiveAs(outcome.identity);
  ch.state = 'connected';
  metrics.reauthTotal.inc({ outcome: 'success' });
  log.info({ clientId: ch.clientId, username: outcome.identity.username }, 're-authenticated');
  ch.send({ cmd: 'auth', reasonCode: RC.SUCCESS, properties: { authenticationMethod: ch.authMethod } });
}

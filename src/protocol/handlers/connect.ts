// CONNECT, as named steps: validate → authenticate → authorize the will → take over →
// open the session → CONNACK. A step that fails returns an MQTT 5 reason code; refuse()
// is the one place that turns it into the CONNACK of the client's protocol version.
import { isUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import type { IConnackPacket, IConnectPacket } from 'mqtt-packet';
import type { AuthOutcome, AuthRequest, Identity } from '../../auth/types.js';
import { sessionOwner } from '../../auth/session-owner.js';
import { NEVER_EXPIRES } from '../../broker/broker.js';
import type { OpenResult } from '../../broker/ports.js';
import type { Session } from '../../broker/session.js';
import type { StoredMessage, WillRecord } from '../../store/types.js';
import { ownPayload } from '../../store/own-payload.js';
import type { Channel } from '../channel.js';
import { connackCode311, connackCode5, ProtocolViolation, RC, reasonName, type ReasonCode } from '../reason-codes.js';
import { propertyViolation } from '../properties.js';
import { OutboundAliases } from '../outbound-aliases.js';
import { NO_TOPIC_LIMITS, validTopicName } from '../topics.js';
import { forwardableProperties } from '../message-properties.js';
import type { ConcurrencyGate } from '../../limits/concurrency-gate.js';

interface Refusal {
  readonly code: ReasonCode;
  readonly reason: string;
}

/** 5.0 0x85 Client Identifier not valid, 3.1.1 0x02 Identifier rejected. Not a credential failure. */
const OTHER_OWNER: Refusal = { code: RC.CLIENT_IDENTIFIER_NOT_VALID, reason: 'client id in use by another identity' };

export function handleConnect(ch: Channel, packet: IConnectPacket): void {
  const version = packet.protocolVersion ?? 4;
  ch.protocolVersion = version;
  malformed(packet, version);
  const refusal = validate(ch, packet);
  if (refusal) return refuse(ch, refusal);

  // An address over its budget of failed signature checks may not make the pool verify more
  // (what costs CPU is limited, never a username: anyone can name one); a token whose
  // verification is known still gets in. README, "Hostile traffic".
  const { limits, clock } = ch.ctx;
  const byAddress = limits.authFailuresByAddress;
  const verificationsLimited = byAddress.active && byAddress.blockedFor(ch.io.remoteAddress, clock.now()) > 0;

  ch.state = 'authenticating';
  ch.connectReceivedAtMs = ch.lastRxMs; // when its bytes arrived (Channel.handlePacket)
  const outcome = ch.ctx.authenticator.authenticate(new ConnectAuthRequest(ch, packet, version, verificationsLimited));
  if (outcome instanceof Promise) authenticateLater(ch, packet, outcome);
  else authenticated(ch, packet, outcome);
}

// The steps that wait (authentication, the will's authorization, the cluster's claim) make
// their closures in functions of their own: a closure over a step's parameters makes V8
// allocate a context on every call of the step, also for the many CONNECTs that never wait.

function authenticateLater(ch: Channel, packet: IConnectPacket, outcome: Promise<AuthOutcome>): void {
  ch.waitFor(outcome, (o) => authenticated(ch, packet, o));
}

/**
 * What the authenticator is asked, as a class: an object literal with a getter costs V8 an
 * accessor definition per CONNECT. The address is a getter because it costs a getpeername
 * call, and only a refusal or a log line needs it.
 */
class ConnectAuthRequest implements AuthRequest {
  readonly clientId: string;
  readonly username?: string;
  readonly password?: Buffer;
  readonly authMethod?: string;
  readonly authData?: Buffer;
  readonly certSubject?: string;

  constructor(
    private readonly ch: Channel,
    packet: IConnectPacket,
    readonly protocolVersion: 3 | 4 | 5,
    readonly verificationsLimited: boolean,
  ) {
    this.clientId = ch.clientId;
    this.username = packet.username;
    this.password = packet.password;
    this.authMethod = packet.properties?.authenticationMethod;
    this.authData = packet.properties?.authenticationData;
    this.certSubject = ch.io.certSubject;
  }

  get remoteAddress(): string {
    return this.ch.io.remoteAddress;
  }
}

/**
 * What makes a CONNECT malformed beyond what the parser refuses (transport/strict-parser.ts).
 * Thrown as a ProtocolViolation: 3.1.1 closes without a CONNACK [MQTT-3.1.4-1], 5.0 gets
 * CONNACK with the reason first (Channel.close).
 */
function malformed(packet: IConnectPacket, version: number): void {
  const will = packet.will;
  // mqtt-packet checks the other CONNECT flags but lets Will QoS 3 through [MQTT-3.1.2-14]
  if ((will?.qos ?? 0) > 2) throw new ProtocolViolation(RC.MALFORMED_PACKET, 'will QoS 3');
  // 3.1.1 allows no password without a user name; 5.0 does (MQTT 5 §3.1.2.9)
  if (version !== 5 && packet.password !== undefined && packet.username === undefined) throw new ProtocolViolation(RC.MALFORMED_PACKET, 'password flag without user name flag'); // [MQTT-3.1.2-22]
  // a topic name is at least one character [MQTT-4.7.3-1]; the will topic is one [MQTT-3.1.3-11]
  if (will && will.topic === '') throw new ProtocolViolation(RC.MALFORMED_PACKET, 'empty will topic');
  if (version === 5) {
    const bad = (packet.properties && propertyViolation('connect', packet.properties)) || (will?.properties && propertyViolation('will', will.properties));
    if (bad) throw new ProtocolViolation(bad.code, bad.reason);
    const responseTopic = will?.properties?.responseTopic;
    // the will goes out as a PUBLISH, whose Response Topic has no wildcards [MQTT-3.3.2-14]
    if (responseTopic !== undefined && !validTopicName(responseTopic, NO_TOPIC_LIMITS)) throw new ProtocolViolation(RC.PROTOCOL_ERROR, 'will response topic is not a topic name');
  }
}

function validate(ch: Channel, packet: IConnectPacket): Refusal | undefined {
  const { config } = ch.ctx;
  const v5 = ch.protocolVersion === 5;
  let clientId = packet.clientId ?? '';
  if (clientId === '') {
    // [MQTT-3.1.3-6, MQTT-3.1.3-8] a server-assigned id only for a clean session in 3.1.1
    if (ch.protocolVersion === 3 || (!v5 && !packet.clean)) return { code: RC.CLIENT_IDENTIFIER_NOT_VALID, reason: 'empty client id needs clean session' };
    clientId = `vigil-${randomBytes(9).toString('base64url')}`;
    ch.assignedClientId = v5 ? clientId : undefined;
  } else if (ch.protocolVersion === 3 && clientId.length > 23) {
    return { code: RC.CLIENT_IDENTIFIER_NOT_VALID, reason: 'MQTT 3.1 client ids are at most 23 characters' };
  }
  ch.clientId = clientId;

  if (v5) {
    const p = packet.properties ?? {};
    // before any refusal: the CONNACK is held to it too [MQTT-3.1.2-24]
    ch.clientMaxPacketSize = p.maximumPacketSize ?? 0;
    if (p.receiveMaximum === 0 || p.maximumPacketSize === 0) return { code: RC.PROTOCOL_ERROR, reason: 'zero receive maximum or packet size' }; // MQTT 5 §3.1.2.11.3, §3.1.2.11.4
    ch.sendQuota = Math.min(p.receiveMaximum ?? 65535, config.maxInflight);
    ch.clientTopicAliasMax = p.topicAliasMaximum ?? 0;
    const outgoingAliases = Math.min(ch.clientTopicAliasMax, config.outgoingTopicAliases);
    if (outgoingAliases > 0) ch.outboundAliases = new OutboundAliases(outgoingAliases); // [MQTT-3.1.2-26, MQTT-3.1.2-27, MQTT-3.3.2-11]
    ch.problemInfo = p.requestProblemInformation !== false;
    ch.authMethod = p.authenticationMethod;
    if (p.authenticationData && !p.authenticationMethod) return { code: RC.PROTOCOL_ERROR, reason: 'authentication data without method' };
  }

  const keepalive = packet.keepalive ?? 0;
  if (v5 && (keepalive > config.maxKeepaliveS || (keepalive === 0 && config.maxKeepaliveS < 65535))) {
    ch.serverKeepAlive = config.maxKeepaliveS; // [MQTT-3.2.2-21]
  } else if (!v5 && keepalive > config.maxKeepaliveS) {
    // 3.1.1 has no way to tell the client a smaller keep alive: refuse rather than cut it off later
    return { code: RC.CLIENT_IDENTIFIER_NOT_VALID, reason: `keep alive above ${config.maxKeepaliveS} s` };
  }
  ch.keepaliveMs = (ch.serverKeepAlive ?? keepalive) * 1000;

  const will = packet.will;
  if (will) {
    if (!validTopicName(will.topic, config)) {
      // 3.1.1 has no return code for it: a CONNECT that does not conform is closed without CONNACK [MQTT-3.1.4-1]
      if (!v5) throw new ProtocolViolation(RC.TOPIC_NAME_INVALID, 'invalid will topic');
      return { code: RC.TOPIC_NAME_INVALID, reason: 'invalid will topic' };
    }
    if (will.retain && !config.retainAvailable) return { code: RC.RETAIN_NOT_SUPPORTED, reason: 'retain not supported' };
    // MQTT 5 §3.1.3.2.3 allows the check: a will that says UTF-8 and is not is refused now, not at its publication
    if (v5 && will.properties?.payloadFormatIndicator && !isUtf8(Buffer.isBuffer(will.payload) ? will.payload : Buffer.from(will.payload ?? ''))) {
      return { code: RC.PAYLOAD_FORMAT_INVALID, reason: 'will payload is not UTF-8' };
    }
  }
  return undefined;
}

function authenticated(ch: Channel, packet: IConnectPacket, outcome: AuthOutcome): void {
  if (ch.state !== 'authenticating') return;
  const { limits, clock } = ch.ctx;
  if (!outcome.ok) {
    // only a failed signature check counts: refusals decided without crypto cost nothing
    if (outcome.signatureChecked) limits.authFailuresByAddress.failed(ch.io.remoteAddress, clock.now());
    if (outcome.reason === 'verifications_limited') ch.ctx.metrics.limitHitsTotal.inc({ limit: 'auth_failures' });
    return refuse(ch, { code: outcome.reasonCode, reason: outcome.reason });
  }
  ch.identity = outcome.identity;
  // the policy may bind client ids to identities; an id the server assigned is nobody else's
  const assigned = (packet.clientId ?? '') === '';
  if (!assigned && !ch.ctx.authorizer.clientIdAllowed(outcome.identity, ch.clientId)) {
    return refuse(ch, { code: RC.CLIENT_IDENTIFIER_NOT_VALID, reason: 'client id not allowed for this identity' });
  }
  const will = packet.will;
  // VIGIL_WILL_AUTHZ: the client learns at once that its will could never be published
  if (will && ch.ctx.config.willAuthz !== 'fire' && !ch.ctx.authorizer.allowAll) return authorizeWill(ch, packet, outcome.identity, will.topic);
  accept(ch, packet);
}

function authorizeWill(ch: Channel, packet: IConnectPacket, identity: Identity, topic: string): void {
  const verdict = ch.ctx.authorizer.check(identity, 'publish', topic);
  const decide = (allowed: boolean) => (allowed ? accept(ch, packet) : refuse(ch, { code: RC.NOT_AUTHORIZED, reason: 'will topic not allowed' }));
  if (verdict instanceof Promise) ch.waitFor(verdict, (v) => ch.state === 'authenticating' && decide(v.allowed));
  else decide(verdict.allowed);
}

function accept(ch: Channel, packet: IConnectPacket): void {
  const gate = ch.ctx.limits.clusterConnects;
  if (!gate) {
    openSession(ch, packet, undefined);
    return;
  }
  acceptInTurn(ch, packet, gate);
}

function acceptInTurn(ch: Channel, packet: IConnectPacket, gate: ConcurrencyGate): void {
  // Cluster: the claim waits its turn (VIGIL_CLUSTER_CONNECTS_IN_FLIGHT). Meanwhile the CONNECT
  // stays 'authenticating': later packets wait in the backlog, the admission timeout runs.
  gate.enter(() => {
    if (ch.state !== 'authenticating') return false;
    try {
      return openSession(ch, packet, gate);
    } catch (err) {
      ch.ctx.log.error({ clientId: ch.clientId, err: (err as Error).stack }, 'internal error opening the session');
      ch.close(RC.IMPLEMENTATION_SPECIFIC_ERROR, 'internal error');
      return false;
    }
  });
}

/** Takes the client id over and opens its session. True when the cluster's work is under way (it leaves `gate` when settled). */
function openSession(ch: Channel, packet: IConnectPacket, gate: ConcurrencyGate | undefined): boolean {
  const { broker, config, metrics } = ch.ctx;
  const v5 = ch.protocolVersion === 5;

  // one live connection per client id [MQTT-3.1.4-3] — taken over only by the identity that
  // owns it: another identity is refused before anything of the owner's is touched
  const owner = sessionOwner(ch.identity!, ch.ctx.authenticator.mode);
  if (broker.heldByAnother(ch.clientId, owner)) {
    metrics.takeoversRefusedTotal.inc({ scope: 'local' });
    refuse(ch, OTHER_OWNER);
    return false;
  }
  const existing = broker.sessions.get(ch.clientId);
  existing?.link?.takeover();

  const requested = v5 ? (packet.properties?.sessionExpiryInterval ?? 0) : packet.clean ? 0 : NEVER_EXPIRES;
  const expiryS = Math.min(requested, config.maxSessionExpiryS);
  const cleanStart = packet.clean !== false;
  const will = packet.will ? willRecord(ch, packet, ch.identity!, 0) : undefined;
  const opened = broker.connectSession(ch.clientId, cleanStart, expiryS, will, owner);
  if (!(opened instanceof Promise)) {
    sessionOpened(ch, opened, will, expiryS, requested);
    return false;
  }
  claimed(ch, opened, gate, will, expiryS, requested);
  return true;
}

/**
 * Cluster: the claim is under way. Apart from openSession so that its closures (and their
 * context) are made only here, not for every CONNECT.
 */
function claimed(ch: Channel, opened: Promise<OpenResult>, gate: ConcurrencyGate | undefined, will: WillRecord | undefined, expiryS: number, requested: number): void {
  const broker = ch.ctx.broker;
  // the socket may close while the cluster claims the client: the claimed session must then
  // be settled like any other lost connection, or it would stay "online" with nobody on it
  const settled = opened.then((result) => {
    if ((ch.state === 'closing' || ch.state === 'closed') && !('refused' in result)) {
      if (will) will.epoch = result.session.epoch;
      broker.clientGone(result.session, will, false);
    }
    return result;
  });
  if (gate) {
    const leave = () => gate.leave();
    settled.then(leave, leave);
  }
  ch.waitFor(settled, (result) => sessionOpened(ch, result, will, expiryS, requested));
}

/** The session is open (or refused): CONNACK. A function, not a closure: most CONNECTs get here synchronously. */
function sessionOpened(ch: Channel, result: OpenResult, will: WillRecord | undefined, expiryS: number, requested: number): void {
  if ('refused' in result) return refuse(ch, { code: result.refused, reason: result.reason });
  if (will) {
    will.epoch = result.session.epoch;
    if (!ch.ctx.broker.cluster) ch.ctx.metrics.willsRegisteredTotal.inc(); // the cluster registry counts its own
  }
  ch.will = will;
  connected(ch, result.session, result.present, expiryS, requested);
}

function connected(ch: Channel, session: Session, present: boolean, expiryS: number, requested: number): void {
  const { config, metrics, clock, log } = ch.ctx;
  ch.session = session;
  ch.state = 'connected';
  const id = ch.identity!;
  ch.ctx.broker.observer?.connected({ clientId: ch.clientId, epoch: session.epoch, username: id.username, roles: id.roles, protocolVersion: ch.protocolVersion, connectedAtMs: ch.openedAtMs });
  if (ch.protocolVersion === 5) {
    const props: NonNullable<IConnackPacket['properties']> = {
      receiveMaximum: config.maxInflight,
      maximumPacketSize: config.maxPacketSize,
      topicAliasMaximum: config.topicAliasMax,
    };
    if (!config.retainAvailable) props.retainAvailable = false;
    if (ch.assignedClientId) props.assignedClientIdentifier = ch.assignedClientId;
    if (ch.serverKeepAlive !== undefined) props.serverKeepAlive = ch.serverKeepAlive;
    if (expiryS !== requested) props.sessionExpiryInterval = expiryS;
    if (ch.authMethod) props.authenticationMethod = ch.authMethod;
    ch.send({ cmd: 'connack', sessionPresent: present, reasonCode: RC.SUCCESS, properties: props });
  } else {
    // 3.1/3.1.1 CONNACK accepted has two forms only: no encoder needed
    ch.io.write(present ? CONNACK_ACCEPTED_PRESENT : CONNACK_ACCEPTED);
  }
  metrics.connectAccepted[ch.protocolVersion].inc();
  if (log.isLevelEnabled('debug')) log.debug({ clientId: ch.clientId, username: ch.identity?.username, version: ch.protocolVersion, present }, 'client connected');
  session.receiveAs(ch.identity!); // before resume: what waited is checked against this identity
  session.resume(ch, clock.now()); // [MQTT-4.4.0-1] resend unacknowledged messages
  ch.drainBacklog();
}

const CONNACK_ACCEPTED = Buffer.from([0x20, 0x02, 0x00, 0x00]);
const CONNACK_ACCEPTED_PRESENT = Buffer.from([0x20, 0x02, 0x01, 0x00]);

function willRecord(ch: Channel, packet: IConnectPacket, identity: Identity, epoch: number): WillRecord {
  const w = packet.will!;
  const wp = w.properties ?? {};
  const v5 = ch.protocolVersion === 5;
  const message: StoredMessage = {
    topic: w.topic,
    payload: Buffer.isBuffer(w.payload) ? w.payload : Buffer.from(w.payload ?? ''),
    qos: (w.qos ?? 0) as 0 | 1 | 2,
    retain: !!w.retain,
    properties: v5 ? (forwardableProperties(wp) ?? {}) : undefined,
    origin: ch.clientId,
    publisher: w.retain ? identity.username : undefined,
  };
  // the will lives as long as the connection (and after it): its payload must not be a view
  // that keeps the whole socket chunk of the CONNECT alive (a CONNECT sent with 64 KiB of
  // PUBLISHes behind it in one write would pin them all, per connection)
  ownPayload(message);
  return {
    clientId: ch.clientId,
    message,
    // 3.1.1 has no Will Delay Interval: VIGIL_WILL_GRACE_MS holds the will so a quick reconnect cancels it
    delayS: v5 ? (wp.willDelayInterval ?? 0) : ch.ctx.config.willGraceMs / 1000,
    identity,
    epoch,
    protocolVersion: ch.protocolVersion,
    messageExpiryS: v5 ? wp.messageExpiryInterval : undefined,
  };
}

/** The one place a CONNECT refusal becomes a CONNACK for the client's version (MQTT 5 §3.2.2.2; 3.1.1 table 3.1). */
export function refuse(ch: Channel, refusal: Refusal): void {
  const { metrics, log } = ch.ctx;
  metrics.connectOutcomesTotal.inc({ code: reasonName(refusal.code), version: String(ch.protocolVersion) });
  log.info({ clientId: ch.clientId, remote: ch.io.remoteAddress, code: reasonName(refusal.code), reason: refusal.reason }, 'connect refused');
  if (ch.protocolVersion === 5) {
    ch.send({ cmd: 'connack', sessionPresent: false, reasonCode: connackCode5(refusal.code), properties: ch.reasonString(refusal.reason) });
  } else {
    ch.send({ cmd: 'connack', sessionPresent: false, returnCode: connackCode311(refusal.code) });
  }
  ch.close(undefined, `connect_refused_${reasonName(refusal.code)}`);
}

// PUBLISH from a client and the acknowledgements of both directions. Steps: resolve the
// topic alias → validate → flow control → exactly-once check → authorize → route → ack.
import { isUtf8 } from 'node:buffer';
import type { IPubackPacket, IPubcompPacket, IPublishPacket, IPubrecPacket, IPubrelPacket } from 'mqtt-packet';
import type { Verdict } from '../../auth/types.js';
import type { StoredMessage } from '../../store/types.js';
import { ack, type Channel } from '../channel.js';
import { ProtocolViolation, RC, type ReasonCode } from '../reason-codes.js';
import { NO_TOPIC_LIMITS, validTopicName } from '../topics.js';
import { forwardableProperties } from '../message-properties.js';

const PUBACK = 0x40;
const PUBREC = 0x50;
const PUBCOMP = 0x70;
const SYS_IS_THE_BROKERS: Verdict = { allowed: false, reason: '$SYS is the broker\'s' };

/**
 * Cluster: a newer incarnation of the publisher's session holds it elsewhere (a QoS 2 mark was
 * refused as stale). It answers for the packet id; this link routes and acknowledges nothing more.
 */
class SessionMovedOn extends Error {}

export function handlePublish(ch: Channel, packet: IPublishPacket): void {
  const { config, metrics, authorizer } = ch.ctx;
  const session = ch.session!;
  const qos = packet.qos;
  const props = packet.properties;
  let topic = packet.topic;
  if (qos > 0 && !packet.messageId) throw new ProtocolViolation(RC.PROTOCOL_ERROR, 'packet id 0'); // [MQTT-2.2.1-3]

  if (ch.protocolVersion === 5 && props?.topicAlias !== undefined) {
    const alias = props.topicAlias;
    if (alias === 0 || alias > config.topicAliasMax) throw new ProtocolViolation(RC.TOPIC_ALIAS_INVALID, 'topic alias out of range'); // [MQTT-3.3.2-9]
    if (topic === '') {
      const known = ch.inboundAliases.get(alias);
      if (known === undefined) throw new ProtocolViolation(RC.PROTOCOL_ERROR, 'unknown topic alias'); // MQTT 5 §3.3.2.3.4
      topic = known;
    } else {
      ch.inboundAliases.set(alias, topic);
    }
  }
  if (ch.protocolVersion === 5) {
    // MQTT 5 §3.3.2.3.4: an empty topic stands for an alias; without one it is a Protocol Error
    if (topic === '') throw new ProtocolViolation(RC.PROTOCOL_ERROR, 'empty topic without a topic alias');
    if (props?.subscriptionIdentifier !== undefined) throw new ProtocolViolation(RC.PROTOCOL_ERROR, 'subscription identifier from a client'); // [MQTT-3.3.4-6]
    if (props?.responseTopic !== undefined && !validTopicName(props.responseTopic, NO_TOPIC_LIMITS)) throw new ProtocolViolation(RC.PROTOCOL_ERROR, 'response topic with wildcards'); // [MQTT-3.3.2-14]
  }
  if (!validTopicName(topic, config)) throw new ProtocolViolation(RC.TOPIC_NAME_INVALID, 'invalid topic name');
  if (qos === 0 && packet.dup) throw new ProtocolViolation(RC.MALFORMED_PACKET, 'DUP set on a QoS 0 PUBLISH'); // [MQTT-3.3.1-2]
  if (packet.retain && !config.retainAvailable) throw new ProtocolViolation(RC.RETAIN_NOT_SUPPORTED, 'retain not supported'); // MQTT 5 §3.2.2.3.5

  const known = qos === 2 && session.incomingQos2.has(packet.messageId!);
  // cluster: received, not routed to the end (a failed write, or a node that crashed): routed
  // again under the same id, so sessions that got the first try drop this copy
  const unroutedId = known ? session.incomingQos2.get(packet.messageId!) : undefined;
  if (known && unroutedId === undefined) {
    // a retransmission of a QoS 2 message we already routed: acknowledge again, deliver nothing [MQTT-4.3.3-9]
    answer(ch, packet, RC.SUCCESS);
    return;
  }
  if (qos === 2 && !known && session.incomingQos2.size >= config.maxInflight) {
    metrics.limitHitsTotal.inc({ limit: 'receive_maximum' });
    throw new ProtocolViolation(RC.RECEIVE_MAXIMUM_EXCEEDED, 'receive maximum exceeded'); // [MQTT-3.3.4-7]
  }

  ch.ctx.broker.received(qos);

  const message: StoredMessage = {
    topic,
    payload: packet.payload as Buffer,
    qos,
    retain: packet.retain,
    properties: ch.protocolVersion === 5 && props ? forwardableProperties(props) : undefined,
    expiresAtMs: props?.messageExpiryInterval !== undefined ? ch.ctx.clock.now() + props.messageExpiryInterval * 1000 : undefined,
    origin: ch.clientId,
  };
  if (unroutedId !== undefined) message.id = unroutedId;
  if (packet.retain) message.publisher = ch.identity!.username;

  // a payload that says it is UTF-8 and is not: refused rather than handed to subscribers
  // that will trust the indicator (MQTT 5 §3.3.2.3.2 allows the check, 0x99)
  if (props?.payloadFormatIndicator && !isUtf8(message.payload)) {
    ch.ctx.log.info({ clientId: ch.clientId, topic }, 'publish refused: payload is not the UTF-8 its format indicator says');
    return refusePublish(ch, packet, RC.PAYLOAD_FORMAT_INVALID, 'payload is not UTF-8', 'payload_format_invalid');
  }

  // $SYS is the broker's [§4.7.2]: a client publishes there only when the policy names it
  // (leading wildcards never match $ topics [MQTT-4.7.2-1]), never with allow-all
  if (topic.startsWith('$SYS/') || topic === '$SYS') {
    if (authorizer.allowAll) return decided(ch, packet, message, SYS_IS_THE_BROKERS);
  } else if (authorizer.allowAll) return routeAndAck(ch, packet, message);
  const verdict = authorizer.check(ch.identity!, 'publish', topic);
  if (verdict instanceof Promise) ch.waitFor(verdict, (v) => decided(ch, packet, message, v));
  else decided(ch, packet, message, verdict);
}

function decided(ch: Channel, packet: IPublishPacket, message: StoredMessage, verdict: Verdict): void {
  if (verdict.allowed) return routeAndAck(ch, packet, message);
  ch.ctx.log.info({ clientId: ch.clientId, username: ch.identity?.username, topic: message.topic, reason: verdict.reason }, 'publish denied');
  refusePublish(ch, packet, RC.NOT_AUTHORIZED, 'not authorized', 'not_authorized');
}

/** A PUBLISH not routed: 5.0 says why in PUBACK / PUBREC (QoS 0: dropped); 3.1.1 per VIGIL_DENIED_PUBLISH_311. */
function refusePublish(ch: Channel, packet: IPublishPacket, code: ReasonCode, reason: string, dropReason: string): void {
  const { metrics, config } = ch.ctx;
  metrics.messagesDroppedTotal.inc({ reason: dropReason });
  // 3.1.1 cannot say no in a PUBACK: acknowledged (and dropped), or the connection closed
  if (ch.protocolVersion !== 5 && config.deniedPublish311 === 'disconnect') return ch.close(undefined, 'publish_not_authorized');
  answer(ch, packet, code, reason);
}

function routeAndAck(ch: Channel, packet: IPublishPacket, message: StoredMessage): void {
  const session = ch.session!;
  const journal = session.journal;
  if (packet.qos === 2 && journal && message.id === undefined) {
    // QoS 2 from a persistent session in a cluster: the packet id and the message id are
    // stored before routing, so a PUBLISH retransmitted to any node after a failure is routed
    // under the same id (or, once routed, only acknowledged) — delivered once either way
    const id = packet.messageId!;
    message.id = journal.newMessageId();
    session.incomingQos2.set(id, message.id);
    const received = journal.incomingQos2(session, id, 'received', message.id).then(
      (kept) => (kept ? undefined : new SessionMovedOn()),
      (err: Error) => err,
    );
    ch.waitFor(received, (err) => {
      if (err === undefined) return route(ch, packet, message);
      session.incomingQos2.delete(id);
      // moved: routed here it would be routed again under another id by the session's new
      // incarnation, which has no record of it, when the client retransmits it there
      if (err instanceof SessionMovedOn) return movedOn(ch);
      refuseUnstored(ch, packet, message, err);
    });
    return;
  }
  route(ch, packet, message);
}

function route(ch: Channel, packet: IPublishPacket, message: StoredMessage): void {
  const session = ch.session!;
  let stored = ch.ctx.broker.publish(message, session.epoch);
  const journal = session.journal;
  if (packet.qos === 2 && journal) {
    // routed (forwards and sessions stored): a retransmission is only acknowledged from now on
    const id = packet.messageId!;
    stored = (stored ?? Promise.resolve())
      .then(() => journal.incomingQos2(session, id, 'routed'))
      .then((kept) => {
        if (!kept) throw new SessionMovedOn();
      });
  }
  if (stored === undefined && ch.acksWaiting === 0) return acknowledge(ch, packet);
  // cluster: acknowledge only once other nodes and persistent sessions have it, in the order
  // the publishes arrived; reading goes on meanwhile, so a publisher keeps its window full
  ch.acksWaiting++;
  const outcome = (stored ?? Promise.resolve()).then(
    () => undefined,
    (err: Error) => err,
  );
  ch.ackChain = ch.ackChain.then(() => outcome).then((err) => {
      ch.acksWaiting--;
      if (ch.state === 'closing' || ch.state === 'closed') return;
      if (err === undefined) return acknowledge(ch, packet);
      // no PUBREC: the client retransmits to the session's new node, which routes it again
      // under the same id (its 'received' mark landed before the move) or as new (it did not)
      if (err instanceof SessionMovedOn) return movedOn(ch);
      refuseUnstored(ch, packet, message, err);
  });
}

/** The session lives on elsewhere now: this link ends (if the move has not ended it already). */
function movedOn(ch: Channel): void {
  if (ch.state === 'closing' || ch.state === 'closed') return;
  ch.supersede(RC.SESSION_TAKEN_OVER, 'session taken over on another node');
}

/** Nothing is acknowledged that could not be stored: 5.0 says so, 3.1.1 can only drop the connection. */
function refuseUnstored(ch: Channel, packet: IPublishPacket, message: StoredMessage, err: Error): void {
  ch.ctx.log.warn({ clientId: ch.clientId, topic: message.topic, err: err.message }, 'publish could not be stored, not acknowledged');
  if (ch.protocolVersion === 5) {
    // the flow ends here: the packet id is free for a new message [MQTT-4.3.3]
    if (packet.qos === 2 && ch.session!.incomingQos2.delete(packet.messageId!)) {
      void ch.session!.journal?.incomingQos2(ch.session!, packet.messageId!, 'released').catch(() => undefined);
    }
    answer(ch, packet, RC.UNSPECIFIED_ERROR, 'could not be stored');
  } else {
    // the flow stays open: the client retransmits on reconnect (DUP), routed again under the same id
    ch.close(undefined, 'publish_not_stored');
  }
}

function acknowledge(ch: Channel, packet: IPublishPacket): void {
  answer(ch, packet, RC.SUCCESS);
}

/**
 * The one place a PUBLISH is answered: PUBACK (QoS 1) or PUBREC (QoS 2) carrying the
 * outcome. 5.0 sends a refusal's reason code (and reason string); 3.1.1 acks carry none, so
 * there a refusal is acknowledged like a success. A QoS 2 answered as received is remembered
 * until PUBREL; a refused one is not (the flow ends, MQTT 5 §4.3.3).
 */
function answer(ch: Channel, packet: IPublishPacket, outcome: ReasonCode, reason?: string): void {
  const id = packet.messageId!;
  if (packet.qos === 0) return;
  const accepted = outcome === RC.SUCCESS || ch.protocolVersion !== 5;
  if (accepted) {
    if (packet.qos === 2) ch.session!.incomingQos2.set(id, undefined);
    ch.io.write(ack(packet.qos === 1 ? PUBACK : PUBREC, id));
    return;
  }
  ch.send({ cmd: packet.qos === 1 ? 'puback' : 'pubrec', messageId: id, reasonCode: outcome, properties: ch.reasonString(reason ?? '') });
}

export function handlePubrel(ch: Channel, packet: IPubrelPacket): void {
  const id = packet.messageId!;
  const session = ch.session!;
  const known = session.incomingQos2.has(id);
  if (!known && ch.protocolVersion === 5) {
    ch.send({ cmd: 'pubcomp', messageId: id, reasonCode: RC.PACKET_IDENTIFIER_NOT_FOUND });
    return;
  }
  const messageId = session.incomingQos2.get(id);
  session.incomingQos2.delete(id);
  const journal = session.journal;
  if (!known || !journal) return ch.io.write(ack(PUBCOMP, id));
  // cluster: PUBCOMP frees the packet id for a new message, so the release must be stored (on
  // the replicas, with VIGIL_REDIS_WAIT_REPLICAS) first. Else a node resuming the session after
  // a crash or failover finds the id still in use and takes the next PUBLISH under it for a
  // retransmission: acknowledged and never routed. Reading goes on meanwhile.
  journal.incomingQos2(session, id, 'released').then(
    (kept) => {
      // moved: no PUBCOMP, which would free the id here while the session's new incarnation
      // still holds it (a new message under it would be taken for a retransmission there);
      // the client sends the PUBREL again to that node, which releases it [MQTT-4.4.0-1]
      if (!kept) return movedOn(ch);
      if (ch.state !== 'closing' && ch.state !== 'closed') ch.io.write(ack(PUBCOMP, id));
    },
    (err: Error) => {
      // not stored: the id stays in use and the flow open; the client sends PUBREL again on
      // reconnect [MQTT-4.4.0-1], which is then stored or answered by the session's new node
      if (!session.incomingQos2.has(id)) session.incomingQos2.set(id, messageId);
      ch.ctx.log.warn({ clientId: ch.clientId, packetId: id, err: err.message }, 'PUBREL could not be stored, PUBCOMP withheld');
      ch.close(undefined, 'pubrel_not_stored');
    },
  );
}

export function handlePuback(ch: Channel, packet: IPubackPacket): void {
  const session = ch.session!;
  if (session.complete(packet.messageId!, 1)) session.pump(ch.ctx.clock.now());
}

export function handlePubrec(ch: Channel, packet: IPubrecPacket): void {
  const session = ch.session!;
  const id = packet.messageId!;
  if ((packet.reasonCode ?? 0) >= 0x80) {
    // the receiver refused it: the flow ends here (MQTT 5 §4.3.3)
    session.abandon(id);
    session.pump(ch.ctx.clock.now());
    return;
  }
  const received = session.received(id);
  if (received instanceof Promise) {
    void received.then((ok) => {
      if (ok && session.link === ch) ch.sendPubrel(id);
    });
    return;
  }
  if (received) ch.sendPubrel(id);
  else if (ch.protocolVersion === 5) ch.send({ cmd: 'pubrel', messageId: id, reasonCode: RC.PACKET_IDENTIFIER_NOT_FOUND });
  else ch.sendPubrel(id);
}

export function handlePubcomp(ch: Channel, packet: IPubcompPacket): void {
  const session = ch.session!;
  if (session.complete(packet.messageId!, 2)) session.pump(ch.ctx.clock.now());
}

// SUBSCRIBE and UNSUBSCRIBE. Each filter is checked on its own: validity, limits and
// authorization give a per-filter reason code in SUBACK; retained messages follow the SUBACK.
import type { ISubscribePacket, ISubscription, IUnsubscribePacket } from 'mqtt-packet';
import type { Verdict } from '../../auth/types.js';
import type { Subscription } from '../../store/types.js';
import type { Channel } from '../channel.js';
import { ProtocolViolation, RC, subackRefusal, type ReasonCode } from '../reason-codes.js';
import { parseShared, sharedName, validTopicFilter } from '../topics.js';

interface Requested {
  readonly sub: Subscription | null;
  /** Reason code when refused before authorization. */
  readonly refusedWith?: ReasonCode;
}

export function handleSubscribe(ch: Channel, packet: ISubscribePacket): void {
  const { authorizer } = ch.ctx;
  const v5 = ch.protocolVersion === 5;
  const subscriptionId = packet.properties?.subscriptionIdentifier;
  if (!packet.messageId) throw new ProtocolViolation(RC.PROTOCOL_ERROR, 'packet id 0'); // [MQTT-2.2.1-3]
  if (subscriptionId === 0) throw new ProtocolViolation(RC.PROTOCOL_ERROR, 'subscription identifier 0'); // MQTT 5 §3.8.2.1.2
  if (!packet.subscriptions || packet.subscriptions.length === 0) throw new ProtocolViolation(RC.PROTOCOL_ERROR, 'SUBSCRIBE without filters'); // [MQTT-3.8.3-3]

  const requested: Requested[] = packet.subscriptions.map((s) => parse(ch, s, v5 ? subscriptionId : undefined));
  const verdicts: (Verdict | Promise<Verdict>)[] = requested.map((r) =>
    r.sub === null || authorizer.allowAll ? ALLOWED : authorizer.check(ch.identity!, 'subscribe', r.sub.filter),
  );
  if (verdicts.some((v) => v instanceof Promise)) {
    ch.waitFor(Promise.all(verdicts), (vs) => granted(ch, packet, requested, vs));
  } else {
    granted(ch, packet, requested, verdicts as Verdict[]);
  }
}

const ALLOWED: Verdict = { allowed: true };

function parse(ch: Channel, s: ISubscription, subscriptionId: number | undefined): Requested {
  const { config } = ch.ctx;
  const shared = parseShared(s.topic);
  if (!shared || !validTopicFilter(shared.filter, config)) return { sub: null, refusedWith: RC.TOPIC_FILTER_INVALID };
  if (shared.group !== undefined && s.nl) throw new ProtocolViolation(RC.PROTOCOL_ERROR, 'No Local on a shared subscription'); // [MQTT-3.8.3-4]
  if ((s.rh ?? 0) > 2) throw new ProtocolViolation(RC.PROTOCOL_ERROR, 'retain handling 3'); // [MQTT-3.8.3-5]
  return {
    sub: {
      filter: shared.filter,
      group: shared.group,
      qos: s.qos,
      noLocal: !!s.nl,
      retainAsPublished: !!s.rap,
      retainHandling: (s.rh ?? 0) as 0 | 1 | 2,
      subscriptionId,
    },
  };
}

function granted(ch: Channel, packet: ISubscribePacket, requested: Requested[], verdicts: Verdict[]): void {
  const { broker, config, metrics, log } = ch.ctx;
  const session = ch.session!;
  const codes: ReasonCode[] = [];
  const retainedFor: Subscription[] = [];
  for (let i = 0; i < requested.length; i++) {
    const { sub, refusedWith } = requested[i];
    if (sub === null) {
      codes.push(subackRefusal(refusedWith ?? RC.UNSPECIFIED_ERROR, ch.protocolVersion));
      continue;
    }
    if (!verdicts[i].allowed) {
      log.info({ clientId: ch.clientId, username: ch.identity?.username, filter: sub.filter, reason: (verdicts[i] as { reason?: string }).reason }, 'subscribe denied');
      codes.push(subackRefusal(RC.NOT_AUTHORIZED, ch.protocolVersion));
      continue;
    }
    const key = sharedName(sub);
    if (!session.subscriptions.has(key) && session.subscriptions.size >= config.maxSubscriptionsPerClient) {
      metrics.limitHitsTotal.inc({ limit: 'subscriptions_per_client' });
      codes.push(subackRefusal(RC.QUOTA_EXCEEDED, ch.protocolVersion));
      continue;
    }
    const existed = broker.subscribe(session, sub);
    codes.push(sub.qos);
    // [MQTT-3.3.1-9..11] retain handling; shared subscriptions get no retained messages (MQTT 5 §4.8.2)
    if (sub.group === undefined && (sub.retainHandling === 0 || (sub.retainHandling === 1 && !existed))) retainedFor.push(sub);
  }
  ch.send({ cmd: 'suback', messageId: packet.messageId!, granted: codes });
  for (const sub of retainedFor) broker.sendRetained(session, sub);
}

export function handleUnsubscribe(ch: Channel, packet: IUnsubscribePacket): void {
  const session = ch.session!;
  if (!packet.messageId) throw new ProtocolViolation(RC.PROTOCOL_ERROR, 'packet id 0'); // [MQTT-2.2.1-3]
  if (!packet.unsubscriptions || packet.unsubscriptions.length === 0) throw new ProtocolViolation(RC.PROTOCOL_ERROR, 'UNSUBSCRIBE without filters'); // [MQTT-3.10.3-2]
  const codes = packet.unsubscriptions.map((raw) => {
    const shared = parseShared(raw);
    const removed = shared !== null && ch.ctx.broker.unsubscribe(session, sharedName(shared));
    return removed ? RC.SUCCESS : RC.NO_SUBSCRIPTION_EXISTED;
  });
  if (ch.protocolVersion === 5) ch.send({ cmd: 'unsuback', messageId: packet.messageId!, granted: codes });
  else ch.send({ cmd: 'unsuback', messageId: packet.messageId!, granted: [] });
}

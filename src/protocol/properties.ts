// MQTT 5 properties a client may send, per packet (MQTT 5 §2.2.2.2 table 2-4). mqtt-packet
// parses any known property in any packet and turns a repeated one into an array; this
// pure check answers what the spec says about both. Used by the channel before a handler.
import { RC, type ReasonCode } from './reason-codes.js';

export interface PropertyViolation {
  readonly code: ReasonCode;
  readonly reason: string;
}

const ACKS = ['reasonString', 'userProperties'];

/** Properties valid in each packet a client sends (and in CONNECT's will). */
const ALLOWED: Record<string, ReadonlySet<string>> = {
  connect: new Set(['sessionExpiryInterval', 'receiveMaximum', 'maximumPacketSize', 'topicAliasMaximum', 'requestResponseInformation', 'requestProblemInformation', 'userProperties', 'authenticationMethod', 'authenticationData']),
  will: new Set(['willDelayInterval', 'payloadFormatIndicator', 'messageExpiryInterval', 'contentType', 'responseTopic', 'correlationData', 'userProperties']),
  publish: new Set(['payloadFormatIndicator', 'messageExpiryInterval', 'topicAlias', 'responseTopic', 'correlationData', 'userProperties', 'subscriptionIdentifier', 'contentType']),
  puback: new Set(ACKS),
  pubrec: new Set(ACKS),
  pubrel: new Set(ACKS),
  pubcomp: new Set(ACKS),
  subscribe: new Set(['subscriptionIdentifier', 'userProperties']),
  unsubscribe: new Set(['userProperties']),
  disconnect: new Set(['sessionExpiryInterval', 'reasonString', 'userProperties', 'serverReference']),
  auth: new Set(['authenticationMethod', 'authenticationData', 'reasonString', 'userProperties']),
};

/**
 * A property not defined for the packet is a Malformed Packet (MQTT 5 §2.2.2.2); one given
 * twice (other than User Property) is a Protocol Error — each property's section says so,
 * e.g. §3.1.2.11.2, §3.3.2.3.2, §3.8.2.1.2.
 */
export function propertyViolation(packetType: string, properties: object): PropertyViolation | undefined {
  const allowed = ALLOWED[packetType];
  for (const [name, value] of Object.entries(properties)) {
    if (value === undefined) continue;
    if (!allowed?.has(name)) return { code: RC.MALFORMED_PACKET, reason: `${name} is not a ${packetType} property` };
    if (Array.isArray(value)) return { code: RC.PROTOCOL_ERROR, reason: `${name} given more than once` };
  }
  return undefined;
}

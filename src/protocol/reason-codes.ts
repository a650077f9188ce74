// MQTT 5 reason codes, and the one place that turns them into MQTT 3.1.1 answers.
export const RC = {
  SUCCESS: 0x00,
  GRANTED_QOS_1: 0x01,
  GRANTED_QOS_2: 0x02,
  DISCONNECT_WITH_WILL: 0x04,
  NO_MATCHING_SUBSCRIBERS: 0x10,
  NO_SUBSCRIPTION_EXISTED: 0x11,
  CONTINUE_AUTHENTICATION: 0x18,
  REAUTHENTICATE: 0x19,
  UNSPECIFIED_ERROR: 0x80,
  MALFORMED_PACKET: 0x81,
  PROTOCOL_ERROR: 0x82,
  IMPLEMENTATION_SPECIFIC_ERROR: 0x83,
  UNSUPPORTED_PROTOCOL_VERSION: 0x84,
  CLIENT_IDENTIFIER_NOT_VALID: 0x85,
  BAD_USERNAME_OR_PASSWORD: 0x86,
  NOT_AUTHORIZED: 0x87,
  SERVER_UNAVAILABLE: 0x88,
  SERVER_BUSY: 0x89,
  BANNED: 0x8a,
  SERVER_SHUTTING_DOWN: 0x8b,
  BAD_AUTHENTICATION_METHOD: 0x8c,
  KEEP_ALIVE_TIMEOUT: 0x8d,
  SESSION_TAKEN_OVER: 0x8e,
  TOPIC_FILTER_INVALID: 0x8f,
  TOPIC_NAME_INVALID: 0x90,
  PACKET_IDENTIFIER_IN_USE: 0x91,
  PACKET_IDENTIFIER_NOT_FOUND: 0x92,
  RECEIVE_MAXIMUM_EXCEEDED: 0x93,
  TOPIC_ALIAS_INVALID: 0x94,
  PACKET_TOO_LARGE: 0x95,
  MESSAGE_RATE_TOO_HIGH: 0x96,
  QUOTA_EXCEEDED: 0x97,
  ADMINISTRATIVE_ACTION: 0x98,
  PAYLOAD_FORMAT_INVALID: 0x99,
  RETAIN_NOT_SUPPORTED: 0x9a,
  QOS_NOT_SUPPORTED: 0x9b,
  USE_ANOTHER_SERVER: 0x9c,
  SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: 0x9e,
  CONNECTION_RATE_EXCEEDED: 0x9f,
  MAXIMUM_CONNECT_TIME: 0xa0,
  SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: 0xa1,
  WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: 0xa2,
} as const;

/** An MQTT 5 reason code Vigil sends (CONNACK, PUBACK/PUBREC/PUBREL/PUBCOMP, SUBACK, DISCONNECT, AUTH). */
export type ReasonCode = (typeof RC)[keyof typeof RC];

const KNOWN = new Set<number>(Object.values(RC));

function isReasonCode(code: number): code is ReasonCode {
  return KNOWN.has(code);
}

/** A code from outside (the packet parser's error) as a ReasonCode; an unknown one becomes `fallback`. */
export function toReasonCode(code: number | undefined, fallback: ReasonCode): ReasonCode {
  return code !== undefined && isReasonCode(code) ? code : fallback;
}

/** MQTT 3.1.1 CONNACK return codes for a 5.0 reason code [MQTT-3.2.2-4, table 3.1]. */
export function connackCode311(reasonCode: ReasonCode): number {
  switch (reasonCode) {
    case RC.SUCCESS: return 0x00;
    case RC.UNSUPPORTED_PROTOCOL_VERSION: return 0x01;
    case RC.CLIENT_IDENTIFIER_NOT_VALID: return 0x02;
    case RC.BAD_USERNAME_OR_PASSWORD:
    case RC.BAD_AUTHENTICATION_METHOD: return 0x04;
    case RC.NOT_AUTHORIZED:
    case RC.BANNED: return 0x05;
    default: return 0x03; // server unavailable: busy, unavailable, anything else
  }
}

/** Reason codes a 5.0 CONNACK may carry (MQTT 5 §3.2.2.2); any other refusal goes as 0x80 Unspecified error. */
const CONNACK_CODES = new Set<number>([0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8c, 0x90, 0x95, 0x97, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9f]);

export function connackCode5(reasonCode: number): number {
  return CONNACK_CODES.has(reasonCode) ? reasonCode : RC.UNSPECIFIED_ERROR;
}

/** A refused subscription's SUBACK code: 5.0 says why; 3.1.1 has one failure code, 0x80 [MQTT-3.9.3-2]. */
export function subackRefusal(reasonCode: ReasonCode, protocolVersion: number): ReasonCode {
  return protocolVersion === 5 ? reasonCode : RC.UNSPECIFIED_ERROR;
}

/** Short label for metrics and logs. */
export function reasonName(code: number): string {
  for (const [k, v] of Object.entries(RC)) if (v === code) return k.toLowerCase();
  return `0x${code.toString(16)}`;
}

/** An error that ends a connection with a reason code (5.0 DISCONNECT before the close). */
export class ProtocolViolation extends Error {
  constructor(readonly reasonCode: ReasonCode, message: string) {
    super(message);
  }
}

// State that outlives a connection, one interface per concern. Each has an in-memory
// implementation (single node, the default) and a Redis one (cluster). Both must pass the
// same contract tests in test/contract/.
import type { Identity } from '../auth/types.js';

/** Properties of an application message that travel with it (MQTT 5). */
export interface MessageProperties {
  payloadFormatIndicator?: boolean;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Buffer;
  userProperties?: Record<string, string | string[]>;
}

/** An application message as the broker routes and stores it. */
export interface StoredMessage {
  topic: string;
  payload: Buffer;
  qos: 0 | 1 | 2;
  retain: boolean;
  properties?: MessageProperties;
  /** Absolute expiry, ms since epoch (MQTT 5 Message Expiry Interval); undefined = never. */
  expiresAtMs?: number;
  /** Client id of the publisher (No Local), '' for broker-originated messages. */
  origin: string;
}

export interface RetainedStore {
  /** Stores or (empty payload) deletes the retained message of a topic. */
  set(message: StoredMessage): void | Promise<void>;
  /** Retained messages whose topic matches a filter (expired ones are left out and removed). */
  match(filter: string, nowMs: number): StoredMessage[] | Promise<StoredMessage[]>;
  count(): number | Promise<number>;
}

/** A will as registered at CONNECT, with the identity proven then. */
export interface WillRecord {
  clientId: string;
  message: StoredMessage;
  /** Seconds after an abnormal disconnect (MQTT 5 Will Delay Interval, or the 3.1.1 grace). */
  delayS: number;
  identity: Identity;
  /** Session incarnation that registered it (fencing in the cluster). */
  epoch: number;
  protocolVersion: 3 | 4 | 5;
  /** Message Expiry Interval of the will, counted from when it is published. */
  messageExpiryS?: number;
}

export interface Subscription {
  filter: string;
  qos: 0 | 1 | 2;
  noLocal: boolean;
  retainAsPublished: boolean;
  retainHandling: 0 | 1 | 2;
  subscriptionId?: number;
  /** Shared subscription group ($share/{group}/{filter}), or undefined. */
  group?: string;
}

/** What a persistent session carries between connections. */
export interface SessionSnapshot {
  clientId: string;
  subscriptions: Subscription[];
  /** Outgoing messages not yet completed: sent-unacknowledged first, then queued. */
  pending: PendingMessage[];
  /** Packet ids of incoming QoS 2 messages received but not yet released. */
  incomingQos2: number[];
  expiryIntervalS: number;
  epoch: number;
}

export interface PendingMessage {
  message: StoredMessage;
  /** Delivery QoS (min of message and subscription). */
  qos: 0 | 1 | 2;
  subscriptionIds?: number[];
  /** RETAIN flag as delivered (Retain As Published), not the stored message's. */
  retainFlag: boolean;
  /** Set once sent: the packet id and whether PUBREC arrived (QoS 2, waiting for PUBCOMP). */
  packetId?: number;
  released?: boolean;
}

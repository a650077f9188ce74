// State that outlives a connection, one interface per concern, each with a contract test in
// test/contract/. Retained messages have an in-memory implementation (single node) and a
// Redis one (cluster); persistent sessions are stored only by the cluster (SessionStore).
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
  /**
   * Subject (username) of the identity that published a retained message or will, so that
   * VIGIL_REVOKED_RETAINED=drop can find what a revoked identity left retained. Unset otherwise.
   */
  publisher?: string;
  /**
   * Cluster: id of a QoS 1/2 message, given by the node its publisher sent it to; a session
   * drops a second copy (src/broker/recent-ids.ts). Unset on a single node.
   */
  id?: string;
}

export interface RetainedStore {
  /**
   * Stores or (empty payload) deletes the retained message of a topic. `writerEpoch` is the
   * incarnation of the publishing client (for a will: the will record's epoch): a write is
   * ignored when the topic's last write came from the same client with a higher epoch
   * (docs/cluster.md, "Retained fencing"). Without it the write is not fenced.
   */
  set(message: StoredMessage, writerEpoch?: number): void | Promise<void>;
  /** Retained messages whose topic matches a filter (expired ones are left out and removed). */
  match(filter: string, nowMs: number): StoredMessage[] | Promise<StoredMessage[]>;
  /**
   * The same messages one at a time, read from the store as the caller goes (a retained
   * snapshot on subscribe): memory O(1) per cursor, whatever the number of matches.
   */
  cursor(filter: string): RetainedCursor;
  /** How many retained messages there are (both stores know at once: the Redis one mirrors them). */
  count(): number;
}

/** A lazy walk over the retained messages matching one filter. */
export interface RetainedCursor {
  /** The next matching message not expired at `nowMs`; undefined once the walk is done. */
  next(nowMs: number): StoredMessage | undefined;
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
  /**
   * Cluster: those of them not routed yet when stored, with the message id they were given:
   * a retransmission routes them again under that id (copies are dropped by id).
   */
  unroutedQos2?: [packetId: number, messageId: string][];
  expiryIntervalS: number;
  epoch: number;
  /** Ids of the messages that reached the session lately (cluster), oldest first. */
  seen?: string[];
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
  /** Position in the persistent session store (SessionStore), set by load / appendPending. */
  storeSeq?: number;
  /** Memory only: a QoS 2 message held in the queue until its append is stored (cluster). */
  unstored?: boolean;
}

/**
 * Persistent sessions that outlive the node holding them: the cluster's, in Redis. There is
 * deliberately no memory implementation: on one node the live Session objects in
 * Broker.sessions are the whole state (a session outlives its connection there, not its
 * process), so a store would only copy them. The cluster writes through to this store
 * (src/cluster/bridge.ts) so another node can resume a session.
 * Every write names the incarnation (epoch) making it: save()/delete() are refused with
 * StaleEpochError when a newer epoch has saved, the incremental operations unless the stored
 * epoch is exactly theirs. A session exists once save() ran for it.
 */
export interface SessionStore {
  load(clientId: string): Promise<SessionSnapshot | undefined>;
  /**
   * Replaces the whole session; returns the storeSeq given to each pending message, in order.
   * The seen ids are kept, and those of the pending messages written are added. `held`: this
   * epoch's claim marked the stored session (a resume, or a reconnect to the node holding its
   * copy); refused unless it still carries that mark (ended or claimed by a newer incarnation since).
   */
  save(snapshot: SessionSnapshot, held?: boolean): Promise<number[]>;
  /** A new incarnation takes the session: writes of older epochs are refused from now on. */
  fence(clientId: string, epoch: number): Promise<void>;
  /** Ends the session; false when there was none. */
  delete(clientId: string, epoch: number): Promise<boolean>;
  /**
   * Adds an outgoing message at the end of the pending list; returns its storeSeq, or
   * undefined (nothing added) when a message with the same id reached the session lately.
   */
  appendPending(clientId: string, epoch: number, pending: PendingMessage): Promise<number | undefined>;
  /** Records the packet id a pending message was sent with, and whether PUBREC arrived. */
  markPending(clientId: string, epoch: number, storeSeq: number, packetId: number, released: boolean): Promise<boolean>;
  /** PUBACK / PUBCOMP / dropped: the message is done. False when unknown. */
  removePending(clientId: string, epoch: number, storeSeq: number): Promise<boolean>;
  putSubscription(clientId: string, epoch: number, sub: Subscription): Promise<void>;
  removeSubscription(clientId: string, epoch: number, filter: string, group?: string): Promise<boolean>;
  /**
   * Records an incoming QoS 2 packet id (true when new). `unroutedId`: the message was given
   * that id and is not routed yet; a later call without it records that it was routed.
   */
  addIncomingQos2(clientId: string, epoch: number, packetId: number, unroutedId?: string): Promise<boolean>;
  removeIncomingQos2(clientId: string, epoch: number, packetId: number): Promise<boolean>;
  /** Disconnected: the session ends in `ms`; connected again: undefined (no end). */
  setExpiry(clientId: string, epoch: number, ms: number | undefined): Promise<void>;
}

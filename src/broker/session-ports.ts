// What a session is wired with: the connection it is attached to (SessionLink), its queue
// limits, the events it reports to the broker's metrics, and the journal a persistent cluster
// session writes through (cluster/session-journal.ts). Session (session.ts) uses these; the
// channel, the broker and the cluster side implement them.
import type { PendingMessage } from '../store/types.js';
import type { OutgoingPublish } from '../protocol/publish-encoder.js';
import type { ReasonCode } from '../protocol/reason-codes.js';
import type { Session } from './session.js';

/** What a session needs from the connection it is attached to. */
export interface SessionLink {
  readonly protocolVersion: number;
  /** How many QoS 1/2 messages may be unacknowledged at once (client Receive Maximum, capped). */
  readonly sendQuota: number;
  /** False while the socket buffer is past its limit. */
  readonly writable: boolean;
  /** False once the connection is closing: nothing more is written to it. */
  readonly open: boolean;
  /** Writes a PUBLISH; returns false if it was not written (too large for the client, closed). */
  sendPublish(out: OutgoingPublish, qos: 0 | 1 | 2, retain: boolean, subscriptionIds: readonly number[] | undefined, packetId: number, dup: boolean): boolean;
  sendPubrel(packetId: number): void;
  /** Ends the connection because the session queue overflowed (disconnect policy). */
  closeForQuota(limit: QueueLimit): void;
  /** Calls pump() again on a later event-loop turn (a long retained snapshot yields to other clients). */
  pumpLater(): void;
  /**
   * Cluster: closes the connection because the client connected on another node (5.0
   * DISCONNECT 0x8E), or this node lost its lease and may not act as owner (0x89): the will is
   * not this node's to decide.
   */
  supersede(reasonCode: ReasonCode, why: string, leaseLost?: boolean): void;
  /** A new connection of the same client id on this node took the session [MQTT-3.1.4-3]: close now. */
  takeover(): void;
}

export type OverflowPolicy = 'drop-oldest' | 'drop-new' | 'disconnect';

/** Bytes queued in all sessions of a node together (VIGIL_QUEUED_BYTES_BUDGET). */
export interface QueueBudget {
  readonly limit: number;
  /** Kept by the sessions as they queue and dequeue; recounted by the broker's sweep. */
  used: number;
}

export interface SessionLimits {
  readonly maxQueued: number;
  readonly maxQueuedBytes: number;
  readonly budget: QueueBudget;
  readonly overflow: OverflowPolicy;
}

/** The limit a queue overflow hit, as vigil_limit_hits_total names it. */
export type QueueLimit = 'max_queued' | 'max_queued_bytes' | 'queued_bytes_budget';

export type DropReason = 'offline_qos0' | 'backpressure_qos0' | 'expired' | 'too_large' | 'not_authorized' | 'queue_full' | 'queue_bytes_full' | 'queue_budget_full';

/** How a retained snapshot ended: all sent, or abandoned (docs: "Retained snapshots"). */
export type SnapshotEnd = 'complete' | 'unsubscribed' | 'replaced' | 'disconnected';

export interface SessionEvents {
  dropped(reason: DropReason): void;
  sent(qos: 0 | 1 | 2): void;
  snapshotEnded(how: SnapshotEnd): void;
}

/**
 * Write-through of a persistent session's outgoing QoS 1/2 messages (cluster: Redis), so
 * another node can resume the session after this one crashed.
 */
export interface SessionJournal {
  /**
   * A QoS 1/2 message reached the session: resolves once it is stored (the publisher's ack,
   * or the bus entry, waits for it); failures are also handled by the journal itself.
   */
  added(session: Session, pending: PendingMessage): Promise<void>;
  /** Sent with a packet id. */
  sent(session: Session, pending: PendingMessage): void;
  /**
   * PUBREC arrived. PUBREL goes out once this resolves: a node resuming the session after a
   * crash then sends PUBREL too, never the PUBLISH again (a client that already completed
   * the flow would take it for a new message). Rejects when it could not be stored.
   */
  released(session: Session, pending: PendingMessage): Promise<unknown>;
  /** Completed, refused or dropped. */
  done(session: Session, pending: PendingMessage): void;
  /**
   * An incoming QoS 2 packet id was received (stored with the message id before routing),
   * routed (before PUBREC) or released (PUBREL). A retransmission to another node after a
   * crash is then routed again under the same id, or only acknowledged: never delivered twice.
   * False: a newer incarnation of the session holds it elsewhere (the write was refused as
   * stale); the caller routes and acknowledges nothing more under this packet id.
   */
  incomingQos2(session: Session, packetId: number, state: 'received' | 'routed' | 'released', messageId?: string): Promise<boolean>;
  /** A cluster-wide id for a message received from this session's client. */
  newMessageId(): string;
}

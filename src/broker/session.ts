// A session: subscriptions, the outgoing in-flight window and queue, and incoming QoS 2
// state. It outlives connections when its expiry interval says so. The attached connection
// is reached only through SessionLink (session-ports.ts), so a session never touches a socket.
//
// Just over 400 lines on purpose: the in-flight window, the queue (with its QoS 2 hold) and
// the retained snapshots are drained by one pump() under one send quota and one order rule;
// apart, each part would need the others' state.
import type { Authorizer, Identity, ReceiveVerdicts } from '../auth/types.js';
import type { PendingMessage, RetainedCursor, Subscription } from '../store/types.js';
import type { Subscriber } from './topic-trie.js';
import { OutgoingPublish } from '../protocol/publish-encoder.js';
import { ownPayload } from '../store/own-payload.js';
import type { RecentIds } from './recent-ids.js';
import type { DropReason, QueueLimit, SessionEvents, SessionJournal, SessionLimits, SessionLink, SnapshotEnd } from './session-ports.js';

const DROP_REASON = { max_queued: 'queue_full', max_queued_bytes: 'queue_bytes_full', queued_bytes_budget: 'queue_budget_full' } as const satisfies Record<QueueLimit, DropReason>;

/** What a queued message counts against the byte limits: its payload and topic. */
export function queuedSize(pending: PendingMessage): number {
  return pending.message.payload.length + pending.message.topic.length;
}

/**
 * The retained messages a subscription still has to get, read from the store as the window
 * opens: a cursor, never a copy, so a slow subscriber holds O(window) whatever the number
 * of matches. Snapshot messages are not queued and not bound by the queue limit.
 */
interface RetainedSnapshot {
  /** sharedName() of the subscription it is for. */
  readonly key: string;
  readonly cursor: RetainedCursor;
}

/** Snapshot messages sent per pump() before yielding the event loop to other clients. */
const SNAPSHOT_BATCH = 256;

/**
 * The queue and the snapshot list of every session that never had an entry in them: one
 * shared empty array each, replaced by a session's own on its first push (most sessions of a
 * connect storm never queue nor subscribe: two arrays per connection). Frozen, so a push
 * that skipped the replacement throws instead of sharing entries between sessions.
 */
const NO_MESSAGES = Object.freeze([]) as unknown as PendingMessage[];
const NO_SNAPSHOTS = Object.freeze([]) as unknown as RetainedSnapshot[];

export class Session implements Subscriber {
  // The three maps are made on first use. Most sessions of a connect storm never subscribe,
  // never have a message in flight and never get a QoS 2 PUBLISH: three empty Maps were
  // ~600 bytes of every connection's allocation, and the share of a storm's sessions that a
  // scavenge promotes took them along into the old generation. Hot paths that only ask
  // whether one has entries read the counts below, which make nothing.
  get subscriptions(): Map<string, Subscription> {
    return (this.subs ??= new Map());
  }
  get inflight(): Map<number, PendingMessage> {
    return (this.inflightMap ??= new Map());
  }
  /**
   * Incoming QoS 2 packet ids not yet released (PUBREL), each with the id of its message while
   * that is not routed yet (cluster), undefined once routed.
   */
  get incomingQos2(): Map<number, string | undefined> {
    return (this.qos2In ??= new Map());
  }
  private subs?: Map<string, Subscription>;
  private inflightMap?: Map<number, PendingMessage>;
  private qos2In?: Map<number, string | undefined>;

  get subscriptionCount(): number {
    return this.subs?.size ?? 0;
  }
  get inflightCount(): number {
    return this.inflightMap?.size ?? 0;
  }
  private queue: PendingMessage[] = NO_MESSAGES;
  /** Retained snapshots being sent, oldest subscribe first. */
  private snapshots: RetainedSnapshot[] = NO_SNAPSHOTS;
  private queueHead = 0;
  /** Bytes (queuedSize) of the messages in `queue` from queueHead on. */
  queuedBytes = 0;
  private nextPacketId = 1;
  link: SessionLink | null = null;
  /** Absolute time the session ends while disconnected, ms; undefined while connected. */
  expiresAtMs?: number;
  /** Incarnation counter: bumped on every new connection (cluster fencing). */
  epoch = 0;
  /**
   * The identity that created the session (auth/session-owner.ts); another identity's CONNECT
   * for this client id is refused. Undefined only for sessions built outside a CONNECT.
   */
  owner?: string;
  /** Set for persistent sessions in a cluster. */
  journal?: SessionJournal;
  /** Cluster: ids of the messages that reached this session lately (a second copy is dropped). */
  seen?: RecentIds;
  /**
   * Cluster: a newer incarnation holds this session on another node. Kept a little while so
   * messages still routed here follow it there (journal.added) instead of being lost.
   */
  movedAway = false;
  /** Whose permissions decide what this session receives: the identity of its latest connection. */
  private receiver?: Identity;
  /** Null: every delivery is allowed (no policy, or no connection seen yet; see mayReceive). */
  private receiving: ReceiveVerdicts | null = null;

  // Routing scratch space: dedupes overlapping subscriptions within one publish.
  matchGen = 0;
  matchQos: 0 | 1 | 2 = 0;
  matchRetainAsPublished = false;
  matchIds: number[] | undefined;

  constructor(
    readonly clientId: string,
    public expiryIntervalS: number,
    private readonly limits: SessionLimits,
    private readonly events: SessionEvents,
    private readonly permissions: Pick<Authorizer, 'receiveVerdicts'>,
  ) {}

  /**
   * The session receives as this identity from now on (CONNECT, MQTT 5 re-authentication).
   * It stays in force while the session is offline, so a message a reconnect could not
   * receive anyway is not queued for it.
   */
  receiveAs(identity: Identity): void {
    this.receiver = identity;
    this.receiving = this.permissions.receiveVerdicts(identity);
  }

  /**
   * The delivery check: may the session's identity receive this topic under the policy and
   * revocations in force now? Every PUBLISH the session sends passes here — live, shared,
   * forwarded from another node, a will, retained on subscribe (all through deliver), queued
   * (pump) and resent after a reconnect (resume). Without a policy it is one branch. A denial
   * is counted, never logged (it can happen per message).
   */
  mayReceive(topic: string): boolean {
    let receiving = this.receiving;
    if (receiving === null) return true;
    if (receiving.stale) receiving = this.receiving = this.permissions.receiveVerdicts(this.receiver!);
    if (receiving === null || receiving.allows(topic)) return true;
    this.events.dropped('not_authorized');
    return false;
  }

  get online(): boolean {
    return this.link !== null;
  }

  get queued(): number {
    return this.queue.length - this.queueHead;
  }

  /**
   * Delivers one routed message at the given QoS; queues when it cannot be sent now. A
   * persistent session in a cluster answers with its journal write: acknowledge the message
   * (to its publisher, or the bus) once that resolves.
   */
  deliver(out: OutgoingPublish, qos: 0 | 1 | 2, retain: boolean, subscriptionIds: number[] | undefined): Promise<void> | undefined {
    if (!this.mayReceive(out.message.topic)) return undefined;
    const link = this.link;
    if (qos === 0) {
      if (link === null) this.events.dropped('offline_qos0');
      else if (!link.writable) this.events.dropped('backpressure_qos0');
      else if (link.sendPublish(out, 0, retain, subscriptionIds, 0, false)) this.events.sent(0);
      return undefined;
    }
    const pending: PendingMessage = { message: out.message, qos, retainFlag: retain, subscriptionIds };
    const stored = this.journal?.added(this, pending);
    if (this.movedAway) return stored; // the journal hands it to the node that holds the session now
    if (qos === 2 && stored !== undefined) {
      this.holdUntilStored(pending, stored);
      return stored;
    }
    if (link !== null && this.queued === 0 && link.writable && this.inflight.size < link.sendQuota) {
      this.transmit(link, pending, out, false);
    } else {
      this.enqueue(pending);
    }
    return stored;
  }

  /**
   * Exactly once across nodes: a QoS 2 message to a persistent cluster session goes out only
   * once the store has it, and with it its id among the session's seen ids. Sent before that,
   * a copy routed again under the same id (a publisher's retransmission after a failure, a dead
   * node's bus entries handed on) would reach the session a second time wherever it resumes,
   * since only this node's memory knew the client had it. One Redis round trip per QoS 2
   * delivery; QoS 1 is not held (at least once allows the copy).
   */
  private holdUntilStored(pending: PendingMessage, stored: Promise<void>): void {
    pending.unstored = true;
    this.enqueue(pending);
    stored.then(
      () => {
        pending.unstored = false;
        this.link?.pumpLater();
      },
      // not stored: the session is saved whole once Redis answers (storedWhole), then it goes
      () => undefined,
    );
  }

  /** A whole save of the session stored these pending messages: none of them is held any more. */
  storedWhole(saved: readonly PendingMessage[]): void {
    for (const p of saved) p.unstored = false;
    this.link?.pumpLater();
  }

  /**
   * Queues a message behind the in-flight window. Three limits apply — messages per session,
   * bytes per session, bytes of all queues of the node — all with the one overflow policy.
   */
  private enqueue(pending: PendingMessage): void {
    const size = queuedSize(pending);
    const { maxQueued, maxQueuedBytes, budget } = this.limits;
    // one message larger than a limit could only flush the queue and still not fit
    if (size > maxQueuedBytes) return void this.overflow(pending, 'max_queued_bytes', false);
    if (size > budget.limit) return void this.overflow(pending, 'queued_bytes_budget', false);
    for (;;) {
      const limit: QueueLimit | undefined =
        this.queued >= maxQueued ? 'max_queued' : this.queuedBytes + size > maxQueuedBytes ? 'max_queued_bytes' : budget.used + size > budget.limit ? 'queued_bytes_budget' : undefined;
      if (limit === undefined) break;
      if (!this.overflow(pending, limit, true)) return;
    }
    ownPayload(pending.message);
    this.queueOwn().push(pending);
    this.queuedBytes += size;
    budget.used += size;
  }

  /**
   * A queue limit is hit: true when the oldest queued message made room (drop-oldest), false
   * when the new one was dropped (drop-new, disconnect, or nothing older to drop).
   */
  private overflow(pending: PendingMessage, limit: QueueLimit, mayDropOldest: boolean): boolean {
    this.events.dropped(DROP_REASON[limit]);
    if (mayDropOldest && this.limits.overflow === 'drop-oldest' && this.queued > 0) {
      const oldest = this.dequeue(); // not inside journal?.done(...): without a journal it would not run
      this.journal?.done(this, oldest);
      return true;
    }
    this.journal?.done(this, pending);
    if (this.limits.overflow === 'disconnect') this.link?.closeForQuota(limit);
    return false;
  }

  /** The session's own queue, made on the first message queued. */
  private queueOwn(): PendingMessage[] {
    if (this.queue === NO_MESSAGES) this.queue = [];
    return this.queue;
  }

  /** Takes the oldest queued message off the queue. */
  private dequeue(): PendingMessage {
    const pending = this.queue[this.queueHead++];
    const size = queuedSize(pending);
    this.queuedBytes -= size;
    this.limits.budget.used -= size;
    return pending;
  }

  private transmit(link: SessionLink, pending: PendingMessage, out: OutgoingPublish, dup: boolean): void {
    const id = this.allocatePacketId();
    pending.packetId = id;
    pending.released = false;
    this.inflight.set(id, pending);
    if (link.sendPublish(out, pending.qos, pending.retainFlag, pending.subscriptionIds, id, dup)) {
      this.events.sent(pending.qos);
      this.journal?.sent(this, pending);
    } else {
      // too large for this client: behave as if delivered [MQTT-3.1.2-25]
      this.inflight.delete(id);
      this.journal?.done(this, pending);
    }
  }

  private allocatePacketId(): number {
    for (;;) {
      const id = this.nextPacketId;
      this.nextPacketId = id === 65535 ? 1 : id + 1;
      if (!this.inflight.has(id)) return id;
    }
  }

  /**
   * Sends queued messages while the window and the socket allow, then, once the queue is
   * empty, retained snapshot messages: live traffic goes first, and a snapshot message read
   * now is never older than a live message of its topic sent before it.
   */
  pump(nowMs: number): void {
    const link = this.link;
    if (link === null) return;
    while (this.queued > 0 && link.writable && this.inflight.size < link.sendQuota && this.link === link) {
      if (this.queue[this.queueHead].unstored) break; // in order: nothing overtakes a held QoS 2 message
      const pending = this.dequeue();
      const out = new OutgoingPublish(pending.message, nowMs);
      if (out.expired) {
        this.events.dropped('expired');
        this.journal?.done(this, pending);
        continue;
      }
      // queued under an earlier policy, or before this connection's identity was known
      if (!this.mayReceive(pending.message.topic)) {
        this.journal?.done(this, pending);
        continue;
      }
      this.transmit(link, pending, out, false);
    }
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
    if (this.snapshots.length > 0) this.pumpSnapshots(link, nowMs);
  }

  get snapshotsRunning(): number {
    return this.snapshots.length;
  }

  /**
   * Starts sending the retained messages of a subscription just made (SUBACK sent). A
   * snapshot still running for the same subscription is replaced: this one sends them all.
   */
  startSnapshot(key: string, cursor: RetainedCursor, nowMs: number): void {
    this.stopSnapshot(key, 'replaced');
    if (this.snapshots === NO_SNAPSHOTS) this.snapshots = [];
    this.snapshots.push({ key, cursor });
    this.pump(nowMs);
  }

  /** UNSUBSCRIBE: no more of its snapshot [MQTT-3.10.4-2] (what is in flight completes). */
  stopSnapshot(key: string, how: SnapshotEnd): void {
    const i = this.snapshots.findIndex((s) => s.key === key);
    if (i < 0) return;
    this.snapshots.splice(i, 1);
    this.events.snapshotEnded(how);
  }

  /**
   * The connection is gone. A snapshot is not a queue: what it had not sent is not sent
   * later (a new subscription gets it all again); messages it already sent at QoS 1/2 are in
   * flight and resent with the session like any other.
   */
  detach(): void {
    this.link = null;
    this.endSnapshots('disconnected');
  }

  endSnapshots(how: SnapshotEnd): void {
    if (this.snapshots.length === 0) return; // most sessions never had one: no new array each time
    for (let i = 0; i < this.snapshots.length; i++) this.events.snapshotEnded(how);
    this.snapshots = NO_SNAPSHOTS;
  }

  private pumpSnapshots(link: SessionLink, nowMs: number): void {
    let budget = SNAPSHOT_BATCH;
    while (this.snapshots.length > 0 && this.queued === 0 && link.open && link.writable && this.link === link) {
      const snapshot = this.snapshots[0];
      const sub = this.subscriptions.get(snapshot.key);
      if (sub === undefined) {
        this.stopSnapshot(snapshot.key, 'unsubscribed');
        continue;
      }
      // the window, not the queue, holds a snapshot back: read no further than it allows
      if (sub.qos > 0 && this.inflight.size >= link.sendQuota) return;
      if (budget-- === 0) {
        link.pumpLater();
        return;
      }
      const stored = snapshot.cursor.next(nowMs);
      if (stored === undefined) {
        this.stopSnapshot(snapshot.key, 'complete');
        continue;
      }
      // a retained copy is sent again on every subscribe: it is no second copy of the live one
      const m = stored.id === undefined ? stored : { ...stored, id: undefined };
      const qos = (m.qos < sub.qos ? m.qos : sub.qos) as 0 | 1 | 2;
      // retained messages sent because of a subscription carry RETAIN 1 [MQTT-3.3.1-8]
      this.deliver(new OutgoingPublish(m, nowMs), qos, true, sub.subscriptionId === undefined ? undefined : [sub.subscriptionId]);
    }
  }

  /** PUBACK (QoS 1) or PUBCOMP (QoS 2): the message is done. Returns false for an unknown id. */
  complete(packetId: number, expectQos: 1 | 2): boolean {
    const p = this.inflight.get(packetId);
    if (!p || p.qos !== expectQos) return false;
    this.inflight.delete(packetId);
    this.journal?.done(this, p);
    return true;
  }

  /**
   * PUBREC: the QoS 2 message arrived; from now on only PUBREL is resent. False for an
   * unknown id; a promise while a cluster journal stores it (send PUBREL once it is true).
   */
  received(packetId: number): boolean | Promise<boolean> {
    const p = this.inflight.get(packetId);
    if (!p || p.qos !== 2) return false;
    if (p.released || !this.journal) {
      p.released = true;
      return true;
    }
    return this.journal.released(this, p).then(
      () => {
        p.released = true;
        return this.inflight.get(packetId) === p;
      },
      // not stored: no PUBREL; on reconnect the PUBLISH is sent again and PUBREC retried
      () => false,
    );
  }

  /** A PUBREC/PUBACK with an error reason code ends the flow for that id [MQTT-4.3.3]. */
  abandon(packetId: number): void {
    const p = this.inflight.get(packetId);
    this.inflight.delete(packetId);
    if (p) this.journal?.done(this, p);
  }

  /** Pending messages of a session resumed from the store: sent ones back in flight, the rest queued. */
  restorePending(pending: readonly PendingMessage[]): void {
    for (const p of pending) {
      if (p.packetId !== undefined && p.packetId > 0 && !this.inflight.has(p.packetId)) this.inflight.set(p.packetId, p);
      else {
        p.packetId = undefined;
        p.released = false;
        // restored whole, whatever the limits: they apply to what comes next
        this.queueOwn().push(p);
        this.queuedBytes += queuedSize(p);
        this.limits.budget.used += queuedSize(p);
      }
    }
  }

  /**
   * On reconnect: resend everything unacknowledged, in order, with DUP set; QoS 2 messages
   * that were already received get PUBREL again [MQTT-4.4.0-1].
   */
  resume(link: SessionLink, nowMs: number): void {
    this.link = link;
    this.expiresAtMs = undefined;
    if (this.inflightMap !== undefined) this.resend(link, this.inflightMap, nowMs);
    this.pump(nowMs);
  }

  private resend(link: SessionLink, inflight: Map<number, PendingMessage>, nowMs: number): void {
    for (const [id, pending] of inflight) {
      if (pending.released) {
        link.sendPubrel(id);
        continue;
      }
      if (!this.mayReceive(pending.message.topic)) {
        inflight.delete(id);
        this.journal?.done(this, pending);
        continue;
      }
      const out = new OutgoingPublish(pending.message, nowMs);
      if (!link.sendPublish(out, pending.qos, pending.retainFlag, pending.subscriptionIds, id, true)) inflight.delete(id);
    }
  }

  /** Everything pending, for persistence and admin views. */
  pendingMessages(): PendingMessage[] {
    return [...this.inflight.values(), ...this.queue.slice(this.queueHead)];
  }
}

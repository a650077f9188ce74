// The journal of persistent sessions in a cluster: every change to a session's pending
// messages, subscriptions and incoming QoS 2 ids is written through to Redis (the session
// store), so another node can resume the session after this one dies. A write that fails
// leaves the session "dirty": it is saved whole (a checkpoint) once Redis answers again.
// The store positions (storeSeq) of pending messages are tracked here, since an
// acknowledgement can arrive before the append that stored the message has answered.
import type { Broker } from '../broker/broker.js';
import type { Session } from '../broker/session.js';
import type { SessionJournal } from '../broker/session-ports.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { PendingMessage, SessionSnapshot, StoredMessage, Subscription } from '../store/types.js';
import { StaleEpochError } from '../store/errors.js';
import type { ClusterNode } from './node.js';

/** What the journal needs when a session turns out to live on another node now. */
export interface SessionMoves {
  /** A newer incarnation holds the session elsewhere: this copy stops and hands on. */
  movedAway(session: Session): void;
  /** Sends a message to where the client's session is now; resolves once stored there. */
  handOn(clientId: string, message: StoredMessage, hops: number): Promise<void>;
}

/** A session's state as the session store keeps it. */
export function snapshotOf(session: Session): SessionSnapshot {
  return {
    clientId: session.clientId,
    subscriptions: [...session.subscriptions.values()],
    pending: session.pendingMessages(),
    incomingQos2: [...session.incomingQos2.keys()],
    unroutedQos2: [...session.incomingQos2].filter((e): e is [number, string] => e[1] !== undefined),
    expiryIntervalS: session.expiryIntervalS,
    epoch: session.epoch,
  };
}

export class ClusterSessionJournal implements SessionJournal {
  /** storeSeq of each pending message, once appendPending answered. */
  private readonly seqs = new WeakMap<PendingMessage, Promise<number | undefined>>();
  private messageSeq = 0;
  /**
   * Persistent sessions whose state here is ahead of Redis (a journal write failed), with a
   * count of failures: saved whole (checkpoint) once Redis answers again.
   */
  private readonly dirty = new Map<Session, number>();
  private checkpointing?: Promise<void>;
  private readonly checkpointTimer: NodeJS.Timeout;
  /** Set by the bridge once the claims exist (they and the journal need each other). */
  moves!: SessionMoves;

  constructor(
    private readonly broker: Broker,
    private readonly node: ClusterNode,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {
    this.checkpointTimer = setInterval(() => {
      if (this.dirty.size > 0 && node.membership.owner && node.redis.client.status === 'ready') void this.checkpointDirty();
    }, 500);
    this.checkpointTimer.unref();
  }

  /** No session here is ahead of Redis. */
  get clean(): boolean {
    return this.dirty.size === 0;
  }

  stop(): void {
    clearInterval(this.checkpointTimer);
  }

  // ---- whole sessions -------------------------------------------------------------------

  /**
   * Saves a session whole (CONNECT); later writes of its pending messages address the seqs
   * given. The seqs are those of what was saved (a message added meanwhile has its own append).
   * `held`: the claim of this epoch marked the stored session (see SessionStore.save).
   */
  async saveWhole(session: Session, held = false): Promise<void> {
    const saving = snapshotOf(session);
    const seqs = await this.node.sessions.save(saving, held);
    saving.pending.forEach((p, i) => this.seqs.set(p, Promise.resolve(seqs[i])));
    session.storedWhole(saving.pending);
  }

  /** A session loaded as stored (adoption): its pending messages are where the store has them. */
  loaded(session: Session): void {
    session.pendingMessages().forEach((p) => this.seqs.set(p, Promise.resolve(p.storeSeq)));
  }

  markDirty(session: Session): void {
    if (!session.journal) return;
    this.dirty.set(session, (this.dirty.get(session) ?? 0) + 1);
  }

  /** Saves every dirty session; true when none is left dirty. */
  checkpointDirty(): Promise<boolean> {
    if (this.dirty.size === 0) return Promise.resolve(true);
    this.checkpointing ??= (async () => {
      for (const [session, mark] of [...this.dirty]) {
        if (!session.journal || (this.broker.sessions.get(session.clientId) !== session && !session.movedAway)) {
          this.dirty.delete(session);
          continue;
        }
        try {
          if (!session.movedAway) {
            try {
              await this.checkpoint(session);
              if (this.dirty.get(session) === mark) this.dirty.delete(session);
              continue;
            } catch (err) {
              if (!(err instanceof StaleEpochError)) throw err;
              if (this.broker.sessions.get(session.clientId) === session) this.moves.movedAway(session);
            }
          }
          // The client resumed on another node from what Redis has: the messages whose append
          // failed exist only in this copy, and their bus entries, read again here, are dropped
          // as already seen. They follow the session (its store refuses ids it already has).
          await this.handOnUnstored(session);
          if (this.dirty.get(session) === mark) this.dirty.delete(session);
        } catch (err) {
          this.redisFailed('checkpoint', err);
          return;
        }
      }
    })().finally(() => (this.checkpointing = undefined));
    return this.checkpointing.then(() => this.dirty.size === 0);
  }

  /** Hands on to the session's current node every pending message of this copy that no append stored. */
  private async handOnUnstored(session: Session): Promise<void> {
    const pending = session.pendingMessages();
    const seqs = await Promise.all(pending.map((p) => this.seqs.get(p) ?? Promise.resolve(p.storeSeq)));
    await Promise.all(pending.filter((_, i) => seqs[i] === undefined).map((p) => this.moves.handOn(session.clientId, p.message, 1)));
  }

  private async checkpoint(session: Session): Promise<void> {
    const snapshot = snapshotOf(session);
    const saved = this.node.sessions.save(snapshot);
    // later journal writes of these messages address their new place
    snapshot.pending.forEach((p, i) => {
      const before = this.seqs.get(p) ?? Promise.resolve(p.storeSeq);
      this.seqs.set(p, saved.then((seqs) => seqs[i], () => before));
    });
    await saved;
    session.storedWhole(snapshot.pending);
    if (!session.link) {
      const ms = session.expiresAtMs === undefined ? undefined : Math.max(1, session.expiresAtMs - this.broker.deps.clock.now());
      await this.node.sessions.setExpiry(session.clientId, session.epoch, ms);
    }
    this.metrics.sessionCheckpointsTotal.inc();
  }

  // ---- subscriptions ----------------------------------------------------------------------

  subscribed(session: Session, sub: Subscription): void {
    if (session.journal) void this.node.sessions.putSubscription(session.clientId, session.epoch, sub).catch((err) => this.failed(session, 'subscription', err));
  }

  unsubscribed(session: Session, sub: Subscription): void {
    if (session.journal && this.broker.sessions.get(session.clientId) === session) {
      void this.node.sessions.removeSubscription(session.clientId, session.epoch, sub.filter, sub.group).catch((err) => this.failed(session, 'subscription', err));
    }
  }

  // ---- pending messages (SessionJournal) ----------------------------------------------------

  added(session: Session, pending: PendingMessage): Promise<void> {
    const { clientId } = session;
    // routed here before the routes caught up with a move: on to where the session is now
    const stored = session.movedAway ? this.moves.handOn(clientId, pending.message, 1) : this.append(session, pending);
    // the message is in memory here either way: if Redis did not get it, a checkpoint will
    // (the caller's ack waits for `stored`, and fails with it)
    if (!session.movedAway) stored.catch((err) => this.failed(session, 'pending', err));
    else stored.catch((err) => this.redisFailed('pending', err));
    return stored;
  }

  private append(session: Session, pending: PendingMessage): Promise<void> {
    const { clientId, epoch } = session;
    const since = this.node.redis.generation;
    const append = this.node.sessions.appendPending(clientId, epoch, pending);
    this.seqs.set(pending, append.catch(() => undefined));
    // The ack (publisher's PUBACK/PUBREC, or the bus entry) waits for this: a write that
    // failed fails it, rather than acknowledge a message no node could resume after this one
    // dies. Stale means a newer incarnation took the session to another node: the message
    // follows it there. With VIGIL_REDIS_WAIT_REPLICAS the append is stored once replicas
    // have it: an append the master answered and then lost in a failover leaves the session
    // dirty (saved whole on the new master), where before this node took it for stored and
    // dropped the bus entry, read again from the new master, as a copy already seen.
    return append.then(
      () => this.node.redis.replicated(since),
      (err) => {
        if (!(err instanceof StaleEpochError)) throw err;
        if (this.broker.sessions.get(clientId) === session) this.moves.movedAway(session);
        return this.moves.handOn(clientId, pending.message, 1);
      },
    );
  }

  sent(session: Session, pending: PendingMessage): void {
    this.withSeq(session, pending, (seq) => this.node.sessions.markPending(session.clientId, session.epoch, seq, pending.packetId ?? 0, !!pending.released));
  }

  async released(session: Session, pending: PendingMessage): Promise<void> {
    const seq = await (this.seqs.get(pending) ?? Promise.resolve(pending.storeSeq));
    // never stored (the append failed): a resumed session cannot send it again either
    if (seq === undefined) return;
    for (let attempt = 1; ; attempt++) {
      try {
        // the PUBREL waits for replicas too: a resumed session that lost the mark would send
        // the PUBLISH again, which the client, done with it, takes as a new message
        const since = this.node.redis.generation;
        await this.node.sessions.markPending(session.clientId, session.epoch, seq, pending.packetId ?? 0, true);
        await this.node.redis.replicated(since);
        return;
      } catch (err) {
        // stale: the session moved on, its new node answers the PUBREC; otherwise retry while
        // the message is still in flight here (Redis coming back)
        if (err instanceof StaleEpochError || attempt >= 20 || session.inflight.get(pending.packetId ?? 0) !== pending || !session.link) throw err;
        await new Promise((r) => setTimeout(r, 250 * Math.min(attempt, 4)));
      }
    }
  }

  done(session: Session, pending: PendingMessage): void {
    this.withSeq(session, pending, (seq) => this.node.sessions.removePending(session.clientId, session.epoch, seq));
  }

  newMessageId(): string {
    return `${this.node.member}.${(++this.messageSeq).toString(36)}`;
  }

  incomingQos2(session: Session, packetId: number, state: 'received' | 'routed' | 'released', messageId?: string): Promise<boolean> {
    const { clientId, epoch } = session;
    const { sessions, redis } = this.node;
    const since = redis.generation;
    const written =
      state === 'received' ? sessions.addIncomingQos2(clientId, epoch, packetId, messageId) : state === 'routed' ? sessions.addIncomingQos2(clientId, epoch, packetId) : sessions.removeIncomingQos2(clientId, epoch, packetId);
    // received / routed / released decide what a PUBLISH under this packet id does on any node
    // after a failover: they must be on the replicas before the routing, the PUBREC or the PUBCOMP
    const write = written.then(() => redis.replicated(since));
    return write.then(
      () => true,
      (err) => {
        if (err instanceof StaleEpochError) {
          // A newer incarnation holds the session: a CONNECT elsewhere, or a reaper that took
          // this node's clients while it still served them. That one answers for this packet
          // id (it has what Redis had); here nothing more is routed or acknowledged under it,
          // and the link ends, so the client retransmits there.
          if (this.broker.sessions.get(clientId) === session) this.moves.movedAway(session);
          return false;
        }
        // the caller refuses the publish; what is in memory now reaches Redis with a checkpoint
        this.markDirty(session);
        throw err;
      },
    );
  }

  private withSeq(session: Session, pending: PendingMessage, write: (seq: number) => Promise<unknown>): void {
    const seq = this.seqs.get(pending) ?? (pending.storeSeq !== undefined ? Promise.resolve(pending.storeSeq) : undefined);
    if (!seq) return;
    void seq.then((s) => (s === undefined ? undefined : write(s))).catch((err) => this.failed(session, 'pending', err));
  }

  /** A write of a session's journal failed: unless it moved on, it is saved whole later. */
  private failed(session: Session, what: string, err: unknown): void {
    if (err instanceof StaleEpochError) return;
    this.markDirty(session);
    this.redisFailed(what, err);
  }

  private redisFailed(what: string, err: unknown): void {
    this.log.warn({ what, err: (err as Error)?.message ?? String(err) }, 'cluster operation failed');
  }
}

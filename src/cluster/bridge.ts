// The broker's cluster side: what a node does differently when it shares Redis with others
// (docs/cluster.md). CONNECT claims the client id cluster-wide and loads its session; a
// disconnect hands the will to the registry (due times in Redis, fired exactly once by
// whoever deletes the record); publishes are forwarded once per node with matching
// subscribers; subscriptions and the pending messages of persistent sessions are written
// through to Redis so another node can resume them.
import type { Broker, BrokerCluster, OpenResult } from '../broker/broker.js';
import type { Session, SessionJournal } from '../broker/session.js';
import type { Channel } from '../protocol/channel.js';
import { RC } from '../protocol/reason-codes.js';
import type { PendingMessage, SessionSnapshot, StoredMessage, Subscription, WillRecord } from '../store/types.js';
import { ClientIdHeldError, StaleEpochError } from '../store/errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { BusEnvelope, PublishEnvelope } from './bus.js';
import type { ClusterNode } from './node.js';
import { RecentIds } from '../broker/recent-ids.js';

/** How long a session that moved to another node stays here, handing on what is still routed to it. */
const MOVED_AWAY_GRACE_MS = 10_000;
/** How often a message may be handed on after its session (a client moving twice at once). */
const MAX_HOPS = 3;

export class ClusterBridge implements BrokerCluster, SessionJournal {
  /** storeSeq of each pending message, once appendPending answered. */
  private readonly seqs = new WeakMap<PendingMessage, Promise<number | undefined>>();
  /** Writes a QoS 1/2 publish must wait for before it is acknowledged (collected while routing). */
  private collecting: Promise<unknown>[] | null = null;
  /** Route announcements made while a session is rebuilt here (awaited by adopt). */
  private routeWrites: Promise<unknown>[] | null = null;
  /** CONNECTs between their claim and their session being ready, by client id. */
  private readonly opening = new Map<string, Promise<unknown>>();
  private messageSeq = 0;
  /**
   * Persistent sessions whose state here is ahead of Redis (a journal write failed), with a
   * count of failures: saved whole (checkpoint) once Redis answers again.
   */
  private readonly dirty = new Map<Session, number>();
  private checkpointing?: Promise<void>;
  private readonly checkpointTimer: NodeJS.Timeout;
  /**
   * Sessions held when this node lost its lease, with the member it held them as (a connection
   * closed then has a disconnect Redis has not heard of): settled by rejoined().
   */
  private heldAtLeaseLoss = new Map<string, { session: Session; member: string }>();

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

  get member(): string {
    return this.node.member;
  }

  // ---- CONNECT / disconnect -----------------------------------------------------------

  async open(clientId: string, cleanStart: boolean, expiryIntervalS: number, will: WillRecord | undefined, owner: string): Promise<OpenResult> {
    const opened = this.openSession(clientId, cleanStart, expiryIntervalS, will, owner);
    this.opening.set(clientId, opened);
    try {
      return await opened;
    } finally {
      if (this.opening.get(clientId) === opened) this.opening.delete(clientId);
    }
  }

  private async openSession(clientId: string, cleanStart: boolean, expiryIntervalS: number, will: WillRecord | undefined, owner: string): Promise<OpenResult> {
    const { node, broker } = this;
    if (!node.membership.owner) return { refused: RC.SERVER_UNAVAILABLE, reason: 'node is not a cluster owner (Redis lease)' };
    // nothing can be claimed or stored while Redis is away: say so at once rather than queue
    if (node.redis.client.status !== 'ready') return { refused: RC.SERVER_UNAVAILABLE, reason: 'Redis unreachable' };
    // VIGIL_REDIS_WAIT_REPLICAS: the CONNACK waits until replicas have the claim, the will and
    // the session written below (writes from here on, on this connection)
    const since = node.redis.generation;
    let claim;
    try {
      claim = await node.registry.claim(clientId, node.member, {
        cleanStart,
        will,
        sessionExpiryS: expiryIntervalS,
        owner,
        takeoverAcrossIdentities: broker.deps.config.sessionTakeover === 'any',
      });
    } catch (err) {
      if (err instanceof ClientIdHeldError) {
        // another identity's connection, session or will, possibly on another node: untouched
        this.metrics.takeoversRefusedTotal.inc({ scope: 'cluster' });
        return { refused: RC.CLIENT_IDENTIFIER_NOT_VALID, reason: 'client id in use by another identity' };
      }
      this.redisFailed('claim', err);
      return { refused: RC.SERVER_UNAVAILABLE, reason: 'cluster state unavailable' };
    }
    const { epoch } = claim;
    // the older incarnation's will: this node alone deleted it, so this node publishes it
    if (claim.willToFire) void broker.wills.fire(claim.willToFire);
    // the previous owner closes its connection, or drops the offline copy of the session it holds
    if (claim.previousOwner && claim.previousOwner !== node.member) {
      if (claim.previousOnline) this.metrics.takeoversTotal.inc({ scope: 'cluster' });
      void node.bus.kick(claim.previousOwner, clientId, epoch).catch((err) => this.redisFailed('kick', err));
    }

    let local = broker.sessions.get(clientId);
    if (local?.link) (local.link as Channel).supersede(RC.SESSION_TAKEN_OVER, 'session taken over'); // raced a local takeover
    local = broker.sessions.get(clientId);
    // a copy that moved on to another node is stale, and so is one kept across a lease loss
    // that another member owned since: the stored session is the truth
    if (local && (local.movedAway || !this.stillHeld(local, claim.previousOwner))) {
      broker.endSession(local);
      local = undefined;
    }
    try {
      let snapshot: SessionSnapshot | undefined;
      if (cleanStart) {
        if (local) broker.endSession(local);
        await node.sessions.delete(clientId, epoch).catch(() => false);
        local = undefined;
      } else if (!local) {
        // fence first: a copy of this session still held by another node can no longer
        // append to it, so nothing lands between this load and the save below. Both keys share
        // the client's slot: sent together, they run in order in one round trip
        const fenced = node.sessions.fence(clientId, epoch);
        const loaded = node.sessions.load(clientId);
        snapshot = (await Promise.all([fenced, loaded]))[1];
      }
      const session = local ?? broker.newSession(clientId, expiryIntervalS);
      const present = !!local || !!snapshot;
      session.expiryIntervalS = expiryIntervalS;
      session.epoch = epoch;
      session.owner = owner;
      broker.adoptSession(session);
      if (snapshot) this.restore(session, snapshot);
      if (expiryIntervalS > 0) {
        session.journal = this;
        session.seen ??= this.recentIds(snapshot);
        const saving = this.snapshotOf(session);
        const seqs = await node.sessions.save(saving);
        saving.pending.forEach((p, i) => this.seqs.set(p, Promise.resolve(seqs[i])));
        session.storedWhole(saving.pending);
        await node.sessions.setExpiry(clientId, epoch, undefined);
      } else {
        session.journal = undefined;
        session.seen = undefined;
        if (snapshot) await node.sessions.delete(clientId, epoch).catch(() => false);
      }
      await node.redis.replicated(since);
      return { session, present };
    } catch (err) {
      this.redisFailed('session', err);
      return { refused: RC.SERVER_UNAVAILABLE, reason: 'cluster state unavailable' };
    }
  }

  /** A session kept across a lease loss is still this node's if no other member owned the client since. */
  private stillHeld(session: Session, previousOwner: string): boolean {
    const held = this.heldAtLeaseLoss.get(session.clientId);
    if (!held || held.session !== session) return true;
    return previousOwner === held.member || previousOwner === this.member;
  }

  /** The message ids a resumed session already has: the stored ones and those of its pending messages. */
  private recentIds(snapshot: SessionSnapshot | undefined): RecentIds {
    const seen = new RecentIds();
    const now = this.broker.deps.clock.now();
    for (const id of snapshot?.seen ?? []) seen.first(id, now);
    for (const p of snapshot?.pending ?? []) if (p.message.id !== undefined) seen.first(p.message.id, now);
    return seen;
  }

  /** Rebuilds a session written by another node: subscriptions, then pending in order. */
  private restore(session: Session, snapshot: SessionSnapshot): void {
    for (const sub of snapshot.subscriptions) this.broker.subscribe(session, sub);
    const unrouted = new Map(snapshot.unroutedQos2 ?? []);
    for (const id of snapshot.incomingQos2) session.incomingQos2.set(id, unrouted.get(id));
    session.restorePending(snapshot.pending);
  }

  private snapshotOf(session: Session): SessionSnapshot {
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

  /** Disconnect bookkeeping still being written (awaited at shutdown). */
  private readonly settling = new Set<Promise<unknown>>();

  async settle(): Promise<void> {
    await Promise.allSettled([...this.settling]);
  }

  disconnected(session: Session, will: WillRecord | undefined, normal: boolean): void {
    void will;
    this.recordDisconnect(session.clientId, session.epoch, session.expiryIntervalS, normal);
  }

  private recordDisconnect(clientId: string, epoch: number, expiryIntervalS: number, normal: boolean): void {
    const registry = this.node.registry;
    const settle = normal
      ? registry.normalDisconnect(clientId, epoch).then(() => undefined)
      : registry.abnormalDisconnect(clientId, epoch, expiryIntervalS).then((outcome) => {
          if (outcome.kind === 'fire') return this.broker.wills.fire(outcome.will);
        });
    const tracked = settle.catch((err) => {
      if (err instanceof StaleEpochError) return; // a newer connection decided the will already
      this.redisFailed('disconnect', err);
    });
    this.settling.add(tracked);
    void tracked.finally(() => this.settling.delete(tracked));
    if (expiryIntervalS > 0) {
      const ms = expiryIntervalS >= 0xffffffff ? undefined : expiryIntervalS * 1000;
      if (ms !== undefined) void this.node.sessions.setExpiry(clientId, epoch, ms).catch((err) => this.ignoreStale('expiry', err));
    }
  }

  /**
   * This node lost its lease: every connection is about to close without its will being
   * decided (Redis cannot be told now). Remembers what was held, for rejoined().
   */
  leaseLost(): void {
    for (const session of this.broker.sessions.values()) {
      if (session.movedAway || this.heldAtLeaseLoss.has(session.clientId)) continue;
      this.heldAtLeaseLoss.set(session.clientId, { session, member: this.member });
    }
  }

  /**
   * The lease is back: as a new member after it lapsed (`previous` is the old one), or the same
   * one when it was renewed in time. Each client held at the loss stays if the registry moves
   * it to `member` (rehome); one that a reaper or a newer connection took meanwhile is theirs,
   * and its copy here ends. A disconnect Redis missed is recorded now (the will is decided as
   * usual), and the sessions kept are saved whole: writes that failed while Redis was away are
   * in them.
   */
  async rejoined(member: string, previous: string): Promise<void> {
    const held = this.heldAtLeaseLoss;
    this.heldAtLeaseLoss = new Map();
    let kept = 0;
    let lost = 0;
    const clientIds = new Set([...held.keys(), ...[...this.broker.sessions].filter(([, s]) => !s.movedAway).map(([id]) => id)]);
    for (const clientId of clientIds) {
      const session = this.broker.sessions.get(clientId);
      const closed = held.get(clientId);
      const local = session && !session.movedAway && (!closed || closed.session === session) ? session : undefined;
      if (!local && !closed) continue;
      let home;
      try {
        home = await this.node.registry.rehome(clientId, previous, member);
      } catch (err) {
        // unsettled: a CONNECT here still treats the copy as possibly taken (stillHeld)
        this.heldAtLeaseLoss.set(clientId, closed ?? { session: local!, member: previous });
        this.redisFailed('rehome', err);
        continue;
      }
      const now = this.broker.sessions.get(clientId);
      if (!home) {
        lost++;
        if (local && now === local) {
          if (local.link) (local.link as Channel).supersede(RC.SESSION_TAKEN_OVER, 'session taken over on another node');
          else this.broker.endSession(local);
        }
        continue;
      }
      if (local && now === local) {
        kept++;
        if (local.journal) this.markDirty(local);
      } else if (now && now !== local) continue; // a CONNECT here since: it settled the client
      const epoch = (local ?? closed!.session).epoch;
      const offline = local ? !local.link : true;
      if (home.online && home.epoch === epoch && offline) this.recordDisconnect(clientId, epoch, local?.expiryIntervalS ?? 0, false);
    }
    const saved = await this.checkpointDirty();
    this.log.info({ member, previous, kept, lost, saved }, 'sessions kept across the lease loss');
  }

  // ---- checkpoints: a session's state saved whole after journal writes failed -----------

  private markDirty(session: Session): void {
    if (!session.journal) return;
    this.dirty.set(session, (this.dirty.get(session) ?? 0) + 1);
  }

  /** Saves every dirty session; true when none is left dirty. */
  checkpointDirty(): Promise<boolean> {
    if (this.dirty.size === 0) return Promise.resolve(true);
    this.checkpointing ??= (async () => {
      for (const [session, mark] of [...this.dirty]) {
        if (this.broker.sessions.get(session.clientId) !== session || session.movedAway || !session.journal) {
          this.dirty.delete(session);
          continue;
        }
        try {
          await this.checkpoint(session);
          if (this.dirty.get(session) === mark) this.dirty.delete(session);
        } catch (err) {
          if (!(err instanceof StaleEpochError)) {
            this.redisFailed('checkpoint', err);
            return;
          }
          this.dirty.delete(session);
          if (this.broker.sessions.get(session.clientId) === session) this.movedAway(session);
        }
      }
    })().finally(() => (this.checkpointing = undefined));
    return this.checkpointing.then(() => this.dirty.size === 0);
  }

  private async checkpoint(session: Session): Promise<void> {
    const snapshot = this.snapshotOf(session);
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

  /** After reaping a node: its clients' persistent sessions become offline sessions here, routable again. */
  async adopt(clientIds: readonly string[]): Promise<void> {
    for (const clientId of clientIds) {
      if (this.holds(clientId)) continue;
      try {
        const snapshot = await this.node.sessions.load(clientId);
        if (!snapshot || snapshot.expiryIntervalS === 0 || this.holds(clientId)) continue;
        const session = this.broker.newSession(clientId, snapshot.expiryIntervalS);
        session.epoch = snapshot.epoch;
        session.seen = this.recentIds(snapshot);
        this.broker.adoptSession(session);
        this.routeWrites = [];
        this.restore(session, snapshot);
        const announced = this.routeWrites;
        this.routeWrites = null;
        session.pendingMessages().forEach((p) => this.seqs.set(p, Promise.resolve(p.storeSeq)));
        session.journal = this;
        this.broker.detachSession(session);
        await Promise.all(announced);
        if (session.expiryIntervalS < 0xffffffff) await this.node.sessions.setExpiry(clientId, session.epoch, session.expiryIntervalS * 1000);
      } catch (err) {
        this.ignoreStale('adopt', err);
      }
    }
    if (clientIds.length > 0) this.log.info({ clients: clientIds.length }, 'sessions of a dead node adopted');
  }

  /** A current (not moved-away) session of this client is here. */
  private holds(clientId: string): boolean {
    const s = this.broker.sessions.get(clientId);
    return s !== undefined && !s.movedAway;
  }

  /**
   * A newer incarnation of this session lives on another node: stop sending from this copy;
   * for a while, what is still routed here is handed on (added), then the copy ends.
   */
  private movedAway(session: Session): void {
    if (session.movedAway) return;
    session.movedAway = true;
    if (session.link) (session.link as Channel).supersede(RC.SESSION_TAKEN_OVER, 'session taken over on another node');
    const timer = setTimeout(() => {
      if (this.broker.sessions.get(session.clientId) === session) this.broker.endSession(session);
    }, MOVED_AWAY_GRACE_MS);
    timer.unref();
  }

  /**
   * A message for a session that is no longer here: to the node that holds it now, for that
   * client only. Resolves once stored there (the bus entry, or this node's own journal).
   */
  private async handOn(clientId: string, message: StoredMessage, hops: number): Promise<void> {
    if (hops > MAX_HOPS) {
      this.metrics.messagesDroppedTotal.inc({ reason: 'session_moving' });
      this.log.warn({ clientId, hops }, 'message for a moving session dropped after too many hand-ons');
      return;
    }
    const owner = await this.node.registry.owner(clientId);
    if (!owner?.node) return; // the session ended: nothing to deliver to
    if (owner.node !== this.member) {
      const ok = await this.node.bus.forward(owner.node, message, { normal: true, only: [clientId], hops });
      if (!ok) throw new Error(`no bus stream for ${owner.node}`);
      return;
    }
    await this.deliverOnly(message, clientId, hops);
  }

  /** Delivers to one client's session here (waiting for its CONNECT to finish), or hands it on. */
  private async deliverOnly(message: StoredMessage, clientId: string, hops: number, normal = true, shared: PublishEnvelope['shared'] = []): Promise<void> {
    const opening = this.opening.get(clientId);
    if (opening) await opening.catch(() => undefined);
    if (!this.holds(clientId)) return this.handOn(clientId, message, hops + 1);
    const outer = this.collecting;
    this.collecting = [];
    this.broker.deliverForwarded(message, normal, shared, new Set([clientId]));
    const writes = this.collecting;
    this.collecting = outer;
    await Promise.all(writes);
  }

  /**
   * Publishes a reaped node had not handled go to the sessions they were for: the ones adopted
   * here (journaled before the dead stream is deleted), and — restricted to those clients — to
   * the nodes where its other clients have connected since.
   */
  async deliverOrphaned(envelopes: readonly PublishEnvelope[], adopted: readonly string[], moved: readonly string[]): Promise<void> {
    const byMember = new Map<string, string[]>();
    for (const clientId of moved) {
      const owner = await this.node.registry.owner(clientId).catch(() => undefined);
      if (!owner?.node) continue;
      let list = byMember.get(owner.node);
      if (!list) byMember.set(owner.node, (list = []));
      list.push(clientId);
    }
    const local = new Set([...adopted, ...(byMember.get(this.node.member) ?? [])]);
    byMember.delete(this.node.member);
    this.collecting = [];
    const writes: Promise<unknown>[] = [];
    for (const e of envelopes) {
      this.broker.deliverForwarded(e.message, e.normal, e.shared, local);
      for (const [member, only] of byMember) writes.push(this.node.bus.forward(member, e.message, { normal: e.normal, only }));
    }
    writes.push(...this.collecting);
    this.collecting = null;
    await Promise.allSettled(writes);
    this.log.info({ messages: envelopes.length, adopted: adopted.length, moved: moved.length }, 'undelivered messages of a dead node handed on');
  }

  // ---- routing ------------------------------------------------------------------------

  routeRemote(message: StoredMessage, deliverLocalShared: (group: string, filter: string) => void): void | Promise<void> {
    const match = this.node.routes.route(message.topic);
    if (message.qos === 0 && match.shared.length === 0) {
      // the common QoS 0 case: nothing to wait for, nothing allocated per message
      for (const member of match.members) this.node.bus.post(member, message, true);
      return;
    }
    const sharedFor = new Map<string, { group: string; filter: string }[]>();
    for (const pick of match.shared) {
      if (pick.member === this.node.member) deliverLocalShared(pick.group, pick.filter);
      else {
        let list = sharedFor.get(pick.member);
        if (!list) sharedFor.set(pick.member, (list = []));
        list.push({ group: pick.group, filter: pick.filter });
      }
    }
    const writes = this.collecting ?? [];
    this.collecting = null;
    const targets = new Set([...match.members, ...sharedFor.keys()]);
    if (!this.node.routes.fresh && message.qos > 0) {
      // the route mirror may be missing nodes: acknowledging could lose the message
      writes.push(Promise.reject(new Error('route table resyncing after a Redis reconnect')));
    }
    for (const member of targets) {
      const sent = this.node.bus.forward(member, message, { normal: match.members.has(member), shared: sharedFor.get(member) ?? [] });
      // no stream for that node (gone, or not started yet): not stored, so not acknowledged
      writes.push(
        sent.then((ok) => {
          if (ok) return;
          this.metrics.messagesDroppedTotal.inc({ reason: 'node_gone' });
          throw new Error(`no bus stream for ${member}`);
        }),
      );
    }
    if (writes.length === 0 || message.qos === 0) {
      for (const w of writes) w.catch((err) => this.redisFailed('forward', err));
      return;
    }
    // the writes were all issued in this turn, on the main connection: once they are answered,
    // one WAIT (shared with the turn's other publishes) covers them before the PUBACK / PUBREC
    const since = this.node.redis.generation;
    return Promise.all(writes).then(() => this.node.redis.replicated(since));
  }

  /** Called by the broker before routing a QoS 1/2 message: journal writes join the ack. */
  beginPublish(message: StoredMessage): void {
    message.id ??= this.newMessageId();
    this.collecting = [];
  }

  onBusMessage = (envelope: BusEnvelope): void | Promise<void> => {
    // without the lease this node may not act for its sessions: the entry waits (read again)
    if (!this.node.membership.owner) return Promise.reject(new Error('not a cluster owner now'));
    const handled = this.handleBusMessage(envelope);
    if (this.dirty.size === 0) return handled;
    // a session here is ahead of Redis: a copy of a message it has in memory only would be
    // dropped as a duplicate, so the entry is acknowledged once the session is saved
    const saved = this.checkpointDirty().then((clean) => {
      if (!clean) throw new Error('sessions not saved yet');
    });
    return handled ? Promise.all([handled, saved]).then(() => undefined) : saved;
  };

  private handleBusMessage(envelope: BusEnvelope): void | Promise<void> {
    if (envelope.kind === 'kick') {
      const session = this.broker.sessions.get(envelope.clientId);
      if (!session || session.epoch >= envelope.epoch) return;
      if (session.journal) this.movedAway(session);
      else if (session.link) (session.link as Channel).supersede(RC.SESSION_TAKEN_OVER, 'session taken over on another node');
      else this.broker.endSession(session);
      return;
    }
    if (envelope.only) {
      const hops = envelope.hops ?? 0;
      return Promise.all(envelope.only.map((clientId) => this.deliverOnly(envelope.message, clientId, hops, envelope.normal, envelope.shared))).then(() => undefined);
    }
    if (envelope.message.qos === 0) {
      // QoS 0 reaches no journal: nothing to wait for
      this.broker.deliverForwarded(envelope.message, envelope.normal, envelope.shared);
      return;
    }
    this.collecting = [];
    this.broker.deliverForwarded(envelope.message, envelope.normal, envelope.shared);
    const writes = this.collecting;
    this.collecting = null;
    // the bus acknowledges the entry once the persistent sessions have it
    if (writes.length > 0) return Promise.all(writes).then(() => undefined);
  }

  subscribed(session: Session, sub: Subscription): void {
    const announced = this.node.routes.addLocal(sub).catch((err) => this.redisFailed('route', err));
    this.routeWrites?.push(announced);
    if (session.journal) void this.node.sessions.putSubscription(session.clientId, session.epoch, sub).catch((err) => this.journalFailed(session, 'subscription', err));
  }

  unsubscribed(session: Session, sub: Subscription): void {
    void this.node.routes.removeLocal(sub).catch((err) => this.redisFailed('route', err));
    if (session.journal && this.broker.sessions.get(session.clientId) === session) {
      void this.node.sessions.removeSubscription(session.clientId, session.epoch, sub.filter, sub.group).catch((err) => this.journalFailed(session, 'subscription', err));
    }
  }

  // ---- the journal of persistent sessions (SessionJournal) ----------------------------

  added(session: Session, pending: PendingMessage): Promise<void> {
    const { clientId } = session;
    // routed here before the routes caught up with a move: on to where the session is now
    const stored = session.movedAway ? this.handOn(clientId, pending.message, 1) : this.append(session, pending);
    if (this.collecting) this.collecting.push(stored);
    // the message is in memory here either way: if Redis did not get it, a checkpoint will
    if (!session.movedAway) stored.catch((err) => this.journalFailed(session, 'pending', err));
    else if (!this.collecting) stored.catch((err) => this.redisFailed('pending', err));
    return stored;
  }

  private append(session: Session, pending: PendingMessage): Promise<void> {
    const { clientId, epoch } = session;
    const append = this.node.sessions.appendPending(clientId, epoch, pending);
    this.seqs.set(pending, append.catch(() => undefined));
    // The ack (publisher's PUBACK/PUBREC, or the bus entry) waits for this: a write that
    // failed fails it, rather than acknowledge a message no node could resume after this one
    // dies. Stale means a newer incarnation took the session to another node: the message
    // follows it there.
    return append.then(
      () => undefined,
      (err) => {
        if (!(err instanceof StaleEpochError)) throw err;
        if (this.broker.sessions.get(clientId) === session) this.movedAway(session);
        return this.handOn(clientId, pending.message, 1);
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

  incomingQos2(session: Session, packetId: number, state: 'received' | 'routed' | 'released', messageId?: string): Promise<unknown> {
    const { clientId, epoch } = session;
    const { sessions, redis } = this.node;
    const since = redis.generation;
    const written =
      state === 'received' ? sessions.addIncomingQos2(clientId, epoch, packetId, messageId) : state === 'routed' ? sessions.addIncomingQos2(clientId, epoch, packetId) : sessions.removeIncomingQos2(clientId, epoch, packetId);
    // received / routed decide what a retransmission of this packet id does on any node after
    // a failover: they must be on the replicas before the routing or the PUBREC. The release
    // is not waited for (PUBCOMP never was): the next QoS 2 write of the session, WAITed, covers
    // it unless a failover came between (docs/cluster.md, known limits)
    const write = state === 'released' ? written : written.then(() => redis.replicated(since));
    return write.catch((err) => {
      if (err instanceof StaleEpochError) return; // the session moved: the new incarnation answers for it
      // the caller refuses the publish; what is in memory now reaches Redis with a checkpoint
      this.markDirty(session);
      throw err;
    });
  }

  private withSeq(session: Session, pending: PendingMessage, write: (seq: number) => Promise<unknown>): void {
    const seq = this.seqs.get(pending) ?? (pending.storeSeq !== undefined ? Promise.resolve(pending.storeSeq) : undefined);
    if (!seq) return;
    void seq.then((s) => (s === undefined ? undefined : write(s))).catch((err) => this.journalFailed(session, 'pending', err));
  }

  /** A write of a session's journal failed: unless it moved on, it is saved whole later. */
  private journalFailed(session: Session, what: string, err: unknown): void {
    if (err instanceof StaleEpochError) return;
    this.markDirty(session);
    this.redisFailed(what, err);
  }

  // ---- errors -------------------------------------------------------------------------

  private ignoreStale(what: string, err: unknown): void {
    if (err instanceof StaleEpochError) return;
    this.redisFailed(what, err);
  }

  private redisFailed(what: string, err: unknown): void {
    this.log.warn({ what, err: (err as Error)?.message ?? String(err) }, 'cluster operation failed');
  }
}

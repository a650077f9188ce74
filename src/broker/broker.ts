// The broker on one node: sessions by client id, delivery to the local sessions the router
// (router.ts) names, subscriptions, retained messages, wills and $SYS. A message reaches every
// matching session once, at the highest granted QoS of its overlapping subscriptions. What the
// broker is wired with (deps, cluster side, connections) is in ports.ts.
//
// Over 400 lines on purpose: this is the one owner of the session map and the offline set.
// Every change to them (open, resume, detach, adopt, supersede, end, expire) is here, beside
// the delivery that reads them, so what each change must keep (gauges, routes, wills, the
// cluster's view) is kept in one file.
import type { StoredMessage, Subscription, WillRecord } from '../store/types.js';
import { OutgoingPublish } from '../protocol/publish-encoder.js';
import { sharedName } from '../protocol/topics.js';
import { Session } from './session.js';
import type { DropReason, SessionEvents, SessionLimits } from './session-ports.js';
import { Router, type Routes } from './router.js';
import type { BrokerCluster, BrokerDeps, LiveConnection, OpenResult } from './ports.js';
import { WillManager } from './wills.js';
import type { FleetObserver } from './fleet-events.js';
import { sessionOwner } from '../auth/session-owner.js';
import { retryWithBackoff, type Backoff } from '../limits/retry.js';
import { LineBudget } from '../log.js';

export const NEVER_EXPIRES = 0xffffffff;
const ONCE = { once: true } as const;
/** A will whose copies could not all be stored is routed again (Broker.publishWill). */
const WILL_RETRY: Backoff = { firstMs: 250, maxDelayMs: 5000, forMs: 60_000 };
const WILL_RETRY_LINES_PER_S = 10;
const VERSION = '0.1.0';

export class Broker {
  readonly sessions = new Map<string, Session>();
  readonly connections = new Set<LiveConnection>();
  readonly wills: WillManager;
  private readonly offline = new Set<Session>();
  readonly router = new Router();
  private readonly sessionEvents: SessionEvents;
  /** One object for every session: the node-wide byte budget is counted in it. */
  private readonly sessionLimits: SessionLimits;
  private readonly startedAtMs: number;
  private sweepTimer?: { cancel(): void };
  private clusterSide?: BrokerCluster;
  /** The console's record of clients and will decisions (server.ts sets it when the admin API is on). */
  observer?: FleetObserver;
  private sysTimer?: { cancel(): void };
  readonly stats = { messagesReceived: 0, messagesSent: 0 };
  /** Per-QoS counters bound once: label lookups stay off the per-message path. */
  private readonly receivedByQos: { inc(): void }[];

  constructor(readonly deps: BrokerDeps) {
    this.startedAtMs = deps.clock.now();
    const { metrics, config } = deps;
    this.sessionLimits = {
      maxQueued: config.maxQueued,
      maxQueuedBytes: config.maxQueuedBytes,
      budget: { limit: config.queuedBytesBudget, used: 0 },
      overflow: config.queueOverflow,
    };
    this.sessionGauges = { offline: metrics.sessionsCurrent.bind({ state: 'offline' }), online: metrics.sessionsCurrent.bind({ state: 'online' }) };
    const sent = [metrics.messagesOutTotal.bind({ qos: '0' }), metrics.messagesOutTotal.bind({ qos: '1' }), metrics.messagesOutTotal.bind({ qos: '2' })];
    this.receivedByQos = [metrics.messagesInTotal.bind({ qos: '0' }), metrics.messagesInTotal.bind({ qos: '1' }), metrics.messagesInTotal.bind({ qos: '2' })];
    const deliveryDenied = metrics.messagesDroppedTotal.bind({ reason: 'not_authorized' });
    const receiveDenied = metrics.aclDeniesTotal.bind({ action: 'receive' });
    this.sessionEvents = {
      dropped: (reason: DropReason) => {
        if (reason === 'not_authorized') {
          // a delivery the subscriber's identity may not receive (docs/acl.md "Delivery")
          deliveryDenied.inc();
          receiveDenied.inc();
        } else metrics.messagesDroppedTotal.inc({ reason });
      },
      sent: (qos) => {
        this.stats.messagesSent++;
        sent[qos].inc();
      },
      snapshotEnded: (how) => metrics.retainedSnapshotsEndedTotal.inc({ how }),
    };
    this.wills = new WillManager({
      clock: deps.clock,
      log: deps.log,
      metrics,
      authorizer: deps.authorizer,
      authenticator: deps.authenticator,
      willAuthz: deps.config.willAuthz,
      // a will's topic is usually its client's own (fleet/<id>/state): published once
      publish: (m, epoch) => this.publishWill(m, epoch),
      onDecision: (record, verdict) => this.observer?.willDecided(record, verdict),
    });
  }

  /** Cluster mode: the cluster side takes over claims, forwarding and persistence. */
  attachCluster(cluster: BrokerCluster): void {
    this.clusterSide = cluster;
    this.router.remote = cluster.routes;
  }

  get cluster(): BrokerCluster | undefined {
    return this.clusterSide;
  }

  /** Starts the periodic duties on the injected clock: the sweep every second, $SYS if configured. */
  start(): void {
    this.sweepTimer = this.every(1000, () => this.sweep(this.deps.clock.now()));
    if (this.deps.config.sysIntervalS > 0) this.sysTimer = this.every(this.deps.config.sysIntervalS * 1000, () => this.publishSys());
  }

  stop(): void {
    this.sweepTimer?.cancel();
    this.sysTimer?.cancel();
  }

  /** A repeating timer of the clock (a test's fake clock drives it by advancing time). */
  private every(ms: number, fn: () => void): { cancel(): void } {
    const { clock } = this.deps;
    let current: { cancel(): void } | undefined;
    let stopped = false;
    const tick = () => {
      if (stopped) return;
      current = clock.setTimeout(tick, ms);
      fn();
    };
    current = clock.setTimeout(tick, ms);
    return {
      cancel: () => {
        stopped = true;
        current?.cancel();
      },
    };
  }

  // ---- routing -------------------------------------------------------------------------

  /** Counts a PUBLISH received from a client. */
  received(qos: 0 | 1 | 2): void {
    this.stats.messagesReceived++;
    this.receivedByQos[qos].inc();
  }

  /**
   * Stores a retained message (if flagged), delivers to every matching session here and, in a
   * cluster, forwards to the other nodes with matching subscriptions. A promise means QoS 1/2
   * copies are being stored (persistent sessions' journals, other nodes' bus streams):
   * acknowledge the publisher when it resolves, not before. `writerEpoch` is the publisher's
   * session incarnation (retained fencing in the cluster). `once`: a topic published once (a
   * will), whose match the router does not remember.
   */
  publish(message: StoredMessage, writerEpoch?: number, once?: boolean): void | Promise<void> {
    if (message.retain && this.deps.config.retainAvailable) {
      void this.deps.retained.set(message, writerEpoch);
      this.deps.metrics.retainedMessages.set(this.deps.retained.count());
    }
    return this.route(message, once);
  }

  /** Lines about wills routed again: a fleet's wills fail together (a failover during a reaping). */
  private readonly willRetryLines = new LineBudget(WILL_RETRY_LINES_PER_S);

  /**
   * A will. Nobody sends a will again, so its QoS 1/2 copies that could not be stored (a
   * persistent session's journal or another node's bus stream: Redis failing over, the route
   * table resyncing after a reconnect, a node's stream gone) are routed again, with the same
   * message id so that the sessions that have it drop the copy, 250 ms apart and doubling up to
   * 5 s, for at most 60 s (WILL_RETRY); then it is logged and counted as dropped
   * (will_not_stored). Before, the failed copies' rejection went unhandled, and Node ended the
   * process: a reaper firing a dead node's wills during a Sentinel failover died with them.
   */
  private publishWill(message: StoredMessage, writerEpoch: number | undefined): void {
    const stored = this.publish(message, writerEpoch, true);
    if (!stored) return;
    const { log, metrics, clock } = this.deps;
    const about = { topic: message.topic, clientId: message.origin };
    stored.catch((err: unknown) =>
      // the retained copy was written the first time (retained.set reports its own failures)
      retryWithBackoff(clock, WILL_RETRY, () => this.route(message, true), err, {
        retrying: (e, delayMs) => {
          metrics.willRetriesTotal.inc();
          // lines are limited, the metric counts each
          if (delayMs === WILL_RETRY.firstMs && this.willRetryLines.take(clock.now())) log.warn({ ...about, err: errorText(e) }, 'will not stored for every subscriber; routing it again');
        },
        succeeded: (afterMs) => {
          if (this.willRetryLines.take(clock.now())) log.info({ ...about, afterMs }, 'will stored after being routed again');
        },
        gaveUp: (e, forMs) => {
          metrics.messagesDroppedTotal.inc({ reason: 'will_not_stored' });
          log.error({ ...about, err: errorText(e), forMs }, 'will not stored for every subscriber; given up');
        },
      }),
    );
  }

  /** Delivers here and forwards to the other nodes; a promise while QoS 1/2 copies are stored. */
  private route(message: StoredMessage, once?: boolean): void | Promise<void> {
    const cluster = this.clusterSide;
    if (cluster && message.qos > 0) message.id ??= cluster.newMessageId();
    const routes = this.router.route(message, once ? ONCE : undefined);
    const stored = this.deliver(message, routes);
    if (!cluster) return stored;
    const writes = both(stored, cluster.forward(message, routes));
    return writes && cluster.replicated(writes);
  }

  /**
   * A message forwarded by another node: local delivery only, to the sessions its non-shared
   * subscriptions match (`normal`) and to one member of each shared group it was picked for
   * here. `onlyClients` limits it to some sessions (a message handed on to a session that
   * moved, or a dead node's undelivered messages for the sessions adopted from it). Resolves
   * once persistent sessions have it.
   */
  deliverForwarded(message: StoredMessage, normal: boolean, shared: readonly { group: string; filter: string }[], onlyClients?: ReadonlySet<string>): void | Promise<void> {
    const stored = normal ? this.deliver(message, this.router.route(message, { onlyClients, remote: false })) : undefined;
    let writes: Promise<void>[] | undefined;
    for (const { group, filter } of shared) {
      const w = this.deliverShared(message, group, filter);
      if (w) (writes ??= []).push(w);
    }
    return writes ? both(stored, Promise.all(writes).then(noop)) : stored;
  }

  /** Delivers to the local sessions of a routing answer; resolves once persistent sessions have it. */
  private deliver(message: StoredMessage, routes: Routes): Promise<void> | undefined {
    const { sessions, shared, localShared } = routes;
    if (sessions.length === 0 && shared.length === 0 && localShared.length === 0) return undefined; // no local subscriber (a cluster node's usual case)
    const out = this.outgoing(message);
    if (out.expired) return undefined;
    let writes: Promise<void>[] | undefined;
    for (let i = 0; i < sessions.length; i++) {
      const s = sessions[i];
      if (message.id !== undefined && !this.firstCopy(s, message)) continue;
      const qos = (message.qos < s.matchQos ? message.qos : s.matchQos) as 0 | 1 | 2;
      const w = s.deliver(out, qos, s.matchRetainAsPublished && message.retain, s.matchIds);
      if (w) (writes ??= []).push(w);
    }
    for (let i = 0; i < shared.length; i++) {
      const w = this.deliverTo(shared[i], message, out);
      if (w) (writes ??= []).push(w);
    }
    for (let i = 0; i < localShared.length; i++) {
      const w = this.deliverShared(message, localShared[i].group, localShared[i].filter, out);
      if (w) (writes ??= []).push(w);
    }
    return writes && Promise.all(writes).then(noop);
  }

  /** Cluster mode: the route table picked this node for a shared group; one local member gets it. */
  private deliverShared(message: StoredMessage, group: string, filter: string, out?: OutgoingPublish): Promise<void> | undefined {
    const entry = this.router.pickShared(filter, group);
    if (!entry) {
      this.deps.metrics.messagesDroppedTotal.inc({ reason: 'shared_group_gone' });
      return undefined;
    }
    out ??= this.outgoing(message);
    if (out.expired) return undefined;
    return this.deliverTo(entry, message, out);
  }

  private deliverTo(entry: { subscriber: Session; sub: Subscription }, message: StoredMessage, out: OutgoingPublish): Promise<void> | undefined {
    const { subscriber, sub } = entry;
    if (message.id !== undefined && !this.firstCopy(subscriber, message)) return undefined;
    const qos = (message.qos < sub.qos ? message.qos : sub.qos) as 0 | 1 | 2;
    return subscriber.deliver(out, qos, sub.retainAsPublished && message.retain, sub.subscriptionId === undefined ? undefined : [sub.subscriptionId]);
  }

  /** The clock matters only for Message Expiry: a message without one skips the read. */
  private outgoing(message: StoredMessage): OutgoingPublish {
    return new OutgoingPublish(message, message.expiresAtMs === undefined ? 0 : this.deps.clock.now());
  }

  /** Cluster: false for a second copy of a message this session already got (dropped, counted). */
  private firstCopy(s: Session, message: StoredMessage): boolean {
    if (message.id === undefined || s.seen === undefined || s.seen.first(message.id, this.deps.clock.now())) return true;
    this.deps.metrics.messagesDroppedTotal.inc({ reason: 'duplicate' });
    return false;
  }

  // ---- subscriptions ---------------------------------------------------------------------

  /** Adds or replaces a subscription; returns true when it existed before. */
  subscribe(session: Session, sub: Subscription): boolean {
    const key = sharedName(sub);
    const existed = session.subscriptions.has(key);
    session.subscriptions.set(key, sub);
    this.router.add(session, sub);
    this.deps.metrics.subscriptionsCurrent.set(this.router.size);
    this.clusterSide?.subscribed(session, sub);
    return existed;
  }

  unsubscribe(session: Session, key: string): boolean {
    const sub = session.subscriptions.get(key);
    if (!sub) return false;
    session.subscriptions.delete(key);
    session.stopSnapshot(key, 'unsubscribed');
    this.router.remove(session, sub);
    this.deps.metrics.subscriptionsCurrent.set(this.router.size);
    this.clusterSide?.unsubscribed(session, sub);
    return true;
  }

  /**
   * A subscription was made: its retained messages go out as the window and the socket
   * allow, all of them, however many (Session.startSnapshot).
   */
  sendRetained(session: Session, sub: Subscription): void {
    session.startSnapshot(sharedName(sub), this.deps.retained.cursor(sub.filter), this.deps.clock.now());
  }

  /**
   * VIGIL_REVOKED_RETAINED=drop: a subject was revoked; the retained messages it published
   * (its retained "up", a retained will that fired) are deleted, so subscribers stop being told
   * something its will can no longer correct. Topics starting with '$' are not searched.
   * Returns how many were deleted. In a cluster every node hears the revocation and deletes
   * what its mirror shows; the deletes are idempotent.
   */
  dropRetainedOf(subject: string): number {
    const doomed: StoredMessage[] = [];
    const cursor = this.deps.retained.cursor('#');
    const now = this.deps.clock.now();
    for (let m = cursor.next(now); m !== undefined; m = cursor.next(now)) if (m.publisher === subject) doomed.push(m);
    for (const m of doomed) void this.deps.retained.set({ topic: m.topic, payload: Buffer.alloc(0), qos: 0, retain: true, origin: m.origin });
    if (doomed.length > 0) {
      this.deps.metrics.messagesDroppedTotal.inc({ reason: 'revoked_retained' }, doomed.length);
      this.deps.metrics.retainedMessages.set(this.deps.retained.count());
    }
    return doomed.length;
  }

  // ---- sessions --------------------------------------------------------------------------

  /**
   * True when another identity than `owner` holds `clientId` on this node — its connection,
   * its session or a will waiting for its delay — and VIGIL_SESSION_TAKEOVER keeps it theirs.
   * Asked before anything of the holder's is touched; in a cluster the claim script asks the
   * same question of Redis, atomically.
   */
  heldByAnother(clientId: string, owner: string): boolean {
    if (this.deps.config.sessionTakeover === 'any') return false;
    const session = this.sessions.get(clientId);
    if (session && !session.movedAway && session.owner !== undefined && session.owner !== owner) return true;
    const will = this.wills.pendingFor(clientId);
    return will !== undefined && sessionOwner(will.record.identity, this.deps.authenticator.mode) !== owner;
  }

  /** Opens the session of a new connection: in memory at once, or through the cluster. The caller checked heldByAnother. */
  connectSession(clientId: string, cleanStart: boolean, expiryIntervalS: number, will: WillRecord | undefined, owner: string): OpenResult | Promise<OpenResult> {
    if (this.clusterSide) return this.clusterSide.open(clientId, cleanStart, expiryIntervalS, will, owner);
    return this.openSession(clientId, cleanStart, expiryIntervalS, owner);
  }

  /**
   * Opens the session for a new connection [MQTT-3.1.2-4, MQTT-3.1.2-5]: a clean start ends
   * any previous session (firing its pending will), otherwise the old one is resumed and a
   * pending will is cancelled [MQTT-3.1.3-9]. The caller checked heldByAnother.
   */
  openSession(clientId: string, cleanStart: boolean, expiryIntervalS: number, owner: string): { session: Session; present: boolean } {
    const existing = this.sessions.get(clientId);
    const pendingWill = this.wills.pendingFor(clientId);
    // a 3.1.1 grace will is dropped by any reconnect of the client id; a 5.0 delayed will by a
    // reconnect to the same session, while a clean start ends the session and sends it (endSession)
    if (pendingWill && (pendingWill.record.protocolVersion !== 5 || !cleanStart)) this.wills.cancel(clientId, 'reconnect');
    if (existing && !cleanStart) {
      this.offline.delete(existing);
      existing.expiryIntervalS = expiryIntervalS;
      existing.owner = owner;
      existing.epoch++;
      this.updateSessionGauges();
      return { session: existing, present: true };
    }
    if (existing) this.endSession(existing);
    const session = this.newSession(clientId, expiryIntervalS);
    session.epoch = 1;
    session.owner = owner;
    this.sessions.set(clientId, session);
    this.updateSessionGauges();
    return { session, present: false };
  }

  /**
   * A connection ended. Its will goes at the earlier of its delay and the session's end
   * [MQTT-3.1.3-9] — timers on this node, or due times in Redis in a cluster.
   */
  clientGone(session: Session, will: WillRecord | undefined, normal: boolean): void {
    this.observer?.gone(session.clientId, session.epoch, normal, this.deps.clock.now());
    if (this.clusterSide) this.clusterSide.disconnected(session, will, normal);
    else if (will && !normal) this.wills.disconnected(will, session.expiryIntervalS);
    this.detachSession(session);
  }

  /**
   * Cluster: a connection closed because its client is connected elsewhere now, or because
   * this node lost its lease. A session that moved away stays a while (the cluster hands on
   * what still reaches it); after a lease loss a persistent session stays offline, routes and
   * all, until the node knows whether it still holds it (ClusterBridge.rejoined); otherwise
   * the session ends here. No will: that is decided where the client is now, or at the rejoin.
   */
  sessionSuperseded(session: Session, leaseLost: boolean): void {
    session.detach();
    if (this.sessions.get(session.clientId) !== session || session.movedAway) return;
    if (leaseLost && session.expiryIntervalS > 0) this.detachSession(session);
    else this.endSession(session);
  }

  /** Offline sessions held here (cluster: dropped when this node was reaped). */
  offlineSessions(): Session[] {
    return [...this.offline];
  }

  /** Adopts a session built elsewhere (cluster: loaded from Redis, or created after a claim). */
  adoptSession(session: Session): void {
    const old = this.sessions.get(session.clientId);
    if (old && old !== session) this.endSession(old);
    this.offline.delete(session);
    this.sessions.set(session.clientId, session);
    this.updateSessionGauges();
  }

  newSession(clientId: string, expiryIntervalS: number): Session {
    return new Session(clientId, expiryIntervalS, this.sessionLimits, this.sessionEvents, this.deps.authorizer);
  }

  /** The connection is gone: the session stays for its expiry interval, or ends now. */
  detachSession(session: Session): void {
    session.detach();
    if (this.sessions.get(session.clientId) !== session) return;
    if (session.expiryIntervalS === 0) {
      this.endSession(session);
      return;
    }
    if (session.expiryIntervalS !== NEVER_EXPIRES) session.expiresAtMs = this.deps.clock.now() + session.expiryIntervalS * 1000;
    this.offline.add(session);
    this.updateSessionGauges();
  }

  endSession(session: Session): void {
    // leave the map first: the cluster then drops only the routes, never the stored
    // subscriptions of a session that a fenced or superseded node gives up
    if (this.sessions.get(session.clientId) === session) this.sessions.delete(session.clientId);
    // only a session that had subscriptions changes the router (most clean sessions had none,
    // and asking its map would make one: Session.subscriptions)
    if (session.subscriptionCount > 0) {
      for (const sub of session.subscriptions.values()) {
        this.router.remove(session, sub);
        this.clusterSide?.unsubscribed(session, sub);
      }
      session.subscriptions.clear();
      this.deps.metrics.subscriptionsCurrent.set(this.router.size);
    }
    session.endSnapshots('unsubscribed');
    this.offline.delete(session);
    this.wills.sessionEnded(session.clientId);
    this.updateSessionGauges();
  }

  /** Bound once: two label lookups on every session opened and ended were measurable in a connect storm. */
  private readonly sessionGauges: { readonly offline: { set(v: number): void }; readonly online: { set(v: number): void } };

  private updateSessionGauges(): void {
    this.sessionGauges.offline.set(this.offline.size);
    this.sessionGauges.online.set(this.sessions.size - this.offline.size);
  }

  /** Once a second: expire sessions, and let connections check keepalive and timeouts. */
  sweep(nowMs: number): void {
    for (const s of this.offline) {
      if (s.expiresAtMs !== undefined && s.expiresAtMs <= nowMs) {
        this.deps.metrics.sessionsExpiredTotal.inc();
        this.endSession(s);
      }
    }
    for (const c of this.connections) c.tick(nowMs);
    let queued = 0;
    let queuedBytes = 0;
    let inflight = 0;
    let snapshots = 0;
    for (const s of this.sessions.values()) {
      queued += s.queued;
      queuedBytes += s.queuedBytes;
      inflight += s.inflightCount;
      snapshots += s.snapshotsRunning;
    }
    // the sessions keep the budget as they go; the recount drops what ended sessions held
    this.sessionLimits.budget.used = queuedBytes;
    this.deps.metrics.queuedMessages.set(queued);
    this.deps.metrics.queuedBytes.set(queuedBytes);
    this.deps.metrics.inflightMessages.set(inflight);
    this.deps.metrics.retainedSnapshots.set(snapshots);
    // in a cluster the retained mirror also changes through other nodes' writes
    const retained = this.deps.retained.count();
    if (typeof retained === 'number') this.deps.metrics.retainedMessages.set(retained);
  }

  // ---- $SYS ------------------------------------------------------------------------------

  publishSys(): void {
    const now = this.deps.clock.now();
    const put = (topic: string, value: string | number) =>
      this.publish({ topic: `$SYS/broker/${topic}`, payload: Buffer.from(String(value)), qos: 0, retain: true, origin: '' });
    put('version', `vigil ${VERSION}`);
    put('uptime', `${Math.floor((now - this.startedAtMs) / 1000)} seconds`);
    put('clients/connected', this.sessions.size - this.offline.size);
    put('clients/disconnected', this.offline.size);
    put('messages/received', this.stats.messagesReceived);
    put('messages/sent', this.stats.messagesSent);
    put('subscriptions/count', this.router.size);
    put('retained messages/count', this.deps.retained.count());
  }
}

function noop(): void {}

function errorText(err: unknown): string {
  return (err as Error)?.message ?? String(err);
}

/** Both completions, or the one there is. */
function both(a: Promise<void> | undefined, b: void | Promise<void>): void | Promise<void> {
  if (!a) return b;
  if (!b) return a;
  return Promise.all([a, b]).then(noop);
}


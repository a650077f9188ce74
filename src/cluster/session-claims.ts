// Who holds a client's session, cluster-wide: a CONNECT claims the client id in the registry
// and loads (or creates) its session; a disconnect hands the will to the registry (due times
// in Redis, fired exactly once by whoever deletes the record); a takeover elsewhere moves the
// session away from here; after a lease loss each held session is kept (rehome) or given up;
// a reaper adopts the persistent sessions of a dead node (docs/cluster.md).
import type { Broker } from '../broker/broker.js';
import type { OpenResult } from '../broker/ports.js';
import type { Session } from '../broker/session.js';
import { RecentIds } from '../broker/recent-ids.js';
import { RC } from '../protocol/reason-codes.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { SessionSnapshot, WillRecord } from '../store/types.js';
import { ClientIdHeldError, StaleEpochError } from '../store/errors.js';
import type { KickEnvelope } from './bus-codec.js';
import type { ClusterNode } from './node.js';
import type { ClusterSessionJournal } from './session-journal.js';

/** How long a session that moved to another node stays here, handing on what is still routed to it. */
const MOVED_AWAY_GRACE_MS = 10_000;
/** Sessions of a dead node loaded together (one pipeline) when it is reaped. */
const ADOPT_BATCH = 250;

export class SessionClaims {
  /** CONNECTs between their claim and their session being ready, by client id. */
  private readonly opening = new Map<string, Promise<unknown>>();
  /** Disconnect bookkeeping still being written (awaited at shutdown). */
  private readonly settling = new Set<Promise<unknown>>();
  /**
   * Sessions held when this node lost its lease, with the member it held them as (a connection
   * closed then has a disconnect Redis has not heard of): settled by rejoined().
   */
  private heldAtLeaseLoss = new Map<string, { session: Session; member: string }>();

  constructor(
    private readonly broker: Broker,
    private readonly node: ClusterNode,
    private readonly journal: ClusterSessionJournal,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {}

  private get member(): string {
    return this.node.member;
  }

  // ---- CONNECT ----------------------------------------------------------------------------

  async open(clientId: string, cleanStart: boolean, expiryIntervalS: number, will: WillRecord | undefined, owner: string): Promise<OpenResult> {
    const opened = this.claim(clientId, cleanStart, expiryIntervalS, will, owner);
    this.opening.set(clientId, opened);
    try {
      return await opened;
    } finally {
      if (this.opening.get(clientId) === opened) this.opening.delete(clientId);
    }
  }

  /** Resolves once a CONNECT of this client that is being opened here is done (at once when none is). */
  async opened(clientId: string): Promise<void> {
    const opening = this.opening.get(clientId);
    if (opening) await opening.catch(() => undefined);
  }

  private async claim(clientId: string, cleanStart: boolean, expiryIntervalS: number, will: WillRecord | undefined, owner: string): Promise<OpenResult> {
    const { node, broker } = this;
    if (!node.membership.owner) return { refused: RC.SERVER_UNAVAILABLE, reason: 'node is not a cluster owner (Redis lease)' };
    // nothing can be claimed or stored while Redis is away: say so at once rather than queue
    if (node.redis.client.status !== 'ready') return { refused: RC.SERVER_UNAVAILABLE, reason: 'Redis unreachable' };
    // VIGIL_REDIS_WAIT_REPLICAS: the CONNACK waits until replicas have the claim, the will and
    // the session written below (writes from here on, on this connection)
    const since = node.redis.generation;
    // a persistent session this node holds no usable copy of: the claim fences, loads and keeps
    // the stored one in the same call (claim-client.lua), no three round trips of its own after
    // A copy held here is saved whole after the claim instead: the claim marks the stored
    // session as this epoch's, so that save cannot write back what a newer CONNECT claimed in
    // the same call ended or took (a Clean Start)
    const held = broker.sessions.get(clientId);
    const copyHere = !!held && !held.movedAway && !this.heldAtLeaseLoss.has(clientId);
    const resume = cleanStart || expiryIntervalS === 0 ? undefined : copyHere ? 'mark' : 'load';
    let claim;
    try {
      claim = await node.registry.claim(clientId, node.member, {
        cleanStart,
        will,
        sessionExpiryS: expiryIntervalS,
        owner,
        takeoverAcrossIdentities: broker.deps.config.sessionTakeover === 'any',
        resume,
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
    local?.link?.supersede(RC.SESSION_TAKEN_OVER, 'session taken over'); // raced a local takeover
    local = broker.sessions.get(clientId);
    // a copy that moved on to another node is stale, and so is one kept across a lease loss
    // that another member owned since: the stored session is the truth
    if (local && (local.movedAway || !this.stillHeld(local, claim.previousOwner))) {
      broker.endSession(local);
      local = undefined;
    }
    try {
      let snapshot: SessionSnapshot | undefined;
      // the claim stored the session as resumed here (new epoch and expiry, no time to live)
      let storedByClaim = false;
      if (cleanStart) {
        // the claim ended the stored session (claim-client.lua)
        if (local) broker.endSession(local);
        local = undefined;
      } else if (!local && claim.stored !== undefined && claim.stored !== 'marked') {
        // the claim fenced and loaded it (claim-client.lua): as below, in the same step
        if (claim.stored === 'stale') throw new StaleEpochError(clientId, epoch);
        snapshot = claim.stored === 'none' ? undefined : claim.stored;
        storedByClaim = true;
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
        session.journal = this.journal;
        session.seen ??= this.recentIds(snapshot);
        // the save, then its expiry lifted while connected: one slot, sent together, run in
        // order (the PERSIST sees the epoch just saved), one round trip. The claim stored a
        // session that is here as loaded already; one with pending messages or incoming QoS 2
        // ids is saved whole still: restoring it may renumber what was in flight, and the
        // journal addresses its messages by the seqs of a save. That save (as the save of a
        // copy held here) finds this epoch's claim mark on the stored session, or it writes
        // nothing: a newer CONNECT claimed in the same call (a Clean Start that ended this
        // session, or a takeover) must not see it written back
        if (!storedByClaim || (snapshot && (snapshot.pending.length > 0 || snapshot.incomingQos2.length > 0))) {
          await Promise.all([this.journal.saveWhole(session, claim.stored !== undefined), node.sessions.setExpiry(clientId, epoch, undefined)]);
        }
      } else {
        // expiry 0: the session ends with this connection, also the stored one it resumed — a
        // loaded snapshot, or the copy held here of a persistent session (it writes through to
        // Redis: its journal), whose stored session another node would resume otherwise
        const stored = !!snapshot || (!!local && session.journal !== undefined);
        session.journal = undefined;
        session.seen = undefined;
        if (stored) await node.sessions.delete(clientId, epoch).catch(() => false);
      }
      await node.redis.replicated(since);
      // a newer CONNECT of the client here (claimed after this one, maybe in the same batch)
      // took the session over before this one's CONNACK — ended it, or resumed this very object
      // under its own epoch: only the newer one goes on [MQTT-3.1.4-3]
      if (broker.sessions.get(clientId) !== session || session.epoch !== epoch) return { refused: RC.SESSION_TAKEN_OVER, reason: 'session taken over by a newer connection' };
      return { session, present };
    } catch (err) {
      // a newer incarnation (claimed later, maybe in the same call) holds or ended the session
      if (err instanceof StaleEpochError) return { refused: RC.SESSION_TAKEN_OVER, reason: 'session taken over by a newer connection' };
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

  // ---- disconnect ---------------------------------------------------------------------------

  async settle(): Promise<void> {
    await Promise.allSettled([...this.settling]);
  }

  disconnected(session: Session, normal: boolean): void {
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

  // ---- takeover elsewhere -------------------------------------------------------------------

  /** A current (not moved-away) session of this client is here. */
  holds(clientId: string): boolean {
    const s = this.broker.sessions.get(clientId);
    return s !== undefined && !s.movedAway;
  }

  /** The client connected on another node (a kick on the bus): this copy stops. */
  kicked(kick: KickEnvelope): void {
    const session = this.broker.sessions.get(kick.clientId);
    if (!session || session.epoch >= kick.epoch) return;
    this.takenElsewhere(session);
  }

  /**
   * Another node holds this client now. A persistent copy moves away rather than ending: it
   * may hold messages whose append failed (in memory only here, their bus entries then read
   * again and dropped as already seen), and the journal hands those on to the new node.
   */
  private takenElsewhere(session: Session): void {
    if (session.journal) this.movedAway(session);
    else if (session.link) session.link.supersede(RC.SESSION_TAKEN_OVER, 'session taken over on another node');
    else this.broker.endSession(session);
  }

  /**
   * A newer incarnation of this session lives on another node: stop sending from this copy;
   * for a while, what is still routed here is handed on (journal.added), then the copy ends.
   */
  movedAway(session: Session): void {
    if (session.movedAway) return;
    session.movedAway = true;
    session.link?.supersede(RC.SESSION_TAKEN_OVER, 'session taken over on another node');
    const timer = setTimeout(() => {
      if (this.broker.sessions.get(session.clientId) === session) this.broker.endSession(session);
    }, MOVED_AWAY_GRACE_MS);
    timer.unref();
  }

  // ---- lease loss and rejoin ----------------------------------------------------------------

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
   * and its copy here moves away (what only it has follows the session). A disconnect Redis
   * missed is recorded now (the will is decided as usual), and the sessions kept are saved
   * whole: writes that failed while Redis was away are in them.
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
        // a CONNECT elsewhere or a reaper took it while this node was cut off: the appends
        // that failed meanwhile follow it (checkpointDirty below hands them on)
        if (local && now === local) this.takenElsewhere(local);
        continue;
      }
      if (local && now === local) {
        kept++;
        if (local.journal) this.journal.markDirty(local);
      } else if (now && now !== local) continue; // a CONNECT here since: it settled the client
      const epoch = (local ?? closed!.session).epoch;
      const offline = local ? !local.link : true;
      if (home.online && home.epoch === epoch && offline) this.recordDisconnect(clientId, epoch, local?.expiryIntervalS ?? 0, false);
    }
    const saved = await this.journal.checkpointDirty();
    this.log.info({ member, previous, kept, lost, saved }, 'sessions kept across the lease loss');
  }

  // ---- adoption -----------------------------------------------------------------------------

  /**
   * After reaping a node: its clients' persistent sessions become offline sessions here,
   * routable again. ADOPT_BATCH clients at a time, their loads on one pipeline: a node that
   * died with 10,000 clients took 10,000 round trips one after another, and the dead node's
   * undelivered bus entries (handed to the adopted sessions after this) waited for all of them.
   * Failures are counted and logged once per call, not once per client (a node stopping mid-way
   * would otherwise log a line for every client left).
   */
  async adopt(clientIds: readonly string[]): Promise<void> {
    let adopted = 0;
    let failed = 0;
    let firstError: unknown;
    // a set: SSCAN may name a client twice, and two loads of one client in a batch would both adopt it
    const ids = [...new Set(clientIds)];
    for (let i = 0; i < ids.length; i += ADOPT_BATCH) {
      const batch = ids.slice(i, i + ADOPT_BATCH).filter((clientId) => !this.holds(clientId));
      const outcomes = await Promise.allSettled(batch.map((clientId) => this.adoptOne(clientId)));
      for (const o of outcomes) {
        if (o.status === 'fulfilled') adopted += o.value ? 1 : 0;
        else if (!(o.reason instanceof StaleEpochError)) {
          failed++;
          firstError ??= o.reason;
        }
      }
    }
    if (failed > 0) this.log.warn({ what: 'adopt', failed, of: clientIds.length, err: (firstError as Error)?.message ?? String(firstError) }, 'cluster operation failed');
    if (clientIds.length > 0) this.log.info({ clients: clientIds.length, adopted, failed }, 'sessions of a dead node adopted');
  }

  /** One client of a dead node: its stored persistent session, if any, becomes an offline session here. */
  private async adoptOne(clientId: string): Promise<boolean> {
    const snapshot = await this.node.sessions.load(clientId);
    if (!snapshot || snapshot.expiryIntervalS === 0 || this.holds(clientId)) return false;
    const session = this.broker.newSession(clientId, snapshot.expiryIntervalS);
    session.epoch = snapshot.epoch;
    session.seen = this.recentIds(snapshot);
    this.broker.adoptSession(session);
    this.restore(session, snapshot);
    // its routes are announced (route changes reach Redis in order) before the dead
    // member's are purged: no publish finds neither
    const announced = this.node.routes.announced();
    this.journal.loaded(session);
    session.journal = this.journal;
    this.broker.detachSession(session);
    await announced;
    if (session.expiryIntervalS < 0xffffffff) await this.node.sessions.setExpiry(clientId, session.epoch, session.expiryIntervalS * 1000);
    return true;
  }

  // ---- errors -------------------------------------------------------------------------------

  private ignoreStale(what: string, err: unknown): void {
    if (err instanceof StaleEpochError) return;
    this.redisFailed(what, err);
  }

  private redisFailed(what: string, err: unknown): void {
    this.log.warn({ what, err: (err as Error)?.message ?? String(err) }, 'cluster operation failed');
  }
}

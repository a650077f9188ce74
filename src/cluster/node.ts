// One node's cluster machinery wired together: membership (leases), client registry and
// wills, route table, cross-node bus, retained store and session store, plus the two
// background duties every node shares — reaping dead members and sweeping due wills.
// The broker integrates through this object (docs/cluster.md, "Integrating").
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { WillRecord } from '../store/types.js';
import { RedisRetainedStore } from '../store/redis/retained.js';
import { RedisSessionStore } from '../store/redis/sessions.js';
import { ClusterKeys } from './keys.js';
import { VigilRedis, redisTargetFromConfig, type RedisTargetConfig } from '../redis/connection.js';
import { Membership, type OwnerChangeReason } from './membership.js';
import { ClientRegistry, type WillPrefetch } from './registry.js';
import { RouteTable } from './routes.js';
import { MessageBus, type BusHandler } from './bus.js';
import type { PublishEnvelope } from './bus-codec.js';
import { recordReap } from './fleet-index.js';

export interface ClusterNodeHooks {
  /** A will this node must publish now (it alone holds it). Authorize with willAuthorizedAtFire. */
  fireWill(will: WillRecord): void | Promise<void>;
  /** Ownership changed: on false, close every client connection of this node at once. */
  onOwnerChange?(owner: boolean, reason: OwnerChangeReason): void;
  /** Something arrived on this node's bus; usually set by attach() (the broker's cluster side). */
  onBusMessage?: BusHandler;
}

/** The broker's cluster side (src/cluster/bridge.ts), called by this node directly. */
export interface ClusterSide {
  /** Something arrived on this node's bus (forwarded publish, or a takeover kick). */
  onBusMessage: BusHandler;
  /**
   * This node lost its lease and joined again as `member` (was `previous`), its routes and
   * bus stream already moved to the new member: keep what it still holds (registry.rehome).
   */
  onRejoined?(member: string, previous: string): void | Promise<void>;
  /** Clients of a reaped node, now owned (offline) by this one: keep their persistent sessions routable. */
  adoptSessions?(clientIds: readonly string[]): void | Promise<void>;
  /**
   * Publishes left in a reaped node's bus stream: for the sessions adopted here (`adopted`)
   * and for those of its clients that already connected to another node (`moved`), only.
   */
  deliverOrphaned?(envelopes: readonly PublishEnvelope[], adopted: readonly string[], moved: readonly string[]): void | Promise<void>;
}

export interface ClusterNodeOptions {
  readonly config: Pick<Config, 'redisPrefix' | 'heartbeatMs' | 'nodeTimeoutMs' | 'nodeId'> & Partial<Pick<Config, 'redisWaitReplicas' | 'redisWaitTimeoutMs'>> & RedisTargetConfig;
  readonly hooks: ClusterNodeHooks;
  readonly metrics?: Metrics;
  readonly log?: Logger;
  /** How often due wills are swept, ms (default heartbeatMs). */
  readonly willSweepMs?: number;
  /** Tests: no renewal timer. */
  readonly autoRenew?: boolean;
}

export class ClusterNode {
  readonly redis: VigilRedis;
  readonly keys: ClusterKeys;
  readonly membership: Membership;
  readonly registry: ClientRegistry;
  readonly retained: RedisRetainedStore;
  readonly sessions: RedisSessionStore;
  routes!: RouteTable;
  bus!: MessageBus;
  private sweepTimer?: NodeJS.Timeout;
  private readonly reaping = new Set<string>();
  /** Wills read ahead for members whose renewal is overdue, by member (at most one reading each). */
  private readonly prefetches = new Map<string, WillPrefetch>();
  private sweeping?: Promise<number>;
  /** When this node last became owner (start, rejoin, or a lease renewed after it was unconfirmed). */
  private ownerSinceMs = 0;
  private side?: ClusterSide;

  constructor(private readonly o: ClusterNodeOptions) {
    const { config, metrics, log } = o;
    this.keys = new ClusterKeys(config.redisPrefix);
    this.redis = new VigilRedis({
      target: redisTargetFromConfig(config),
      metrics,
      log,
      commandTimeoutMs: Math.max(1000, config.nodeTimeoutMs),
      waitReplicas: config.redisWaitReplicas,
      waitTimeoutMs: config.redisWaitTimeoutMs,
    });
    // leases on a connection of their own: a renewal never waits behind a WAIT while replicas
    // are away, nor in the auto-pipeline behind bulk work (a reaper's thousands of will
    // scripts and publishes)
    const leaseRedis = this.redis.sibling();
    this.membership = new Membership({ redis: leaseRedis, keys: this.keys, nodeId: config.nodeId, heartbeatMs: config.heartbeatMs, nodeTimeoutMs: config.nodeTimeoutMs, metrics, log, autoRenew: o.autoRenew });
    this.registry = new ClientRegistry({ redis: this.redis, keys: this.keys, metrics, log });
    this.retained = new RedisRetainedStore({ redis: this.redis, keys: this.keys, metrics, log });
    this.sessions = new RedisSessionStore({ redis: this.redis, keys: this.keys });
  }

  /** The broker's cluster side; before start(). */
  attach(side: ClusterSide): void {
    this.side = side;
  }

  /** This node's current member id ("<nodeId>/<incarnation>"). */
  get member(): string {
    return this.membership.member;
  }

  async start(): Promise<void> {
    const { metrics, log, hooks } = this.o;
    await this.membership.start();
    this.routes = new RouteTable({ redis: this.redis, keys: this.keys, member: this.member, log, liveMembers: () => this.membership.liveNodes() });
    this.bus = new MessageBus({ redis: this.redis, keys: this.keys, member: this.member, metrics, log });
    await this.routes.start(await this.membership.liveNodes());
    await this.retained.start();
    const onBus = this.side?.onBusMessage ?? hooks.onBusMessage;
    if (!onBus) throw new Error('cluster node started without a bus handler (attach the broker first)');
    await this.bus.start(onBus);
    this.membership.on('owner', (owner, reason) => {
      // counted from the latest regain: while the lease is lost nothing is reaped (below)
      this.ownerSinceMs = owner ? Date.now() : Number.POSITIVE_INFINITY;
      hooks.onOwnerChange?.(owner, reason);
    });
    this.membership.on('lapsed', (members) => {
      // Just back from a Redis outage, the lapsed members are most likely its other victims,
      // about to rejoin and keep their own sessions (rehome): reaping them waits one node
      // timeout, so they do, rather than their sessions move here without what only their
      // memory holds. Every heartbeat lists the lapsed members again. Without the lease it
      // reaps nobody: a survey answered while it was rejoining listed every member (its own
      // previous one too), and reaping them adopted the sessions the others were keeping, so
      // two nodes held each client's session (QoS 2 twice, messages lost with the copy ended).
      if (!this.membership.owner || Date.now() - this.ownerSinceMs < this.o.config.nodeTimeoutMs) return;
      for (const m of members) void this.reapMember(m);
    });
    this.membership.on('overdue', (members, renewing) => {
      // Not dead yet (it may renew): what its reaping would decode is read now, while this
      // node waits out the node timeout, instead of inside the reaping, where it delays every
      // will behind it. By one survivor, the first renewing member: every survivor reading
      // every record would multiply Redis's work by the cluster's size. Only while this node
      // would reap (as 'lapsed' below).
      // (nothing is read ahead in a Redis Cluster: ClientRegistry.prefetchWills)
      if (this.redis.isCluster || !this.membership.owner || Date.now() - this.ownerSinceMs < this.o.config.nodeTimeoutMs) return;
      if (!renewing.includes(this.member) || renewing.reduce((a, b) => (b < a ? b : a)) !== this.member) return;
      for (const m of members) {
        if (m === this.member || this.reaping.has(m) || this.prefetches.has(m)) continue;
        const prefetch = this.registry.prefetchWills(m);
        this.prefetches.set(m, prefetch);
        log?.info({ member: m }, 'reading the wills of an overdue node ahead');
        // a false alarm (it renewed) or a reaping won elsewhere: what was read is let go
        const dropAfter = setTimeout(() => {
          if (this.prefetches.get(m) !== prefetch) return;
          prefetch.stop();
          this.prefetches.delete(m);
        }, 2 * this.o.config.nodeTimeoutMs);
        dropAfter.unref();
        void prefetch.done.then(() => log?.info({ member: m, wills: prefetch.size }, 'wills of an overdue node read ahead'));
      }
    });
    this.membership.on('rejoined', (member, previous) => {
      // announce the routes and open the stream first: nothing routed to the sessions kept
      // here finds no route while the reaper purges the old member's
      void Promise.all([this.routes.rejoined(member), this.bus.rejoined(member)])
        .then(() => this.side?.onRejoined?.(member, previous))
        .catch((err: Error) => log?.error({ err: err.message }, 'rejoin failed'));
    });
    const every = this.o.willSweepMs ?? this.o.config.heartbeatMs;
    this.sweepTimer = setInterval(() => void this.sweepWills(), every);
    this.sweepTimer.unref();
  }

  async stop(options: { leave?: boolean } = {}): Promise<void> {
    clearInterval(this.sweepTimer);
    await this.membership.stop(options);
    await this.bus?.stop();
    await this.routes?.stop();
    await this.retained.stop();
    await this.redis.close();
  }

  /** Claims the reaping of a dead member; the winner fires/schedules its clients' wills and drops its routes and bus. */
  async reapMember(member: string): Promise<boolean> {
    if (member === this.member || this.reaping.has(member)) return false;
    this.reaping.add(member);
    try {
      const startedAt = performance.now();
      const prefetch = this.prefetches.get(member);
      this.prefetches.delete(member);
      prefetch?.stop();
      if (!(await this.membership.reap(member))) return false;
      const wonAt = performance.now();
      const report = await this.registry.orphanClients(member, this.o.hooks.fireWill, this.member, prefetch);
      const willsAt = performance.now();
      // routes of the adopted sessions first, then the dead member's go: every node's mirror
      // hears of the new route before the old one leaves, so no publish finds neither
      // only the clients with a stored session: a fleet of clean sessions reads none
      await this.side?.adoptSessions?.(report.withSession);
      await this.routes.purgeMember(member);
      const routesAt = performance.now();
      // what was forwarded to the dead node but not handled goes to the sessions adopted here
      const undelivered = await this.bus.takeDead(member);
      if (undelivered.length > 0) await this.side?.deliverOrphaned?.(undelivered, report.orphaned, report.moved);
      await this.bus.purge(member);
      // how long each phase took: a slow failover says whether the claim, the wills or the rest was the long pole
      const phasesMs = { claim: Math.round(wonAt - startedAt), wills: Math.round(willsAt - wonAt), routes: Math.round(routesAt - willsAt), bus: Math.round(performance.now() - routesAt) };
      this.o.log?.info({ member, clients: report.clients, fired: report.fired, scheduled: report.scheduled, adopted: report.withSession.length, prefetched: report.prefetched, phasesMs }, 'dead node reaped');
      // who reaped whom, for the console's cluster view
      const reap = { reaper: this.member, member, at: new Date().toISOString(), clients: report.clients, fired: report.fired, scheduled: report.scheduled, adopted: report.withSession.length };
      void recordReap(this.redis, this.keys, reap).catch((err: Error) => this.o.log?.warn({ err: err.message }, 'reap not recorded'));
      return true;
    } catch (err) {
      this.o.log?.error({ member, err: (err as Error).message }, 'reaping failed');
      return false;
    } finally {
      this.reaping.delete(member);
    }
  }

  /** One sweep at a time: a sweep of many due wills can outlast the sweep interval. */
  sweepWills(): Promise<number> {
    this.sweeping ??= this.registry
      .sweepDueWills(Date.now() + 50, this.o.hooks.fireWill)
      .catch((err: Error) => {
        this.o.log?.warn({ err: err.message }, 'due-will sweep failed');
        return 0;
      })
      .finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }
}

// Node membership by leases in one Redis ZSET (member → expiry, Redis clock).
//
// Rules (docs/cluster.md, "Membership"):
// - A node joins as a new *member* "<nodeId>/<incarnation>" and renews every heartbeatMs.
// - Others consider a member dead once Redis TIME passes its expiry (renewal time +
//   nodeTimeoutMs) and one of them wins reap(member) (ZREM inside a script: exactly one).
// - Self-fencing: a node whose last successful renewal was *sent* more than
//   nodeTimeoutMs − heartbeatMs ago reports owner=false before anyone can consider it dead
//   (the lease was written no earlier than it was sent, so it expires no earlier than
//   sent + nodeTimeoutMs): two nodes never both own a client.
// - A renewal answering 'reaped' or 'lapsed' means this member is finished: owner=false, and
//   the node rejoins as a new member (new incarnation); everything the old member owned is
//   the reaper's.
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import type { Metrics } from '../metrics.js';
import type { Logger } from '../log.js';
import type { VigilRedis } from '../redis/connection.js';
import type { ClusterKeys } from './keys.js';
import { num } from '../redis/connection.js';
import { LeaseLapsedError, LeaseReapedError, scriptStatus } from '../store/errors.js';

export interface MembershipOptions {
  readonly redis: VigilRedis;
  readonly keys: ClusterKeys;
  readonly nodeId: string;
  readonly heartbeatMs: number;
  readonly nodeTimeoutMs: number;
  readonly metrics?: Metrics;
  readonly log?: Logger;
  /** Monotonic local clock, ms (injected for tests). */
  readonly monotonicNow?: () => number;
  /** false: no renewal timer, the caller runs heartbeat() (tests). */
  readonly autoRenew?: boolean;
}

export type OwnerChangeReason = 'joined' | 'renewed' | 'lease_unconfirmed' | 'lease_reaped' | 'lease_lapsed' | 'stopped';

export interface MembershipEvents {
  /** Whether this node may act as owner of its clients changed. */
  owner: [owner: boolean, reason: OwnerChangeReason];
  /** This node rejoined as a new member after its old one was lost. */
  rejoined: [member: string, previous: string];
  /** Members whose lease has expired (candidates for reap()). Emitted on every heartbeat that sees some. */
  lapsed: [members: string[]];
  /**
   * Members whose lease still runs but whose renewal is late (last renewed more than
   * overdueAfterMs ago), with the members renewing in time (this one included). Nobody is
   * dead yet: a survivor may read what a reaping would need (ClientRegistry.prefetchWills).
   */
  overdue: [members: string[], renewing: string[]];
}

export function newMemberId(nodeId: string): string {
  return `${nodeId}/${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
}

export function nodeIdOf(member: string): string {
  return member.slice(0, member.lastIndexOf('/'));
}

export class Membership extends EventEmitter<MembershipEvents> {
  private currentMember: string;
  private isOwner = false;
  private running = false;
  private timer?: NodeJS.Timeout;
  private fenceTimer?: NodeJS.Timeout;
  /** Fires when the earliest other lease seen expires: a dead member is noticed then, not a heartbeat later. */
  private expiryTimer?: NodeJS.Timeout;
  private renewing = false;
  /** Lapsed members of the last survey: lease expiry and how long ago it was then (Redis clock), for reap()'s log line. */
  private lapsedSeen = new Map<string, { readonly expiresAt: number; readonly lapsedForMs: number }>();
  private lastOkSentAt = -Infinity;
  private readonly now: () => number;

  constructor(private readonly o: MembershipOptions) {
    super();
    this.now = o.monotonicNow ?? (() => performance.now());
    this.currentMember = newMemberId(o.nodeId);
  }

  get member(): string {
    return this.currentMember;
  }

  /** True while this node may own clients (lease confirmed recently enough). */
  get owner(): boolean {
    return this.isOwner;
  }

  /**
   * How long after its last renewal a member counts as overdue: a heartbeat and a half, so a
   * renewal merely late by a busy event loop or a slow round trip is not one.
   */
  get overdueAfterMs(): number {
    return this.o.heartbeatMs * 1.5;
  }

  /** Ms before the lease could expire at which ownership is given up. */
  get fenceAfterMs(): number {
    return this.o.nodeTimeoutMs - this.o.heartbeatMs;
  }

  async start(): Promise<void> {
    this.running = true;
    await this.join();
    if (this.o.autoRenew === false) return;
    this.timer = setInterval(() => void this.heartbeat(), this.o.heartbeatMs);
    this.timer.unref();
  }

  /** Leaves: the lease is marked expired so a survivor reaps this member right away. */
  async stop(options: { leave?: boolean } = {}): Promise<void> {
    this.running = false;
    clearInterval(this.timer);
    clearTimeout(this.fenceTimer);
    clearTimeout(this.expiryTimer);
    this.setOwner(false, 'stopped');
    if (options.leave !== false) {
      try {
        // 'gone': nothing to leave (reaped already)
        scriptStatus('leave-cluster', await this.o.redis.run('leaveCluster', [this.o.keys.nodeLeases], [this.currentMember]), { member: this.currentMember });
      } catch (err) {
        this.o.log?.warn({ err: (err as Error).message }, 'leaving the cluster failed');
      }
    }
  }

  /** Members with an unexpired lease (Redis clock), this one included. */
  async liveNodes(): Promise<string[]> {
    const now = await this.redisNow();
    const live = await this.o.redis.client.zrangebyscore(this.o.keys.nodeLeases, `(${now}`, '+inf');
    this.o.metrics?.clusterNodes.set(live.length);
    return live;
  }

  /** Members whose lease has expired but that nobody has reaped yet. */
  async lapsedNodes(): Promise<string[]> {
    const now = await this.redisNow();
    return this.o.redis.client.zrangebyscore(this.o.keys.nodeLeases, '-inf', now);
  }

  /** Claims the reaping of a dead member: true for exactly one caller, once its lease expired. */
  async reap(member: string): Promise<boolean> {
    // a token per call: ioredis re-sending this script after its reply was lost gets 'won' again
    const token = randomBytes(8).toString('hex');
    const reply = (await this.o.redis.run('reapNode', [this.o.keys.nodeLeases, this.o.keys.nodeReapedBy(member)], [member, token])) as unknown[];
    // 'alive' (not expired) or 'gone' (someone else reaped it): not this caller's
    if (scriptStatus('reap-node', reply, { member }) === 'won') {
      // when its lease ran out and how long before the survey that noticed it (both on the
      // Redis clock): whether detection or the reaping is the long pole of a failover
      const seen = this.lapsedSeen.get(member);
      this.o.log?.info({ member, leaseExpiredAtMs: seen?.expiresAt, lapsedForMs: seen?.lapsedForMs }, 'reaping dead node');
      return true;
    }
    return false;
  }

  /** One heartbeat now (also run by the timer). */
  async heartbeat(): Promise<void> {
    if (!this.running || this.renewing) return;
    this.renewing = true;
    const member = this.currentMember;
    const sentAt = this.now();
    try {
      let nowMs: number;
      try {
        const reply = (await this.o.redis.run('renewLease', [this.o.keys.nodeLeases], [member, this.o.nodeTimeoutMs, 'renew'])) as unknown[];
        scriptStatus('renew-lease', reply, { member });
        nowMs = num(reply[1]);
      } catch (err) {
        if (!(err instanceof LeaseReapedError || err instanceof LeaseLapsedError)) throw err;
        if (member === this.currentMember && this.running) await this.lost(err);
        return;
      }
      if (member !== this.currentMember || !this.running) return;
      this.o.metrics?.leaseRenewalsTotal.inc({ outcome: 'ok' });
      this.confirmed(sentAt, 'renewed');
      await this.survey(nowMs);
    } catch (err) {
      this.o.metrics?.leaseRenewalsTotal.inc({ outcome: 'error' });
      this.o.log?.warn({ err: (err as Error).message }, 'lease renewal failed');
    } finally {
      this.renewing = false;
    }
  }

  /**
   * The renewal found the lease reaped (a survivor took everything) or lapsed (survivors may be
   * reaping it now): this member is finished, the node joins again as a new one.
   */
  private async lost(err: LeaseReapedError | LeaseLapsedError): Promise<void> {
    const reaped = err instanceof LeaseReapedError;
    this.o.metrics?.leaseRenewalsTotal.inc({ outcome: reaped ? 'reaped' : 'lapsed' });
    this.o.log?.error({ member: err.member, status: reaped ? 'reaped' : 'lapsed', err: err.message }, 'node lease lost; rejoining as a new member');
    this.setOwner(false, reaped ? 'lease_reaped' : 'lease_lapsed');
    await this.rejoin();
  }

  private async join(): Promise<void> {
    const sentAt = this.now();
    const reply = (await this.o.redis.run('renewLease', [this.o.keys.nodeLeases], [this.currentMember, this.o.nodeTimeoutMs, 'join'])) as unknown[];
    scriptStatus('renew-lease', reply, { member: this.currentMember });
    this.o.metrics?.leaseRenewalsTotal.inc({ outcome: 'joined' });
    this.confirmed(sentAt, 'joined');
  }

  private async rejoin(): Promise<void> {
    const previous = this.currentMember;
    this.currentMember = newMemberId(this.o.nodeId);
    await this.join();
    this.emit('rejoined', this.currentMember, previous);
  }

  private confirmed(sentAt: number, reason: OwnerChangeReason): void {
    this.lastOkSentAt = Math.max(this.lastOkSentAt, sentAt);
    const remaining = this.lastOkSentAt + this.fenceAfterMs - this.now();
    clearTimeout(this.fenceTimer);
    if (remaining <= 0) {
      this.setOwner(false, 'lease_unconfirmed');
      return;
    }
    this.fenceTimer = setTimeout(() => this.checkFence(), remaining);
    this.fenceTimer.unref();
    this.setOwner(true, reason);
  }

  private checkFence(): void {
    const remaining = this.lastOkSentAt + this.fenceAfterMs - this.now();
    if (remaining > 0) {
      this.fenceTimer = setTimeout(() => this.checkFence(), remaining);
      this.fenceTimer.unref();
      return;
    }
    if (this.isOwner) this.o.log?.error({ member: this.currentMember, sinceMs: Math.round(this.now() - this.lastOkSentAt) }, 'lease not confirmed in time; giving up ownership');
    this.setOwner(false, 'lease_unconfirmed');
  }

  private setOwner(owner: boolean, reason: OwnerChangeReason): void {
    if (owner === this.isOwner) return;
    this.isOwner = owner;
    this.emit('owner', owner, reason);
  }

  /**
   * Reads every lease (a handful of members): emits the lapsed ones, counts the live ones, and
   * arms the expiry timer for the earliest other lease still running. A member that dies
   * stops renewing, so its last expiry is the one seen here: the survivors look again the
   * moment it passes, and a crash is noticed at node timeout, not node timeout + heartbeat.
   * Leases are compared on the Redis clock; the timer only errs late (the reply left Redis
   * before it got here), and reap() checks the expiry again on the Redis clock.
   */
  private async survey(nowMs: number): Promise<void> {
    const flat = await this.o.redis.client.zrange(this.o.keys.nodeLeases, 0, -1, 'WITHSCORES');
    const lapsed: string[] = [];
    const overdue: string[] = [];
    const renewing: string[] = [];
    // a lease renewed at T expires at T + nodeTimeoutMs: one expiring sooner than this was last renewed over overdueAfterMs ago
    const overdueBelowMs = this.o.nodeTimeoutMs - this.overdueAfterMs;
    let live = 0;
    let earliest = Number.POSITIVE_INFINITY;
    const lapsedSeen = new Map<string, { expiresAt: number; lapsedForMs: number }>();
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const member = flat[i]!;
      const expiresAt = Number(flat[i + 1]);
      if (expiresAt <= nowMs) {
        lapsed.push(member);
        lapsedSeen.set(member, { expiresAt, lapsedForMs: nowMs - expiresAt });
        continue;
      }
      live++;
      if (member !== this.currentMember && expiresAt - nowMs < overdueBelowMs) overdue.push(member);
      else renewing.push(member);
      if (member !== this.currentMember && expiresAt < earliest) earliest = expiresAt;
    }
    this.o.metrics?.clusterNodes.set(live);
    this.lapsedSeen = lapsedSeen;
    clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    if (Number.isFinite(earliest) && this.running) {
      // +1 ms: on the Redis clock the lease is lapsed from its expiry on (reap-node.lua: alive while score > now)
      this.expiryTimer = setTimeout(() => void this.expiryDue(), earliest - nowMs + 1);
      this.expiryTimer.unref();
    }
    if (lapsed.length > 0) this.emit('lapsed', lapsed);
    if (overdue.length > 0) this.emit('overdue', overdue, renewing);
  }

  private async expiryDue(): Promise<void> {
    if (!this.running) return;
    try {
      await this.survey(await this.redisNow());
    } catch (err) {
      // the next heartbeat surveys again
      this.o.log?.warn({ err: (err as Error).message }, 'lease expiry check failed');
    }
  }

  private async redisNow(): Promise<number> {
    const [s, us] = await this.o.redis.client.time();
    return Number(s) * 1000 + Math.floor(Number(us) / 1000);
  }
}

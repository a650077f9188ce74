// The fleet across the cluster, for the console. Every client id the registry has seen is in
// one sorted index (P:{P:fleet}:ids, score 0), so a page is one ZRANGEBYLEX from a cursor —
// no SCAN over every key — and then a handful of single-key reads per id on that page (owner,
// will, session, info, last will decision), auto-pipelined.
//
// The index is written next to the claim, not inside claim-client.lua: it is a global key and
// the owner record a per-client one, and no script may touch both (Redis Cluster slots, see
// keys.ts). Owner records are never deleted (their epoch must only grow), so the index needs
// no pruning: it is exactly the set of client ids with an owner record, or a superset while a
// claim is on its way.
//
// Will decisions are recorded by the node that made them: the client's last decision (with a
// TTL) and a capped list of recent ones, cluster-wide. Reaps go to a capped list as well.
import type { Verdict } from '../auth/types.js';
import type { Broker } from '../broker/broker.js';
import type { ConnectedClient, FleetObserver } from '../broker/fleet-events.js';
import type { Logger } from '../log.js';
import type { WillRecord } from '../store/types.js';
import type { FleetEntry, FleetPage, FleetQuery, FleetSource, FleetState, FleetWill, PendingWillView, WillDecision } from '../http/fleet.js';
import { decodeWill } from '../store/redis/codec.js';
import type { ClusterKeys } from './keys.js';
import { nodeIdOf } from './membership.js';
import type { VigilRedis } from '../redis/connection.js';
import { buf, num, str } from '../redis/connection.js';

const LAST_WILL_TTL_S = 7 * 24 * 3600;
const MAX_DECISIONS = 500;
const MAX_REAPS = 100;
/** Ids read per ZRANGEBYLEX when a state filter skips entries, and the most one page looks at. */
const SCAN_BATCH = 200;
const MAX_SCANNED = 5000;

export interface ReapRecord {
  readonly reaper: string;
  readonly member: string;
  readonly at: string;
  readonly clients: number;
  readonly fired: number;
  readonly scheduled: number;
  readonly adopted: number;
}

export interface ClusterFleetOptions {
  readonly redis: VigilRedis;
  readonly keys: ClusterKeys;
  /** Only its session map: exact counts for the clean sessions this node holds. */
  readonly broker: Pick<Broker, 'sessions'>;
  /** This node's current member id. */
  member(): string;
  describe(record: WillRecord, verdict: Verdict): WillDecision;
  readonly log?: Logger;
}

/** A will stored in Redis (not decided yet), for `will explain` cluster-wide. */
export interface StoredWill {
  readonly record: WillRecord;
  readonly dueAtMs?: number;
  readonly owner: string;
  readonly online: boolean;
  readonly leaseExpiresAtMs?: number;
}

export async function recordReap(redis: VigilRedis, keys: ClusterKeys, reap: ReapRecord): Promise<void> {
  await redis.client.lpush(keys.reaps, JSON.stringify(reap));
  await redis.client.ltrim(keys.reaps, 0, MAX_REAPS - 1);
}

export async function recentReaps(redis: VigilRedis, keys: ClusterKeys, limit: number): Promise<ReapRecord[]> {
  return (await redis.client.lrange(keys.reaps, 0, limit - 1)).map((s) => JSON.parse(s) as ReapRecord);
}

function lexMin(q: FleetQuery): string | Buffer {
  if (q.after !== undefined && q.after >= q.prefix) return `(${q.after}`;
  return q.prefix === '' ? '-' : `[${q.prefix}`;
}

function lexMax(q: FleetQuery): string | Buffer {
  // no UTF-8 encoding holds the byte 0xff: every id with the prefix sorts below prefix+0xff
  return q.prefix === '' ? '+' : Buffer.concat([Buffer.from(`[${q.prefix}`), Buffer.from([0xff])]);
}

const isoOf = (v: string | undefined): string | null => (v ? new Date(Number(v)).toISOString() : null);

export class ClusterFleet implements FleetSource, FleetObserver {
  constructor(private readonly o: ClusterFleetOptions) {}

  private failed(what: string, err: unknown): void {
    this.o.log?.warn({ err: (err as Error).message, what }, 'console record not written');
  }

  // ---- observer: fire and forget, the console is informational ----
  connected(c: ConnectedClient): void {
    const { client } = this.o.redis;
    const member = this.o.member();
    void Promise.all([
      client.zadd(this.o.keys.fleetIds, 'NX', 0, c.clientId),
      client.hset(this.o.keys.clientInfo(c.clientId), {
        epoch: c.epoch,
        node: member,
        username: c.username,
        roles: JSON.stringify(c.roles),
        proto: c.protocolVersion,
        connectedAt: c.connectedAtMs,
        endedAt: '',
        end: '',
      }),
    ]).catch((err) => this.failed('connected', err));
  }

  gone(clientId: string, epoch: number, normal: boolean, atMs: number): void {
    void this.o.redis.run('fleetEnded', [this.o.keys.clientInfo(clientId)], [epoch, atMs, normal ? 'normal' : 'abnormal']).catch((err) => this.failed('gone', err));
  }

  willDecided(record: WillRecord, verdict: Verdict): void {
    const json = JSON.stringify(this.o.describe(record, verdict));
    const { client } = this.o.redis;
    void Promise.all([
      client.set(this.o.keys.clientLastWill(record.clientId), json, 'EX', LAST_WILL_TTL_S),
      client.lpush(this.o.keys.willDecisions, json).then(() => client.ltrim(this.o.keys.willDecisions, 0, MAX_DECISIONS - 1)),
    ]).catch((err) => this.failed('will decision', err));
  }

  // ---- source ----
  async page(q: FleetQuery): Promise<FleetPage> {
    const clients: FleetEntry[] = [];
    let scanned = 0;
    let cursor: string | undefined = q.after;
    let exhausted = false;
    while (clients.length < q.limit && scanned < MAX_SCANNED) {
      const want = q.state === undefined ? q.limit - clients.length : SCAN_BATCH;
      const ids = await this.o.redis.client.zrangebylex(this.o.keys.fleetIds, lexMin({ ...q, after: cursor }), lexMax(q), 'LIMIT', 0, want + 1);
      const more = ids.length > want;
      const batch = ids.slice(0, want);
      const entries = await Promise.all(batch.map((id) => this.entry(id)));
      for (let i = 0; i < batch.length; i++) {
        scanned++;
        cursor = batch[i];
        const e = entries[i];
        if (e && (q.state === undefined || e.state === q.state)) clients.push(e);
        if (clients.length === q.limit) {
          exhausted = !more && i === batch.length - 1;
          break;
        }
      }
      if (!more && clients.length < q.limit) {
        exhausted = true;
        break;
      }
    }
    return { clients, next: exhausted ? null : (cursor ?? null), scanned };
  }

  /** Everything the fleet view shows of one client; undefined when the registry has no record. */
  async entry(clientId: string): Promise<FleetEntry | undefined> {
    const { client } = this.o.redis;
    const k = this.o.keys;
    const [owner, info, will, session, subs, pending, last] = await Promise.all([
      client.hmget(k.clientOwner(clientId), 'node', 'epoch', 'online', 'identity', 'orphan'),
      client.hgetall(k.clientInfo(clientId)),
      client.hmget(k.clientWill(clientId), 'epoch', 'dueAt'),
      client.hmget(k.session(clientId), 'epoch', 'expiryS'),
      client.hlen(k.sessionSubscriptions(clientId)),
      client.hlen(k.sessionPending(clientId)),
      client.get(k.clientLastWill(clientId)),
    ]);
    const [ownerNode, ownerEpoch, online, ownerIdentity] = connectionEpochOf(owner);
    if (!ownerNode && !ownerEpoch) return undefined;
    const connected = online === '1';
    const sameIncarnation = info.epoch !== undefined && info.epoch === ownerEpoch;
    const decision = last ? (JSON.parse(last) as WillDecision) : undefined;
    const decided = decision && String(decision.epoch) === ownerEpoch && !connected ? decision : undefined;
    let willView: FleetWill | null = null;
    if (will[0] !== null && will[0] === ownerEpoch) {
      willView = will[1] ? { state: 'pending', dueAt: new Date(Number(will[1])).toISOString(), node: nodeIdOf(ownerNode ?? '') } : connected ? { state: 'attached' } : null;
    } else if (decided) {
      willView = { state: decided.outcome, topic: decided.will.topic, node: decided.node, reason: decided.reason, rule: decided.rule, at: decided.at };
    }
    let state: FleetState;
    if (connected) state = 'connected';
    else if (sameIncarnation && info.end === 'normal') state = 'offline';
    else if (sameIncarnation || willView) state = 'down';
    else state = 'offline';
    // a clean session lives only in the memory of the node holding it: exact counts when that is this one
    const local = connected && ownerNode === this.o.member() ? this.o.broker.sessions.get(clientId) : undefined;
    const persistent = session[0] !== null;
    let roles: string[] = [];
    try {
      roles = sameIncarnation && info.roles ? (JSON.parse(info.roles) as string[]) : [];
    } catch {
      roles = [];
    }
    const endedAt = sameIncarnation ? info.endedAt : undefined;
    return {
      clientId,
      state,
      node: nodeIdOf(ownerNode ?? ''),
      username: sameIncarnation ? (info.username ?? null) : (decided?.identity.username ?? null),
      owner: ownerIdentity || null,
      roles: roles.length > 0 ? roles : (decided?.identity.roles ?? []),
      protocolVersion: sameIncarnation && info.proto ? Number(info.proto) : null,
      connectedSince: connected && sameIncarnation ? isoOf(info.connectedAt) : null,
      disconnectedSince: connected ? null : (isoOf(endedAt) ?? decided?.at ?? null),
      persistent,
      subscriptions: local ? local.subscriptions.size : persistent ? subs : connected ? null : 0,
      queued: local ? local.queued + local.inflight.size : persistent ? pending : connected ? null : 0,
      will: willView,
    };
  }

  async pendingWills(limit: number): Promise<PendingWillView[]> {
    const raw = await this.o.redis.client.zrange(this.o.keys.dueWills, 0, limit - 1, 'WITHSCORES');
    const out: PendingWillView[] = [];
    for (let i = 0; i < raw.length; i += 2) {
      const { clientId } = this.o.keys.parseDueWillMember(raw[i]);
      out.push({ clientId, dueAt: new Date(Number(raw[i + 1])).toISOString(), node: '' });
    }
    const owners = await Promise.all(out.map((p) => this.o.redis.client.hget(this.o.keys.clientOwner(p.clientId), 'node')));
    return out.map((p, i) => ({ ...p, node: nodeIdOf(owners[i] ?? '') }));
  }

  async decisions(limit: number): Promise<WillDecision[]> {
    return (await this.o.redis.client.lrange(this.o.keys.willDecisions, 0, limit - 1)).map((s) => JSON.parse(s) as WillDecision);
  }

  async lastDecision(clientId: string): Promise<WillDecision | undefined> {
    const s = await this.o.redis.client.get(this.o.keys.clientLastWill(clientId));
    return s ? (JSON.parse(s) as WillDecision) : undefined;
  }

  /** The will stored for a client, not yet decided (for `will explain` on any node). */
  async storedWill(clientId: string): Promise<StoredWill | undefined> {
    const { client } = this.o.redis;
    const [w, owner] = await Promise.all([
      client.hmgetBuffer(this.o.keys.clientWill(clientId), 'rec', 'epoch', 'dueAt'),
      client.hmget(this.o.keys.clientOwner(clientId), 'node', 'online'),
    ]);
    const rec = buf(w[0]);
    if (!rec) return undefined;
    const member = owner[0] ?? '';
    const lease = member ? await client.zscore(this.o.keys.nodeLeases, member) : null;
    return {
      record: { ...decodeWill(rec), epoch: num(w[1]) },
      dueAtMs: w[2] ? num(str(w[2])) : undefined,
      owner: member,
      online: owner[1] === '1',
      leaseExpiresAtMs: lease === null ? undefined : Number(lease),
    };
  }
}

/**
 * The owner record's fields with the epoch of the client's last connection: a reaper's orphan
 * claim is an incarnation of its own, one above that connection's (orphan-client.lua fences
 * the dead node's writes with it), and its "<token>:<epoch>" stays in the record until the
 * next claim. The view is of the connection, its info, will and decision.
 */
function connectionEpochOf(owner: (string | null)[]): (string | null)[] {
  const [node, epoch, online, identity, orphan] = owner;
  const orphanEpoch = orphan ? orphan.slice(orphan.lastIndexOf(':') + 1) : undefined;
  return [node, epoch !== null && orphanEpoch === epoch ? String(Number(epoch) - 1) : epoch, online, identity];
}

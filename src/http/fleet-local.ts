// The fleet on one node, from its memory: the session map (connected and offline persistent
// sessions), the pending wills, and a bounded record of clients whose connection ended and of
// recent will decisions. Paging is one pass over the ids (no sort of the whole set).
import type { Broker } from '../broker/broker.js';
import type { ConnectedClient, FleetObserver } from '../broker/fleet-events.js';
import type { Verdict } from '../auth/types.js';
import type { Clock } from '../clock.js';
import type { WillRecord } from '../store/types.js';
import { compareIds, smallestIds, type FleetEntry, type FleetPage, type FleetQuery, type FleetSource, type FleetState, type PendingWillView, type WillDecision } from './fleet.js';

interface Known {
  epoch: number;
  username: string;
  roles: readonly string[];
  protocolVersion: number;
  connectedAtMs: number;
  endedAtMs?: number;
  normal?: boolean;
}

export interface LocalFleetOptions {
  readonly broker: Broker;
  readonly nodeId: string;
  readonly clock: Clock;
  /** Builds the decision record (rule, explanation) from a verdict. */
  describe(record: WillRecord, verdict: Verdict): WillDecision;
  /** Clients remembered after their session is gone (oldest forgotten first). */
  readonly maxKnown?: number;
  readonly maxDecisions?: number;
}

/** Insertion-ordered map that forgets its oldest entry past `max` (re-set moves an entry to the end). */
export class BoundedMap<V> extends Map<string, V> {
  constructor(private readonly max: number) {
    super();
  }
  override set(key: string, value: V): this {
    super.delete(key);
    super.set(key, value);
    if (this.size > this.max) super.delete(this.keys().next().value as string);
    return this;
  }
}

/** Recent will decisions, newest first, at most `max`. */
export class DecisionRing {
  private readonly items: WillDecision[] = [];
  constructor(private readonly max: number) {}
  push(d: WillDecision): void {
    this.items.unshift(d);
    if (this.items.length > this.max) this.items.pop();
  }
  recent(limit: number): WillDecision[] {
    return this.items.slice(0, limit);
  }
}

export class LocalFleet implements FleetSource, FleetObserver {
  private readonly known: BoundedMap<Known>;
  private readonly lastDecisions: BoundedMap<WillDecision>;
  private readonly ring: DecisionRing;

  constructor(private readonly o: LocalFleetOptions) {
    this.known = new BoundedMap(o.maxKnown ?? 100_000);
    this.lastDecisions = new BoundedMap(o.maxKnown ?? 100_000);
    this.ring = new DecisionRing(o.maxDecisions ?? 200);
  }

  // ---- observer ----
  connected(c: ConnectedClient): void {
    this.known.set(c.clientId, { epoch: c.epoch, username: c.username, roles: c.roles, protocolVersion: c.protocolVersion, connectedAtMs: c.connectedAtMs });
  }

  gone(clientId: string, epoch: number, normal: boolean, atMs: number): void {
    const k = this.known.get(clientId);
    if (k && k.epoch === epoch) this.known.set(clientId, { ...k, endedAtMs: atMs, normal });
  }

  willDecided(record: WillRecord, verdict: Verdict): void {
    const d = this.o.describe(record, verdict);
    this.ring.push(d);
    this.lastDecisions.set(record.clientId, d);
  }

  // ---- source ----
  private *ids(): Generator<string> {
    yield* this.o.broker.sessions.keys();
    yield* this.o.broker.wills.pendingIds();
    yield* this.known.keys();
  }

  async page(q: FleetQuery): Promise<FleetPage> {
    let scanned = 0;
    const keep = q.state === undefined ? undefined : (id: string) => this.entry(id)?.state === q.state;
    const ids = smallestIds(this.counting(this.ids(), () => scanned++), q, q.limit + 1, keep);
    const more = ids.length > q.limit;
    const clients = ids.slice(0, q.limit).map((id) => this.entry(id)).filter((e): e is FleetEntry => e !== undefined);
    return { clients, next: more ? clients[clients.length - 1].clientId : null, scanned };
  }

  private *counting(ids: Iterable<string>, count: () => void): Generator<string> {
    for (const id of ids) {
      count();
      yield id;
    }
  }

  entry(clientId: string): FleetEntry | undefined {
    const session = this.o.broker.sessions.get(clientId);
    const pending = this.o.broker.wills.pendingFor(clientId);
    const k = this.known.get(clientId);
    const decision = this.lastDecisions.get(clientId);
    if (!session && !pending && !k) return undefined;
    const online = session?.online ?? false;
    const link = session?.link as { will?: WillRecord; normalDisconnect?: boolean } | null | undefined;
    const state: FleetState = online ? 'connected' : k?.endedAtMs !== undefined && k.normal ? 'offline' : k || pending || decision ? 'down' : 'offline';
    const decided = decision && (!k || decision.epoch >= k.epoch) ? decision : undefined;
    let will: FleetEntry['will'] = null;
    if (online && link?.will) will = { state: 'attached', topic: link.will.message.topic, node: this.o.nodeId };
    else if (pending) will = { state: 'pending', topic: pending.record.message.topic, dueAt: new Date(pending.dueAtMs).toISOString(), node: this.o.nodeId };
    else if (decided && !online) will = { state: decided.outcome, topic: decided.will.topic, node: decided.node, reason: decided.reason, rule: decided.rule, at: decided.at };
    return {
      clientId,
      state,
      node: this.o.nodeId,
      username: k?.username ?? pending?.record.identity.username ?? null,
      owner: session?.owner ?? null,
      roles: k?.roles ?? pending?.record.identity.roles ?? [],
      protocolVersion: k?.protocolVersion ?? null,
      connectedSince: online && k ? new Date(k.connectedAtMs).toISOString() : null,
      disconnectedSince: !online && k?.endedAtMs !== undefined ? new Date(k.endedAtMs).toISOString() : null,
      persistent: session !== undefined && session.expiryIntervalS > 0,
      subscriptions: session ? session.subscriptions.size : 0,
      queued: session ? session.queued + session.inflight.size : 0,
      will,
    };
  }

  async pendingWills(limit: number): Promise<PendingWillView[]> {
    const out: PendingWillView[] = [];
    for (const id of this.o.broker.wills.pendingIds()) {
      const p = this.o.broker.wills.pendingFor(id)!;
      out.push({ clientId: id, dueAt: new Date(p.dueAtMs).toISOString(), node: this.o.nodeId, topic: p.record.message.topic });
    }
    return out.sort((a, b) => (a.dueAt === b.dueAt ? compareIds(a.clientId, b.clientId) : a.dueAt < b.dueAt ? -1 : 1)).slice(0, limit);
  }

  async decisions(limit: number): Promise<WillDecision[]> {
    return this.ring.recent(limit);
  }

  async lastDecision(clientId: string): Promise<WillDecision | undefined> {
    return this.lastDecisions.get(clientId);
  }
}

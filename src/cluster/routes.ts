// The cluster route table: which node members have subscribers for which filters.
//
// Each node publishes its own filter set (a filter is added when the node's local count for
// it goes 0→1 and removed on 1→0; shared subscriptions as "$share/<group>/<filter>") to a
// Redis SET per member through route-change.lua, which announces every change with a
// per-member version. Every node mirrors all members' sets in a TopicTrie whose subscribers
// are members, and answers route(topic) synchronously. A start() subscribes first, then
// snapshots each live member (route-snapshot.lua), buffering announcements meanwhile and
// applying only those newer than the snapshot.
//
// Shared subscriptions: the publishing node picks, per matching group, one member round
// robin among members having that group (itself included); that member then picks one local
// subscriber. So each message reaches exactly one subscriber of the group cluster-wide.
import type { Logger } from '../log.js';
import type { Subscription } from '../store/types.js';
import { TopicTrie, type Subscriber, type SubEntry } from '../broker/topic-trie.js';
import type { ClusterKeys } from './keys.js';
import type { RedisConnection, VigilRedis } from '../redis/connection.js';
import { closeConnection, num, str } from '../redis/connection.js';
import { scriptStatus } from '../store/errors.js';
import { emptyScratch, type RemoteMatch, type RemoteRoutes, type SharedPick } from '../broker/router.js';
import { parseShared, sharedName } from '../protocol/topics.js';

export interface RouteTableOptions {
  readonly redis: VigilRedis;
  readonly keys: ClusterKeys;
  /** This node's member id. */
  readonly member: string;
  readonly log?: Logger;
  /** Live members (Membership.liveNodes), for a resync after the subscriber reconnected. */
  readonly liveMembers?: () => Promise<string[]>;
}

class RemoteMember implements Subscriber {
  readonly online = true;
  readonly filters = new Set<string>();
  version = 0;
  constructor(readonly clientId: string) {}
}

interface Change {
  op: 'A' | 'R' | 'C';
  version: number;
  member: string;
  filter: string;
}

export class RouteTable implements RemoteRoutes {
  private readonly trie = new TopicTrie<RemoteMember>();
  private readonly members = new Map<string, RemoteMember>();
  private readonly localCounts = new Map<string, number>();
  private subscriber?: RedisConnection;
  private buffered?: Change[];
  private selfMember: string;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: RouteTableOptions) {
    this.selfMember = o.member;
  }

  get member(): string {
    return this.selfMember;
  }

  /** Subscribes to announcements, then loads the sets of `liveMembers` (from Membership.liveNodes()). */
  async start(liveMembers: readonly string[]): Promise<void> {
    const sub = this.o.redis.duplicate();
    this.subscriber = sub;
    sub.on('messageBuffer', (_c: Buffer, payload: Buffer) => this.onAnnouncement(payload.toString('utf8')));
    await sub.subscribe(this.o.keys.routesChannel);
    await this.resync(liveMembers);
    let started = false;
    // while announcements cannot arrive the mirror may miss routes: routing says so (fresh)
    sub.on('close', () => {
      if (this.subscriber === sub) this.fresh = false;
    });
    sub.on('ready', () => {
      // announcements may have been lost while disconnected (see RedisRetainedStore for why
      // the turn and the PING)
      if (!started || this.subscriber !== sub) return;
      const attempt = () => {
        void (async () => {
          await (sub as unknown as { ping(): Promise<unknown> }).ping().catch(() => undefined);
          const live = this.o.liveMembers ? await this.o.liveMembers() : [];
          await this.resync([...new Set([...live, ...this.members.keys()])]);
          if (sub.status === 'ready' && this.subscriber === sub) this.fresh = true;
        })().catch((err: Error) => {
          this.o.log?.error({ err: err.message }, 'route resync failed; retrying');
          // still connected: try again shortly (a new 'ready' starts its own attempt)
          if (sub.status === 'ready' && this.subscriber === sub) setTimeout(attempt, 250).unref();
        });
      };
      setImmediate(attempt);
    });
    started = true;
    this.fresh = true;
  }

  /**
   * False from the moment the announcement subscriber lost Redis until it is back and the
   * sets are reloaded: a route may be missing meanwhile, so a QoS 1/2 publish that finds no
   * other node is not acknowledged (the publisher sends it again).
   */
  fresh = false;

  /** Reloads the given members' sets (announcements arriving meanwhile are applied after). */
  async resync(members: readonly string[]): Promise<void> {
    const buffered: Change[] = [];
    this.buffered = buffered;
    try {
      await Promise.all(members.filter((m) => m !== this.selfMember).map((m) => this.loadMember(m)));
      for (const c of buffered) this.apply(c);
    } finally {
      if (this.buffered === buffered) this.buffered = undefined;
    }
  }

  async stop(): Promise<void> {
    const sub = this.subscriber;
    this.subscriber = undefined;
    if (sub) await closeConnection(sub);
  }

  /** A local session subscribed: publishes the filter when this node's count goes 0→1. */
  addLocal(sub: Pick<Subscription, 'filter' | 'group'>): Promise<void> {
    const raw = sharedName(sub);
    const n = (this.localCounts.get(raw) ?? 0) + 1;
    this.localCounts.set(raw, n);
    this.localApply('A', raw);
    return n === 1 ? this.change('add', raw) : Promise.resolve();
  }

  /** A local subscription went away: unpublishes the filter when the count goes 1→0. */
  removeLocal(sub: Pick<Subscription, 'filter' | 'group'>): Promise<void> {
    const raw = sharedName(sub);
    const n = this.localCounts.get(raw) ?? 0;
    if (n <= 0) return Promise.resolve();
    if (n > 1) {
      this.localCounts.set(raw, n - 1);
      return Promise.resolve();
    }
    this.localCounts.delete(raw);
    this.localApply('R', raw);
    return this.change('remove', raw);
  }

  /** Resolves once every route change made so far reached Redis, or failed (they go one at a time). */
  announced(): Promise<void> {
    return this.chain.then(() => undefined);
  }

  /** This node rejoined as a new member: republishes every local filter under it. */
  async rejoined(newMember: string): Promise<void> {
    const old = this.selfMember;
    this.selfMember = newMember;
    this.dropMember(old);
    for (const raw of this.localCounts.keys()) {
      this.localApply('A', raw);
      await this.change('add', raw);
    }
  }

  /** Other members with matching non-shared subscriptions (synchronous). */
  nodesFor(topic: string): Set<string> {
    return new Set(this.route(topic).members);
  }

  /** Reused by every route() call: one publish is routed at a time, on the main thread. */
  private readonly scratch: { members: Set<string>; shared: SharedPick[] } = { members: new Set(), shared: [] };
  private readonly visit = (e: SubEntry<RemoteMember>): void => {
    const m = e.subscriber.clientId;
    if (e.sub.group !== undefined) this.scratch.shared.push({ group: e.sub.group, filter: e.sub.filter, member: m });
    else if (m !== this.selfMember) this.scratch.members.add(m);
  };

  /**
   * Members to forward a message to, and the member chosen for each matching shared group.
   * The result is valid until the next call (the per-publish path allocates nothing).
   */
  route(topic: string, once = false): RemoteMatch {
    const r = this.scratch;
    if (r.members.size !== 0) r.members.clear(); // a runtime call, ~90 ns, even when empty
    emptyScratch(r.shared);
    this.trie.match(topic, this.visit, !once);
    return r;
  }

  /** Members currently known to have routes. */
  knownMembers(): string[] {
    return [...this.members.keys()];
  }

  /** Forgets a dead member locally (each node does this when it learns of the death). */
  dropMember(member: string): void {
    const m = this.members.get(member);
    if (!m) return;
    for (const raw of m.filters) {
      const { filter, group } = parseShared(raw) ?? { filter: raw };
      this.trie.remove(member, filter, group);
    }
    this.members.delete(member);
  }

  /** The reaper's part: deletes a dead member's set in Redis and tells every node. */
  async purgeMember(member: string): Promise<void> {
    this.dropMember(member);
    scriptStatus('route-change', await this.o.redis.run('routeChange', [this.o.keys.nodeRoutes(member), this.o.keys.nodeRoutesVersion(member)], ['clear', '', member, this.o.keys.routesChannel]), { member });
  }

  /** Loads a member not seen yet (e.g. one that joined while announcements were lost). */
  async loadMember(member: string): Promise<void> {
    const reply = (await this.o.redis.run('routeSnapshot', [this.o.keys.nodeRoutes(member), this.o.keys.nodeRoutesVersion(member)], [])) as unknown[];
    scriptStatus('route-snapshot', reply, { member });
    const version = num(reply[1]);
    const existing = this.members.get(member);
    if (existing && existing.version > version) return;
    this.dropMember(member);
    if (version === 0 && reply.length === 2) return; // never published, or purged long ago
    const m = this.ensureMember(member);
    m.version = version;
    for (const f of reply.slice(2)) this.addTo(m, str(f));
  }

  private change(op: 'add' | 'remove', raw: string): Promise<void> {
    const member = this.selfMember;
    // one at a time, so Redis sees this node's changes in the order they were made
    const p = this.chain.then(() =>
      this.o.redis
        .run('routeChange', [this.o.keys.nodeRoutes(member), this.o.keys.nodeRoutesVersion(member)], [op, raw, member, this.o.keys.routesChannel])
        .then((reply) => scriptStatus('route-change', reply, { member })),
    );
    this.chain = p.catch(() => undefined);
    return p.then(
      () => undefined,
      (err: Error) => {
        this.o.log?.error({ filter: raw, op, err: err.message }, 'route change failed');
        throw err;
      },
    );
  }

  /** This node's own entries are applied at once (versionless); its announcements are ignored. */
  private localApply(op: 'A' | 'R', raw: string): void {
    const m = this.ensureMember(this.selfMember);
    if (op === 'A') this.addTo(m, raw);
    else this.removeFrom(m, raw);
  }

  private onAnnouncement(text: string): void {
    const nl1 = text.indexOf('\n');
    const nl2 = text.indexOf('\n', nl1 + 1);
    const change: Change = {
      op: text[0] as Change['op'],
      version: Number(text.slice(1, nl1)),
      member: text.slice(nl1 + 1, nl2),
      filter: text.slice(nl2 + 1),
    };
    if (this.buffered) this.buffered.push(change);
    else this.apply(change);
  }

  private apply(c: Change): void {
    if (c.member === this.selfMember) return;
    if (c.op === 'C') {
      this.dropMember(c.member);
      return;
    }
    const m = this.ensureMember(c.member);
    if (c.version <= m.version) return;
    m.version = c.version;
    if (c.op === 'A') this.addTo(m, c.filter);
    else this.removeFrom(m, c.filter);
  }

  private ensureMember(member: string): RemoteMember {
    let m = this.members.get(member);
    if (!m) {
      m = new RemoteMember(member);
      this.members.set(member, m);
    }
    return m;
  }

  private addTo(m: RemoteMember, raw: string): void {
    if (m.filters.has(raw)) return;
    m.filters.add(raw);
    const { filter, group } = parseShared(raw) ?? { filter: raw };
    this.trie.add(m, { filter, group, qos: 2, noLocal: false, retainAsPublished: false, retainHandling: 0 });
  }

  private removeFrom(m: RemoteMember, raw: string): void {
    if (!m.filters.delete(raw)) return;
    const { filter, group } = parseShared(raw) ?? { filter: raw };
    this.trie.remove(m.clientId, filter, group);
  }
}

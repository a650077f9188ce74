// The router answers one question: which local sessions, and which other nodes, need a
// message on this topic. Local subscriptions are in a TopicTrie of sessions; in a cluster the
// other nodes' subscriptions are in the route table (src/cluster/routes.ts), which it asks in
// the same call. It delivers nothing: the broker delivers locally, the cluster forwards.
//
// A session with overlapping subscriptions appears once, at the highest granted QoS and with
// every subscription identifier [MQTT-3.3.4-2, MQTT-3.3.4-3]. Shared groups: on one node one
// local member of each matching group is picked here; in a cluster the route table picks one
// node per group cluster-wide, and that node picks one local member (pickShared).
import type { StoredMessage, Subscription } from '../store/types.js';
import type { Session } from './session.js';
import { TopicTrie, type SubEntry } from './topic-trie.js';

/** For a matching shared group: the node member whose local member gets the message. */
export interface SharedPick {
  readonly group: string;
  readonly filter: string;
  readonly member: string;
}

/** What the cluster's route table answers for a topic (valid until its next call). */
export interface RemoteMatch {
  /** Other members with at least one matching non-shared subscription. */
  readonly members: Set<string>;
  /** One pick per matching shared group (this node's member included). */
  readonly shared: SharedPick[];
}

/** The cluster route table, as the router needs it. */
export interface RemoteRoutes {
  /** This node's own member id: shared picks for it are delivered here. */
  readonly member: string;
  /** `once`: a topic published once (a will), its match not remembered (TopicTrie.match). */
  route(topic: string, once?: boolean): RemoteMatch;
}

export interface Routes {
  /** Local sessions with matching non-shared subscriptions, once each (see Session.match*). */
  readonly sessions: readonly Session[];
  /** Local shared-group members picked on this node (one node: one per group). */
  readonly shared: readonly SubEntry<Session>[];
  /** Cluster: shared groups the route table picked this node for (a local member is picked at delivery). */
  readonly localShared: readonly SharedPick[];
  /** Cluster: other nodes to forward to, and the shared picks each of them delivers. */
  readonly remote?: RemoteMatch;
  /** Cluster: remote shared picks only (localShared taken out). */
  readonly remoteShared: readonly SharedPick[];
}

/**
 * Empties a reused scratch array. `length = 0` is a call into the V8 runtime, ~100 ns even on
 * an empty array, and routing empties four per publish: ~5 % of a cross-node receiver's CPU
 * in a profile. A few pops are a few ns each.
 */
export function emptyScratch(list: unknown[]): void {
  if (list.length > 16) list.length = 0;
  else while (list.length !== 0) list.pop();
}

export class Router {
  private readonly trie = new TopicTrie<Session>();
  /** Set when the node is part of a cluster. */
  remote?: RemoteRoutes;

  // routing scratch, reused by every route() call: one publish is routed at a time, on the
  // main thread, and the result is valid until the next call (the hot path allocates nothing)
  private gen = 0;
  private message?: StoredMessage;
  private onlyClients?: ReadonlySet<string>;
  private readonly sessions: Session[] = [];
  private readonly shared: SubEntry<Session>[] = [];
  private readonly localShared: SharedPick[] = [];
  private readonly remoteShared: SharedPick[] = [];
  private readonly result: { sessions: Session[]; shared: SubEntry<Session>[]; localShared: SharedPick[]; remoteShared: SharedPick[]; remote?: RemoteMatch } = {
    sessions: this.sessions,
    shared: this.shared,
    localShared: this.localShared,
    remoteShared: this.remoteShared,
  };
  private readonly visit = (entry: SubEntry<Session>): void => this.collect(entry);

  get size(): number {
    return this.trie.size;
  }

  add(session: Session, sub: Subscription): void {
    this.trie.add(session, sub);
  }

  remove(session: Session, sub: Pick<Subscription, 'filter' | 'group'>): void {
    this.trie.remove(session.clientId, sub.filter, sub.group);
  }

  /** Cluster: the route table picked this node for a shared group; one local member gets it. */
  pickShared(filter: string, group: string): SubEntry<Session> | undefined {
    return this.trie.pickShared(filter, group);
  }

  /**
   * Local sessions and remote members for a message. `onlyClients` limits the local part to
   * some sessions; `remote: false` leaves the other nodes out (a message forwarded here);
   * `once` for a topic published once (a will): neither trie remembers its match.
   */
  route(message: StoredMessage, opts: { onlyClients?: ReadonlySet<string>; remote?: boolean; once?: boolean } = {}): Routes {
    const r = this.result;
    this.clear();
    this.gen++;
    this.message = message;
    this.onlyClients = opts.onlyClients;
    try {
      this.trie.match(message.topic, this.visit, opts.once !== true);
    } finally {
      this.message = undefined;
      this.onlyClients = undefined;
    }
    const remote = opts.remote === false ? undefined : this.remote;
    if (remote) {
      const match = remote.route(message.topic, opts.once);
      r.remote = match;
      for (const pick of match.shared) (pick.member === remote.member ? this.localShared : this.remoteShared).push(pick);
    }
    return r;
  }

  private clear(): void {
    emptyScratch(this.sessions);
    emptyScratch(this.shared);
    emptyScratch(this.localShared);
    emptyScratch(this.remoteShared);
    this.result.remote = undefined;
  }

  private collect(entry: SubEntry<Session>): void {
    const { subscriber: s, sub } = entry;
    const message = this.message!;
    if (sub.group !== undefined) {
      // in a cluster the route table picks the member of a shared group across all nodes
      if (!this.remote) this.shared.push(entry);
      return;
    }
    if (sub.noLocal && message.origin === s.clientId) return; // [MQTT-3.8.3-3]
    if (this.onlyClients !== undefined && !this.onlyClients.has(s.clientId)) return;
    if (s.matchGen !== this.gen) {
      s.matchGen = this.gen;
      s.matchQos = sub.qos;
      s.matchRetainAsPublished = sub.retainAsPublished;
      s.matchIds = sub.subscriptionId === undefined ? undefined : [sub.subscriptionId];
      this.sessions.push(s);
      return;
    }
    // overlapping subscriptions of one client: one copy, highest QoS, every identifier [MQTT-3.3.4-2, MQTT-3.3.4-3]
    if (sub.qos > s.matchQos) s.matchQos = sub.qos;
    if (sub.retainAsPublished) s.matchRetainAsPublished = true;
    if (sub.subscriptionId !== undefined) (s.matchIds ??= []).push(sub.subscriptionId);
  }
}

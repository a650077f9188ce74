// Subscription trie: one node per topic level, '+' and '#' as ordinary children. A publish
// walks only the branches its levels can match, so routing cost follows the topic depth and
// the number of matches, not the number of subscriptions. What a topic matched is kept
// until the next subscribe or unsubscribe anywhere in the trie (bounded: see MatchCacheLimits),
// so steady traffic on a fixed set of topics does not split and walk each topic again.
import type { Subscription } from '../store/types.js';

/** Whoever holds subscriptions: a local session (or, in the cluster, a remote node). */
export interface Subscriber {
  readonly clientId: string;
  /** True while a connection is attached (shared groups prefer connected members). */
  readonly online: boolean;
}

export interface SubEntry<S extends Subscriber> {
  readonly subscriber: S;
  readonly sub: Subscription;
}

interface SharedGroup<S extends Subscriber> {
  members: SubEntry<S>[];
  next: number;
}

class TrieNode<S extends Subscriber> {
  readonly children = new Map<string, TrieNode<S>>();
  readonly subs = new Map<string, SubEntry<S>>();
  shared?: Map<string, SharedGroup<S>>;

  get empty(): boolean {
    return this.children.size === 0 && this.subs.size === 0 && (!this.shared || this.shared.size === 0);
  }
}

/** What one topic matched while the trie was at `version`: plain entries, then the shared groups to pick from. */
interface Matched<S extends Subscriber> {
  readonly version: number;
  readonly entries: SubEntry<S>[];
  readonly groups: SharedGroup<S>[];
}

export interface MatchCacheLimits {
  /** Topics remembered; past it the cache starts over. */
  readonly topics: number;
  /** Entries (plain and shared groups) held by all remembered topics together. */
  readonly entries: number;
  /** UTF-16 code units of all remembered topic strings together. */
  readonly topicChars: number;
}

const DEFAULT_MATCH_CACHE: MatchCacheLimits = { topics: 10_000, entries: 200_000, topicChars: 2_000_000 };

export class TopicTrie<S extends Subscriber> {
  private readonly root = new TrieNode<S>();
  private count = 0;
  /** Bumped by every add and remove: every remembered match of an older version is stale. */
  private version = 0;
  private readonly matched = new Map<string, Matched<S>>();
  private matchedEntries = 0;
  private matchedChars = 0;
  private collecting?: Matched<S>;

  constructor(private readonly cacheLimits: MatchCacheLimits = DEFAULT_MATCH_CACHE) {}

  get size(): number {
    return this.count;
  }

  /** Topics whose match is remembered now. */
  get rememberedTopics(): number {
    return this.matched.size;
  }

  /** Adds or replaces; returns true when the subscription already existed. */
  add(subscriber: S, sub: Subscription): boolean {
    this.version++;
    let node = this.root;
    for (const level of sub.filter.split('/')) {
      let child = node.children.get(level);
      if (!child) {
        child = new TrieNode<S>();
        node.children.set(level, child);
      }
      node = child;
    }
    const entry: SubEntry<S> = { subscriber, sub };
    if (sub.group === undefined) {
      const existed = node.subs.has(subscriber.clientId);
      node.subs.set(subscriber.clientId, entry);
      if (!existed) this.count++;
      return existed;
    }
    node.shared ??= new Map();
    let group = node.shared.get(sub.group);
    if (!group) {
      group = { members: [], next: 0 };
      node.shared.set(sub.group, group);
    }
    const i = group.members.findIndex((m) => m.subscriber.clientId === subscriber.clientId);
    if (i >= 0) {
      group.members[i] = entry;
      return true;
    }
    group.members.push(entry);
    this.count++;
    return false;
  }

  /** Removes; returns true when it existed. */
  remove(clientId: string, filter: string, group?: string): boolean {
    this.version++;
    const path: TrieNode<S>[] = [this.root];
    const levels = filter.split('/');
    let node = this.root;
    for (const level of levels) {
      const child = node.children.get(level);
      if (!child) return false;
      node = child;
      path.push(node);
    }
    let removed = false;
    if (group === undefined) {
      removed = node.subs.delete(clientId);
    } else {
      const g = node.shared?.get(group);
      if (g) {
        const i = g.members.findIndex((m) => m.subscriber.clientId === clientId);
        if (i >= 0) {
          g.members.splice(i, 1);
          removed = true;
          if (g.members.length === 0) node.shared!.delete(group);
        }
      }
    }
    if (removed) this.count--;
    // prune empty branches
    for (let i = path.length - 1; i > 0 && path[i].empty; i--) path[i - 1].children.delete(levels[i - 1]);
    return removed;
  }

  /** One member of a shared group on an exact filter (round robin, connected first), if any. */
  pickShared(filter: string, group: string): SubEntry<S> | undefined {
    let node: TrieNode<S> | undefined = this.root;
    for (const level of filter.split('/')) {
      node = node.children.get(level);
      if (!node) return undefined;
    }
    const g = node.shared?.get(group);
    return g && g.members.length > 0 ? pickMember(g) : undefined;
  }

  /**
   * Calls `visit` for every matching subscription. Non-shared entries are visited as they
   * are; each matching shared group yields one member, round robin, connected ones first.
   * `remember: false` for a topic published once (a will): its match is not kept, so a burst
   * of 10,000 wills neither pays for remembering 10,000 topics nor, past the limit, empties
   * the cache of the topics that steady traffic uses.
   */
  match(topic: string, visit: (entry: SubEntry<S>) => void, remember = true): void {
    let m = this.matched.get(topic);
    if (m === undefined || m.version !== this.version) m = this.lookup(topic, remember);
    const { entries, groups } = m;
    for (let i = 0; i < entries.length; i++) visit(entries[i]);
    for (let i = 0; i < groups.length; i++) {
      if (groups[i].members.length > 0) visit(pickMember(groups[i])); // a visit may have emptied it
    }
  }

  private lookup(topic: string, remember: boolean): Matched<S> {
    const m: Matched<S> = { version: this.version, entries: [], groups: [] };
    this.collecting = m;
    // [MQTT-4.7.2-1] a leading wildcard does not match a topic starting with '$'
    this.walk(this.root, topic.split('/'), 0, topic.charCodeAt(0) === 36);
    this.collecting = undefined;
    if (remember) this.remember(topic, m);
    return m;
  }

  private remember(topic: string, m: Matched<S>): void {
    const limits = this.cacheLimits;
    const held = m.entries.length + m.groups.length;
    const old = this.matched.get(topic);
    if (old) {
      this.matchedEntries -= old.entries.length + old.groups.length;
      this.matchedChars -= topic.length;
      this.matched.delete(topic);
    }
    if (this.matched.size >= limits.topics || this.matchedEntries + held > limits.entries || this.matchedChars + topic.length > limits.topicChars) {
      this.matched.clear();
      this.matchedEntries = 0;
      this.matchedChars = 0;
      if (held > limits.entries || topic.length > limits.topicChars) return;
    }
    this.matched.set(topic, m);
    this.matchedEntries += held;
    this.matchedChars += topic.length;
  }

  private walk(node: TrieNode<S>, levels: string[], depth: number, dollar: boolean): void {
    const wildOk = !(dollar && depth === 0);
    if (wildOk) {
      const hash = node.children.get('#');
      if (hash) this.emit(hash); // '#' also matches the parent level [MQTT-4.7.1-2]
    }
    if (depth === levels.length) {
      this.emit(node);
      return;
    }
    const exact = node.children.get(levels[depth]);
    if (exact) this.walk(exact, levels, depth + 1, dollar);
    if (wildOk) {
      const plus = node.children.get('+');
      if (plus) this.walk(plus, levels, depth + 1, dollar);
    }
  }

  private emit(node: TrieNode<S>): void {
    const m = this.collecting!;
    for (const entry of node.subs.values()) m.entries.push(entry);
    if (node.shared) for (const group of node.shared.values()) m.groups.push(group);
  }
}

function pickMember<S extends Subscriber>(group: SharedGroup<S>): SubEntry<S> {
  const n = group.members.length;
  for (let k = 0; k < n; k++) {
    const i = (group.next + k) % n;
    if (group.members[i].subscriber.online) {
      group.next = (i + 1) % n;
      return group.members[i];
    }
  }
  const i = group.next % n;
  group.next = (i + 1) % n;
  return group.members[i];
}

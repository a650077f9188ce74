// Subscription trie: one node per topic level, '+' and '#' as ordinary children. A publish
// walks only the branches its levels can match, so routing cost follows the topic depth and
// the number of matches, not the number of subscriptions.
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

export class TopicTrie<S extends Subscriber> {
  private readonly root = new TrieNode<S>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Adds or replaces; returns true when the subscription already existed. */
  add(subscriber: S, sub: Subscription): boolean {
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
   */
  match(topic: string, visit: (entry: SubEntry<S>) => void): void {
    const levels = topic.split('/');
    // [MQTT-4.7.2-1] a leading wildcard does not match a topic starting with '$'
    const dollar = topic.charCodeAt(0) === 36;
    this.walk(this.root, levels, 0, dollar, visit);
  }

  private walk(node: TrieNode<S>, levels: string[], depth: number, dollar: boolean, visit: (e: SubEntry<S>) => void): void {
    const wildOk = !(dollar && depth === 0);
    if (wildOk) {
      const hash = node.children.get('#');
      if (hash) this.emit(hash, visit); // '#' also matches the parent level [MQTT-4.7.1-2]
    }
    if (depth === levels.length) {
      this.emit(node, visit);
      return;
    }
    const exact = node.children.get(levels[depth]);
    if (exact) this.walk(exact, levels, depth + 1, dollar, visit);
    if (wildOk) {
      const plus = node.children.get('+');
      if (plus) this.walk(plus, levels, depth + 1, dollar, visit);
    }
  }

  private emit(node: TrieNode<S>, visit: (e: SubEntry<S>) => void): void {
    for (const entry of node.subs.values()) visit(entry);
    if (node.shared) for (const group of node.shared.values()) visit(pickMember(group));
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

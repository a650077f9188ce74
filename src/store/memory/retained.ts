// Retained messages in memory, in a tree by topic level so a subscribe walks only the
// branches its filter can match (a `#` subscribe over 10,000 retained topics visits each once).
import type { RetainedCursor, RetainedStore, StoredMessage } from '../types.js';
import { ownPayload } from '../own-payload.js';

class Node {
  readonly children = new Map<string, Node>();
  message?: StoredMessage;
}

export class MemoryRetainedStore implements RetainedStore {
  private readonly root = new Node();
  private size = 0;

  /** Last fenced writer per topic (kept after a delete, so it keeps fencing). */
  private readonly writers = new Map<string, { clientId: string; epoch: number }>();

  set(message: StoredMessage, writerEpoch?: number): void {
    if (!this.admit(message, writerEpoch)) return;
    const levels = message.topic.split('/');
    if (message.payload.length === 0) {
      this.delete(levels);
      return;
    }
    ownPayload(message);
    let node = this.root;
    for (const level of levels) {
      let child = node.children.get(level);
      if (!child) {
        child = new Node();
        node.children.set(level, child);
      }
      node = child;
    }
    if (!node.message) this.size++;
    node.message = message;
  }

  /** Epoch of the fenced writer of a topic's retained message (the console shows it). */
  writerEpoch(topic: string): number | null {
    return this.writers.get(topic)?.epoch ?? null;
  }

  /** The retained fencing rule (same as retain-set.lua): false = ignore this write. */
  private admit(message: StoredMessage, writerEpoch: number | undefined): boolean {
    const clientId = message.origin;
    const last = this.writers.get(message.topic);
    if (writerEpoch === undefined || clientId === '') {
      if (last && last.clientId !== clientId) this.writers.delete(message.topic);
      return true;
    }
    if (last && last.clientId === clientId && last.epoch > writerEpoch) return false;
    this.writers.set(message.topic, { clientId, epoch: writerEpoch });
    return true;
  }

  match(filter: string, nowMs: number): StoredMessage[] {
    const out: StoredMessage[] = [];
    const cursor = this.cursor(filter);
    for (let m = cursor.next(nowMs); m !== undefined; m = cursor.next(nowMs)) out.push(m);
    return out;
  }

  /**
   * A lazy walk over the matching messages: it holds one Map iterator per topic level, never
   * a copy, so a snapshot of N retained messages costs O(depth) however slowly it is read.
   * It sees the tree as it is when each step is taken: a topic set after the cursor passed
   * its place is not returned, one replaced before is returned with its newest message, a
   * deleted one not at all (Map iteration visits entries added later and skips deleted ones).
   */
  cursor(filter: string): RetainedCursor {
    const walk = this.walk(this.root, filter.split('/'), 0);
    return {
      next: (nowMs: number): StoredMessage | undefined => {
        for (;;) {
          const step = walk.next();
          if (step.done) return undefined;
          const m = step.value;
          if (m.expiresAtMs === undefined || m.expiresAtMs > nowMs) return m;
          // expired: removed now (the generator's Map iterators stay valid when their entry goes)
          this.delete(m.topic.split('/'));
        }
      },
    };
  }

  count(): number {
    return this.size;
  }

  private *walk(node: Node, levels: string[], depth: number): Generator<StoredMessage, void, undefined> {
    if (depth === levels.length) {
      if (node.message) yield node.message;
      return;
    }
    const level = levels[depth];
    if (level === '#') {
      yield* this.walkAll(node, depth === 0);
      return;
    }
    if (level === '+') {
      for (const [name, child] of node.children) {
        if (depth === 0 && name.startsWith('$')) continue; // [MQTT-4.7.2-1]
        yield* this.walk(child, levels, depth + 1);
      }
      return;
    }
    const child = node.children.get(level);
    if (child) yield* this.walk(child, levels, depth + 1);
  }

  /** Node itself ('#' matches the parent level) and everything below it. */
  private *walkAll(node: Node, atRoot: boolean): Generator<StoredMessage, void, undefined> {
    if (!atRoot && node.message) yield node.message;
    for (const [name, child] of node.children) {
      if (atRoot && name.startsWith('$')) continue;
      yield* this.walkAll(child, false);
    }
  }

  private delete(levels: string[]): void {
    const path: Node[] = [this.root];
    let node = this.root;
    for (const level of levels) {
      const child = node.children.get(level);
      if (!child) return;
      node = child;
      path.push(node);
    }
    if (!node.message) return;
    node.message = undefined;
    this.size--;
    for (let i = path.length - 1; i > 0 && !path[i].message && path[i].children.size === 0; i--) {
      path[i - 1].children.delete(levels[i - 1]);
    }
  }
}

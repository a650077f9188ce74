// Retained messages in memory, in a tree by topic level so a subscribe walks only the
// branches its filter can match (a `#` subscribe over 10,000 retained topics visits each once).
import type { RetainedStore, StoredMessage } from '../types.js';

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
    const expired: string[] = [];
    this.walk(this.root, filter.split('/'), 0, out, expired, nowMs);
    for (const topic of expired) this.delete(topic.split('/'));
    return out;
  }

  count(): number {
    return this.size;
  }

  private walk(node: Node, levels: string[], depth: number, out: StoredMessage[], expired: string[], now: number): void {
    if (depth === levels.length) {
      this.take(node, out, expired, now);
      return;
    }
    const level = levels[depth];
    if (level === '#') {
      this.takeAll(node, depth === 0, out, expired, now);
      return;
    }
    if (level === '+') {
      for (const [name, child] of node.children) {
        if (depth === 0 && name.startsWith('$')) continue; // [MQTT-4.7.2-1]
        this.walk(child, levels, depth + 1, out, expired, now);
      }
      return;
    }
    const child = node.children.get(level);
    if (child) this.walk(child, levels, depth + 1, out, expired, now);
  }

  /** Node itself ('#' matches the parent level) and everything below it. */
  private takeAll(node: Node, atRoot: boolean, out: StoredMessage[], expired: string[], now: number): void {
    if (!atRoot) this.take(node, out, expired, now);
    for (const [name, child] of node.children) {
      if (atRoot && name.startsWith('$')) continue;
      this.takeAll(child, false, out, expired, now);
    }
  }

  private take(node: Node, out: StoredMessage[], expired: string[], now: number): void {
    const m = node.message;
    if (!m) return;
    if (m.expiresAtMs !== undefined && m.expiresAtMs <= now) expired.push(m.topic);
    else out.push(m);
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

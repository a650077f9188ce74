// The ids of the QoS 1/2 messages that reached a session lately, so a second copy of one is
// dropped. Copies arise in a cluster only: a dead node's unhandled bus entries are handed on
// to sessions that may already have got them, and a message for a session that moved is
// forwarded after it to its new node. Bounded in time and in count: a copy can only arrive
// within a few node timeouts of the first.
export const SEEN_WINDOW_MS = 60_000;
export const SEEN_MAX = 20_000;

export class RecentIds {
  /** id → time first seen (ms); insertion order is time order. */
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly windowMs = SEEN_WINDOW_MS,
    private readonly max = SEEN_MAX,
  ) {}

  get size(): number {
    return this.seen.size;
  }

  has(id: string): boolean {
    return this.seen.has(id);
  }

  /** Oldest first. */
  ids(): string[] {
    return [...this.seen.keys()];
  }

  /** Records an id; false when it was already there (a copy). */
  first(id: string, nowMs: number): boolean {
    if (this.seen.has(id)) return false;
    this.seen.set(id, nowMs);
    this.trim(nowMs);
    return true;
  }

  private trim(nowMs: number): void {
    const oldest = nowMs - this.windowMs;
    for (const [id, at] of this.seen) {
      if (at >= oldest && this.seen.size <= this.max) return;
      this.seen.delete(id);
    }
  }
}

// Many callers, few Redis calls: what callers ask while a batch is in Redis waits for its reply
// and then goes as the next batch (group commit). In a connect storm the CONNECTs of one round
// trip share one script call instead of one call each — fewer commands for Redis to parse, fewer
// ioredis Command objects and promises, one metric observation per batch.

/** Sends one batch; resolves with one result per item, in order (an Error in an item's place rejects that item). */
export type SendBatch<T, R> = (items: readonly T[]) => Promise<readonly (R | BatchItemError)[]>;

/** An item's own failure inside a batch that otherwise succeeded. */
export class BatchItemError {
  constructor(readonly cause: unknown) {}
}

interface Queued<T, R> {
  readonly item: T;
  resolve(result: R): void;
  reject(err: unknown): void;
}

export class Batcher<T, R> {
  private queue: Queued<T, R>[] = [];
  private inFlight = false;
  private scheduled = false;

  /**
   * @param send sends one batch
   * @param maxBatch most items per send (when more wait, the next send follows the reply)
   * @param together whether two items may share a send (e.g. the same member)
   */
  constructor(
    private readonly send: SendBatch<T, R>,
    private readonly maxBatch: number,
    private readonly together: (a: T, b: T) => boolean = () => true,
  ) {}

  /** Items waiting for the next batch. */
  get waiting(): number {
    return this.queue.length;
  }

  add(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      // first of the turn: the CONNECTs read from the other sockets in this turn join it
      if (!this.inFlight && !this.scheduled) {
        this.scheduled = true;
        setImmediate(this.flush);
      }
    });
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    const queue = this.queue;
    if (queue.length === 0) return;
    this.queue = [];
    this.inFlight = true;
    const groups: Queued<T, R>[][] = [];
    let start = 0;
    for (let i = 1; i <= queue.length; i++) {
      if (i < queue.length && i - start < this.maxBatch && this.together(queue[start].item, queue[i].item)) continue;
      groups.push(queue.slice(start, i));
      start = i;
    }
    // one batch after the other: the same client twice is handled in the order it was asked,
    // even when its two requests fell into different batches (a Redis Cluster routes each
    // batch's commands to other nodes, which would not keep their order)
    void groups.reduce((prev, group) => prev.then(() => this.sendOne(group)), Promise.resolve()).then(() => {
      this.inFlight = false;
      // what came in meanwhile goes at once: it has waited a round trip already
      if (this.queue.length > 0) this.flush();
    });
  };

  private async sendOne(group: Queued<T, R>[]): Promise<void> {
    let results: readonly (R | BatchItemError)[];
    try {
      results = await this.send(group.map((q) => q.item));
    } catch (err) {
      for (const q of group) q.reject(err);
      return;
    }
    group.forEach((q, i) => {
      const r = results[i];
      if (r instanceof BatchItemError) q.reject(r.cause);
      else if (r === undefined) q.reject(new Error(`batch reply has ${results.length} results for ${group.length} items`));
      else q.resolve(r);
    });
  }
}

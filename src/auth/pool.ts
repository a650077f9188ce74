// The piscina pool that verifies tokens and evaluates ACL misses, shared by the
// authenticator and the authorizer. Bounded: callers check `saturated` before submitting and
// answer Server Busy (or evaluate inline, for ACLs) instead of growing the queue.
import { Piscina } from 'piscina';
import type { Metrics } from '../metrics.js';
import type { EvaluateAclInput, EvaluateAclOutput, VerifyTokenInput, VerifyTokenOutput, VerifyTokensInput } from './worker.js';

export interface AuthTasks {
  verifyTokens: { input: VerifyTokensInput; output: VerifyTokenOutput[] };
  evaluateAcl: { input: EvaluateAclInput; output: EvaluateAclOutput };
}

export type AuthTaskName = keyof AuthTasks;
/** What tasksSubmitted counts: tokens sent to verification, ACL questions. */
export type AuthWork = 'verifyToken' | 'evaluateAcl';

/**
 * Tokens per verifyTokens task at most. The tokens of one event-loop turn are spread over the
 * threads, so a storm keeps every thread busy while one CONNECT still goes alone.
 */
const MAX_BATCH = 32;

interface PendingVerify {
  readonly input: VerifyTokenInput;
  resolve(output: VerifyTokenOutput): void;
  reject(err: unknown): void;
}

export interface AuthPoolOptions {
  readonly threads: number;
  /** Tasks waiting for a worker at which `saturated` turns true. */
  readonly queueMax: number;
  readonly metrics: Metrics;
}

export class AuthPool {
  private readonly pool: Piscina;
  private readonly submitted: Record<AuthWork, number> = { verifyToken: 0, evaluateAcl: 0 };
  private closed = false;
  /** Submitted and not yet settled (tokens count one each): running in a worker, waiting for one, or for the turn to end. */
  private pending = 0;
  /** Tokens submitted during this event-loop turn. */
  private batch: PendingVerify[] = [];

  constructor(private readonly options: AuthPoolOptions) {
    this.pool = new Piscina({
      // a CommonJS entry (worker-entry.cts says why)
      filename: new URL('./worker-entry.cjs', import.meta.url).href,
      minThreads: options.threads,
      maxThreads: options.threads,
      // Keep the threads: they hold imported keys and the compiled policy.
      idleTimeout: Number.POSITIVE_INFINITY,
      // close() lets running tasks finish (a reply arriving after destroy() is an uncaught error).
      closeTimeout: 2000,
      // Verification is synchronous node:crypto once a key is imported (an import awaits
      // WebCrypto): a few tasks in flight per worker keep it busy across an import without
      // letting one worker hoard the batches of a storm.
      concurrentTasksPerWorker: 4,
      atomics: 'async',
    });
  }

  /** Tasks waiting for a worker (not counting running ones). */
  get queued(): number {
    return this.pool.queueSize;
  }

  /** Pending tasks (running or queued) have reached authQueueMax. */
  get saturated(): boolean {
    return this.closed || this.pending >= this.options.queueMax;
  }

  /** Tokens and ACL questions submitted since start: tests use it to prove that caches keep work off the pool. */
  tasksSubmitted(work: AuthWork): number {
    return this.submitted[work];
  }

  /**
   * Verifies one token. The tokens submitted during one event-loop turn go to the workers
   * together, in verifyTokens tasks of up to MAX_BATCH: one message round trip per batch
   * instead of per token. Rejects only when a worker dies or the pool is closed.
   */
  verifyToken(input: VerifyTokenInput): Promise<VerifyTokenOutput> {
    if (this.closed) return Promise.reject(new Error('auth pool closed'));
    this.submitted.verifyToken++;
    this.pending++;
    return new Promise((resolve, reject) => {
      this.batch.push({ input, resolve, reject });
      if (this.batch.length === 1) setImmediate(() => this.flushBatch());
    });
  }

  private flushBatch(): void {
    const all = this.batch;
    this.batch = [];
    const per = Math.min(MAX_BATCH, Math.ceil(all.length / this.options.threads));
    for (let i = 0; i < all.length; i += per) void this.runBatch(all.slice(i, i + per));
  }

  private async runBatch(items: PendingVerify[]): Promise<void> {
    const m = this.options.metrics;
    try {
      const outputs = await this.runTask('verifyTokens', { items: items.map((it) => it.input) });
      for (let k = 0; k < items.length; k++) {
        m.authPoolWaitSeconds.observe(outputs[k]!.waitMs / 1000);
        items[k]!.resolve(outputs[k]!);
      }
    } catch (err) {
      for (const it of items) it.reject(err);
    } finally {
      this.pending -= items.length;
    }
  }

  /** Rejects only when a worker dies or the pool is closed; task failures are typed results. */
  async run(task: 'evaluateAcl', input: EvaluateAclInput): Promise<EvaluateAclOutput> {
    this.submitted.evaluateAcl++;
    this.pending++;
    try {
      const output = await this.runTask(task, input);
      this.options.metrics.authPoolWaitSeconds.observe(output.waitMs / 1000);
      return output;
    } finally {
      this.pending--;
    }
  }

  private async runTask<K extends AuthTaskName>(task: K, input: AuthTasks[K]['input']): Promise<AuthTasks[K]['output']> {
    const m = this.options.metrics;
    m.authPoolTasksTotal.inc({ task });
    const promise = this.pool.run(input, { name: task }) as Promise<AuthTasks[K]['output']>;
    m.authPoolQueueDepth.set(this.pool.queueSize);
    try {
      return await promise;
    } finally {
      m.authPoolQueueDepth.set(this.pool.queueSize);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.close();
  }
}

// The piscina pool that verifies tokens and evaluates ACL misses, shared by the
// authenticator and the authorizer. Bounded: callers check `saturated` before submitting and
// answer Server Busy (or evaluate inline, for ACLs) instead of growing the queue.
import { Piscina } from 'piscina';
import type { Metrics } from '../metrics.js';
import type { EvaluateAclInput, EvaluateAclOutput, VerifyTokenInput, VerifyTokenOutput } from './worker.js';

export interface AuthTasks {
  verifyToken: { input: VerifyTokenInput; output: VerifyTokenOutput };
  evaluateAcl: { input: EvaluateAclInput; output: EvaluateAclOutput };
}

export type AuthTaskName = keyof AuthTasks;

export interface AuthPoolOptions {
  readonly threads: number;
  /** Tasks waiting for a worker at which `saturated` turns true. */
  readonly queueMax: number;
  readonly metrics: Metrics;
}

export class AuthPool {
  private readonly pool: Piscina;
  private readonly submitted: Record<AuthTaskName, number> = { verifyToken: 0, evaluateAcl: 0 };
  private closed = false;
  /** Submitted and not yet settled: running in a worker or waiting for one. */
  private pending = 0;

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
      // Token verification awaits WebCrypto, which runs on libuv's thread pool: a worker that
      // took one task at a time would leave it idle between round trips, so each worker keeps
      // several verifications in flight, and waits for messages without blocking its event loop.
      concurrentTasksPerWorker: 16,
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

  /** Tasks submitted since start, by task: tests use it to prove that caches keep work off the pool. */
  tasksSubmitted(task: AuthTaskName): number {
    return this.submitted[task];
  }

  /** Rejects only when a worker dies or the pool is closed; task failures are typed results. */
  async run<K extends AuthTaskName>(task: K, input: AuthTasks[K]['input']): Promise<AuthTasks[K]['output']> {
    const m = this.options.metrics;
    this.submitted[task]++;
    this.pending++;
    m.authPoolTasksTotal.inc({ task });
    const promise = this.pool.run(input, { name: task }) as Promise<AuthTasks[K]['output']>;
    m.authPoolQueueDepth.set(this.pool.queueSize);
    try {
      const output = await promise;
      m.authPoolWaitSeconds.observe(output.waitMs / 1000);
      return output;
    } finally {
      this.pending--;
      m.authPoolQueueDepth.set(this.pool.queueSize);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.close();
  }
}

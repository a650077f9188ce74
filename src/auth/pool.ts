// The piscina pool that verifies tokens and evaluates ACL misses, shared by the
// authenticator and the authorizer. Bounded: at most queueMax tokens and ACL questions are in
// the pool; more tokens wait in a bounded FIFO (the admission queue, Server Busy past it),
// more ACL questions are evaluated inline (callers check `saturated`).
import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import type { Metrics } from '../metrics.js';
import type { VerificationKey } from './jwt.js';
import type { EvaluateAclInput, EvaluateAclOutput, EvaluateAclsInput, PolicySnapshot, TokenPolicy, VerifyTokenInput, VerifyTokenOutput, VerifyTokensInput } from './worker.js';

export interface AuthTasks {
  verifyTokens: { input: VerifyTokensInput; output: VerifyTokenOutput[] };
  evaluateAcls: { input: EvaluateAclsInput; output: EvaluateAclOutput[] };
}

export type AuthTaskName = keyof AuthTasks;
/** What tasksSubmitted counts: tokens sent to verification, ACL questions. */
export type AuthWork = 'verifyToken' | 'evaluateAcl';

/**
 * Tokens per verifyTokens task at most. The tokens waiting are spread over the threads that
 * have no batch, so a storm keeps every thread busy while one CONNECT still goes alone. 64, not
 * 32: a task costs both threads a message, a wake-up and a switch of the shared core's caches;
 * in a pinned storm (100 outstanding, 1 thread) batches then average ~40 instead of ~30, for
 * ~3 µs less main-thread CPU per token, and a full batch is still only ~3-4 ms of RS256.
 */
const MAX_BATCH = 64;

interface PendingVerify {
  readonly input: VerifyTokenInput;
  resolve(output: VerifyTokenOutput): void;
  reject(err: unknown): void;
}

interface PendingAcl {
  readonly input: EvaluateAclInput;
  resolve(output: EvaluateAclOutput): void;
  reject(err: unknown): void;
}

/**
 * VIGIL_AUTH_WORKERS=0: one thread per CPU the process may run on (availableParallelism
 * follows the affinity mask, e.g. taskset), at most 2. A second thread on a single CPU verifies
 * nothing sooner: it only adds a second isolate to warm up and smaller batches (a by-hand storm
 * pinned to one CPU cost less per connection with 1 thread than with 2 in three A/B pairs).
 */
export function authThreads(configured: number, cpus: number = availableParallelism()): number {
  return configured > 0 ? configured : Math.max(1, Math.min(2, cpus));
}

export interface AuthPoolOptions {
  readonly threads: number;
  /** Tokens and ACL questions in the pool (running or queued for a thread) at which `saturated` turns true. */
  readonly queueMax: number;
  /** Tokens waiting for a place in the pool at most (the admission queue), and their bytes. */
  readonly admissionMax?: number;
  readonly admissionBytes?: number;
  readonly metrics: Metrics;
}

/**
 * The wire form of a batch: every distinct key once (the same JWK object under the same
 * thumbprint, or the same secret), every distinct policy object once.
 */
function batchInput(items: readonly PendingVerify[]): VerifyTokensInput {
  const keys: VerificationKey[] = [];
  const keyIndexOf = new Map<unknown, number>();
  const policies: TokenPolicy[] = [];
  const policyIndexOf = new Map<TokenPolicy, number>();
  const batched = items.map(({ input: { key, policy, token, alg, nowMs, submittedAtMs } }) => {
    const id = key.kind === 'jwk' ? key.jwk : key.secret;
    const seen = keyIndexOf.get(id);
    const known = seen === undefined ? undefined : keys[seen];
    const same = known !== undefined && known.kind === key.kind && (known.kind !== 'jwk' || key.kind !== 'jwk' || known.cacheKey === key.cacheKey);
    const keyIndex = same ? seen! : keys.push(key) - 1;
    if (!same) keyIndexOf.set(id, keyIndex);
    let policyIndex = policyIndexOf.get(policy);
    if (policyIndex === undefined) {
      policyIndex = policies.push(policy) - 1;
      policyIndexOf.set(policy, policyIndex);
    }
    return { token, alg, nowMs, submittedAtMs, keyIndex, policyIndex };
  });
  return { keys, policies, items: batched };
}

/** The wire form of a batch of ACL questions: every distinct policy document once (the authorizer sends the same text per generation). */
function aclBatchInput(items: readonly PendingAcl[]): EvaluateAclsInput {
  const policies: PolicySnapshot[] = [];
  const indexOf = new Map<string, number>();
  const batched = items.map(({ input: { policy, subject, action, topic, submittedAtMs } }) => {
    let policyIndex = -1;
    if (policy) {
      const id = `${policy.generation}:${policy.json}`;
      policyIndex = indexOf.get(id) ?? -1;
      if (policyIndex < 0) {
        policyIndex = policies.push(policy) - 1;
        indexOf.set(id, policyIndex);
      }
    }
    return { policyIndex, subject, action, topic, submittedAtMs };
  });
  return { policies, items: batched };
}

export class AuthPool {
  private readonly pool: Piscina;
  private readonly submitted: Record<AuthWork, number> = { verifyToken: 0, evaluateAcl: 0 };
  private closed = false;
  /** In the pool and not yet settled (tokens count one each): running in a worker or waiting for one. */
  private pending = 0;
  /**
   * The admission queue: tokens waiting, first in first out, for the pool to have room. A
   * fleet reconnecting at once submits far more tokens in one turn than the pool should hold;
   * they wait here (a few hundred bytes each besides the token) instead of being refused.
   */
  private waiting: PendingVerify[] = [];
  private waitingHead = 0;
  private waitingBytes = 0;
  private pumpScheduled = false;
  /** verifyTokens tasks sent and not settled: at most one per thread (pump says why). */
  private batchesInFlight = 0;
  private readonly admissionMax: number;
  private readonly admissionBytes: number;

  constructor(private readonly options: AuthPoolOptions) {
    this.admissionMax = options.admissionMax ?? 50_000;
    this.admissionBytes = options.admissionBytes ?? 64 * 1024 * 1024;
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

  /** Tokens in the admission queue. */
  get admissionWaiting(): number {
    return this.waiting.length - this.waitingHead;
  }

  /** The pool holds queueMax tokens and ACL questions: an ACL question is evaluated inline instead. */
  get saturated(): boolean {
    return this.closed || this.pending >= this.options.queueMax;
  }

  /**
   * The pool and the admission queue hold queueMax + admissionMax (or the queue admissionBytes
   * of tokens): a new token gets Server Busy. admissionMax 0 is the old rule: busy once the pool is full.
   */
  get admissionFull(): boolean {
    return this.closed || this.pending + this.admissionWaiting >= this.options.queueMax + this.admissionMax || this.waitingBytes >= this.admissionBytes;
  }

  /** Tokens and ACL questions submitted since start: tests use it to prove that caches keep work off the pool. */
  tasksSubmitted(work: AuthWork): number {
    return this.submitted[work];
  }

  /**
   * Verifies one token. Tokens join the admission queue; whenever the pool has room, the
   * queue's head goes to the workers in verifyTokens tasks of up to MAX_BATCH, spread over the
   * threads: one message round trip per batch instead of per token. Callers check
   * `admissionFull` first. Rejects only when a worker dies or the pool is closed.
   */
  verifyToken(input: VerifyTokenInput): Promise<VerifyTokenOutput> {
    if (this.closed) return Promise.reject(new Error('auth pool closed'));
    this.submitted.verifyToken++;
    return new Promise((resolve, reject) => {
      this.waiting.push({ input, resolve, reject });
      this.waitingBytes += input.token.length;
      this.schedulePump();
    });
  }

  /** Once per turn: the tokens of one turn leave together. */
  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    // One batch per thread at a time: tokens that arrive while every thread has one wait here
    // and leave together when a batch settles. A storm thus goes in batches that grow with the
    // load instead of one task (a message round trip, a thread wake-up) per turn's few tokens:
    // on one core a distinct-token storm sent ~4.6 tokens per task, each task costing more
    // than a signature check.
    const free = this.options.threads - this.batchesInFlight;
    const room = this.options.queueMax - this.pending;
    const take = Math.min(room, this.admissionWaiting, free * MAX_BATCH);
    if (take <= 0 || this.closed) return;
    // A backlog leaves in full batches: topping the pool up with the few tokens each finished
    // batch frees would turn a storm into thousands of one-token tasks (a message round trip
    // each). The pool still holds work meanwhile, and its next completion pumps again.
    const full = Math.min(MAX_BATCH, this.admissionWaiting);
    if (take < full && this.pending > 0) return;
    const items = this.waiting.slice(this.waitingHead, this.waitingHead + take);
    this.waitingHead += take;
    if (this.waitingHead === this.waiting.length) {
      this.waiting = [];
      this.waitingHead = 0;
    } else if (this.waitingHead > 4096 && this.waitingHead * 2 > this.waiting.length) {
      // drop the consumed head now and then, not on every take (shift() is O(n))
      this.waiting = this.waiting.slice(this.waitingHead);
      this.waitingHead = 0;
    }
    for (const it of items) this.waitingBytes -= it.input.token.length;
    this.options.metrics.authAdmissionWaiting.set(this.admissionWaiting);
    this.pending += take;
    // spread over the free threads (take ≤ free × MAX_BATCH, so no batch exceeds it)
    const per = Math.ceil(take / free);
    for (let i = 0; i < take; i += per) void this.runBatch(items.slice(i, i + per));
  }

  private async runBatch(items: PendingVerify[]): Promise<void> {
    const m = this.options.metrics;
    this.batchesInFlight++;
    try {
      const outputs = await this.runTask('verifyTokens', batchInput(items));
      // once per task, as for an ACL task: the first token's wait is the batch's (the others
      // waited for their predecessors in it, which is verification time, not pool wait)
      if (outputs.length > 0) m.authPoolWaitSeconds.observe(outputs[0]!.waitMs / 1000);
      for (let k = 0; k < items.length; k++) items[k]!.resolve(outputs[k]!);
    } catch (err) {
      for (const it of items) it.reject(err);
    } finally {
      this.pending -= items.length;
      this.batchesInFlight--;
      if (this.admissionWaiting > 0) this.schedulePump();
    }
  }

  /**
   * Evaluates one ACL question. The questions of one turn leave together, in evaluateAcls
   * tasks of up to MAX_BATCH spread over the threads: a fleet reconnecting with token ACLs asks
   * one will question per CONNECT, and one task each cost the main thread more than the
   * evaluation costs a worker (a message, a promise and three metric updates per question), and
   * answered the CONNECTs one by one, so their claims reached Redis one or two per call. Callers
   * check `saturated` first. Rejects only when a worker dies or the pool is closed; a question
   * that fails in the worker is a typed result.
   */
  evaluateAcl(input: EvaluateAclInput): Promise<EvaluateAclOutput> {
    if (this.closed) return Promise.reject(new Error('auth pool closed'));
    this.submitted.evaluateAcl++;
    this.pending++;
    return new Promise((resolve, reject) => {
      this.acls.push({ input, resolve, reject });
      if (this.aclsScheduled) return;
      this.aclsScheduled = true;
      setImmediate(this.sendAcls);
    });
  }

  /** ACL questions asked this turn, sent together at its end. */
  private acls: PendingAcl[] = [];
  private aclsScheduled = false;

  private readonly sendAcls = (): void => {
    this.aclsScheduled = false;
    const all = this.acls;
    this.acls = [];
    if (all.length === 0) return;
    const tasks = Math.max(Math.min(this.options.threads, all.length), Math.ceil(all.length / MAX_BATCH));
    const per = Math.ceil(all.length / tasks);
    for (let i = 0; i < all.length; i += per) void this.runAcls(all.slice(i, i + per));
  };

  private async runAcls(items: PendingAcl[]): Promise<void> {
    try {
      const outputs = await this.runTask('evaluateAcls', aclBatchInput(items));
      // once per task, as for a token batch: the first question's wait is the batch's
      if (outputs.length > 0) this.options.metrics.authPoolWaitSeconds.observe(outputs[0]!.waitMs / 1000);
      for (let k = 0; k < items.length; k++) {
        const output = outputs[k];
        if (output) items[k]!.resolve(output);
        else items[k]!.reject(new Error(`evaluateAcls answered ${outputs.length} of ${items.length} questions`));
      }
    } catch (err) {
      for (const it of items) it.reject(err);
    } finally {
      this.pending -= items.length;
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
    const waiting = this.waiting.slice(this.waitingHead);
    this.waiting = [];
    this.waitingHead = 0;
    this.waitingBytes = 0;
    for (const it of waiting) it.reject(new Error('auth pool closed'));
    const acls = this.acls;
    this.acls = [];
    for (const it of acls) it.reject(new Error('auth pool closed'));
    this.pending -= acls.length;
    await this.pool.close();
  }
}

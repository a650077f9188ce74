// The auth pool's tasks. Thin on purpose: plain cloneable data in, plain data out, one named
// export per task, each calling pure functions from jwt.ts / acl.ts. Nothing is thrown across
// the thread boundary: every failure comes back as a typed result.
import { compilePolicy, evaluate, type AclDecision, type AclSubject, type CompiledPolicy } from './acl.js';
import { verifyJws, type VerificationKey, type VerifyOptions, type VerifyResult } from './jwt.js';
import type { AuthAction } from './types.js';

/** Wall-clock ms with sub-ms precision, comparable across threads. */
export function preciseNowMs(): number {
  return performance.timeOrigin + performance.now();
}

export interface TaskTiming {
  /** Time between submission on the main thread and the start of the task here. */
  readonly waitMs: number;
  readonly runMs: number;
}

export interface VerifyTokenInput {
  readonly token: string;
  readonly alg: string;
  readonly key: VerificationKey;
  readonly options: VerifyOptions;
  readonly submittedAtMs: number;
}

export type VerifyTokenOutput = VerifyResult & TaskTiming;

export async function verifyToken(input: VerifyTokenInput): Promise<VerifyTokenOutput> {
  const start = preciseNowMs();
  const result = await verifyJws(input.token, input.alg, input.key, input.options);
  return { ...result, waitMs: Math.max(0, start - input.submittedAtMs), runMs: preciseNowMs() - start };
}

/** One token of a batch: its key is `keys[keyIndex]` of the batch. */
export interface BatchedToken extends Omit<VerifyTokenInput, 'key'> {
  readonly keyIndex: number;
}

/**
 * A batch of tokens (AuthPool.verifyToken batches them). Each key goes once per batch, not once
 * per token: a JWK is most of a token's message (cloned on this side, rebuilt on that one).
 */
export interface VerifyTokensInput {
  readonly keys: readonly VerificationKey[];
  readonly items: readonly BatchedToken[];
}

/** One result per item, in order. Synchronous crypto after the first use of a key: one task, many tokens. */
export async function verifyTokens(input: VerifyTokensInput): Promise<VerifyTokenOutput[]> {
  const out: VerifyTokenOutput[] = [];
  for (const { keyIndex, ...item } of input.items) {
    const key = input.keys[keyIndex];
    // a batch that names no key is a bug on the main thread: refused, never verified without one
    out.push(key ? await verifyToken({ ...item, key }) : { ok: false, reason: 'internal_error', waitMs: 0, runMs: 0 });
  }
  return out;
}

export interface PolicySnapshot {
  readonly generation: number;
  /** The validated policy document as JSON text; compiled here once per generation. */
  readonly json: string;
}

export interface EvaluateAclInput {
  /** null = no policy file (jwt mode): only the token acl claim grants. */
  readonly policy: PolicySnapshot | null;
  readonly subject: AclSubject;
  readonly action: AuthAction;
  readonly topic: string;
  readonly submittedAtMs: number;
}

export type EvaluateAclOutput = ({ readonly ok: true; readonly decision: AclDecision } | { readonly ok: false; readonly error: string }) & TaskTiming;

let compiled: { generation: number; policy: CompiledPolicy } | undefined;

export function evaluateAcl(input: EvaluateAclInput): EvaluateAclOutput {
  const start = preciseNowMs();
  const timing = () => ({ waitMs: Math.max(0, start - input.submittedAtMs), runMs: preciseNowMs() - start });
  try {
    let policy: CompiledPolicy | null = null;
    if (input.policy) {
      if (compiled?.generation !== input.policy.generation) {
        compiled = { generation: input.policy.generation, policy: compilePolicy(JSON.parse(input.policy.json)) };
      }
      policy = compiled.policy;
    }
    return { ok: true, decision: evaluate(policy, input.subject, input.action, input.topic), ...timing() };
  } catch (err) {
    // The main thread validated this policy already; reaching here is a bug, reported as data.
    return { ok: false, error: err instanceof Error ? err.message : String(err), ...timing() };
  }
}

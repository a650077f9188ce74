// The auth pool's tasks. Thin on purpose: plain cloneable data in, plain data out, one named
// export per task, each calling pure functions from jwt.ts / acl.ts. Nothing is thrown across
// the thread boundary: every failure comes back as a typed result.
import { compilePolicy, evaluate, type AclDecision, type AclSubject, type CompiledPolicy } from './acl.js';
import { identityFieldsFromClaims, usableKey, verifyWithKey, type ClaimRules, type TokenIdentityFields, type UsableKey, type VerificationKey } from './jwt.js';
import type { AuthFailureReason } from './reasons.js';
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

/** What a deployment checks in every token: the same object for every token of an authenticator. */
export interface TokenPolicy extends ClaimRules {
  readonly algorithms: readonly string[];
  /** The claims that name the user and carry the roles (VIGIL_JWT_USERNAME_CLAIM, _ROLES_CLAIM). */
  readonly usernameClaim: string;
  readonly rolesClaim: string;
}

export interface VerifyTokenInput {
  readonly token: string;
  readonly alg: string;
  readonly key: VerificationKey;
  readonly policy: TokenPolicy;
  /** The authenticator's clock when the token was submitted (injected in tests). */
  readonly nowMs: number;
  readonly submittedAtMs: number;
}

/**
 * A verified token comes back as the identity fields it grants, not as its claims: an IdP's
 * tokens carry claims Vigil never reads (email, name, groups...), which would be cloned to the
 * main thread for every CONNECT only to be dropped there.
 */
export type VerifyTokenOutput = ({ readonly ok: true; readonly fields: TokenIdentityFields } | { readonly ok: false; readonly reason: AuthFailureReason }) & TaskTiming;

/** One token of a batch: its key is `keys[keyIndex]` of the batch, its policy `policies[policyIndex]`. */
export interface BatchedToken extends Omit<VerifyTokenInput, 'key' | 'policy'> {
  readonly keyIndex: number;
  readonly policyIndex: number;
}

/**
 * A batch of tokens (AuthPool.verifyToken batches them). Each key and each policy goes once per
 * batch, not once per token: a JWK is most of a token's message (cloned on this side, rebuilt
 * on that one).
 */
export interface VerifyTokensInput {
  readonly keys: readonly VerificationKey[];
  readonly policies: readonly TokenPolicy[];
  readonly items: readonly BatchedToken[];
}

/**
 * One result per item, in order. The key checks and the (cached) KeyObject are looked up once
 * per key and algorithm in a batch; each token is then verified synchronously.
 */
export async function verifyTokens(input: VerifyTokensInput): Promise<VerifyTokenOutput[]> {
  const out: VerifyTokenOutput[] = [];
  const usable = new Map<string, UsableKey>();
  for (const item of input.items) {
    const start = preciseNowMs();
    const key = input.keys[item.keyIndex];
    const policy = input.policies[item.policyIndex];
    let result: VerifyTokenOutput;
    if (!key || !policy) {
      // a batch that names no key or policy is a bug on the main thread: refused, never verified without one
      result = { ok: false, reason: 'internal_error', waitMs: 0, runMs: 0 };
    } else {
      // usableKey's answer depends on the key, the alg and the policy's allow-list
      const id = `${item.keyIndex}:${item.policyIndex}:${item.alg}`;
      let k = usable.get(id);
      if (!k) {
        k = await usableKey(key, item.alg, policy.algorithms);
        usable.set(id, k);
      }
      const verified = k.ok ? verifyWithKey(item.token, item.alg, k.key, policy, item.nowMs) : k;
      const fields = verified.ok ? identityFieldsFromClaims(verified.claims, policy.usernameClaim, policy.rolesClaim) : undefined;
      const waitMs = Math.max(0, start - item.submittedAtMs);
      const runMs = preciseNowMs() - start;
      if (!verified.ok) result = { ok: false, reason: verified.reason, waitMs, runMs };
      else if (!fields) result = { ok: false, reason: 'bad_claims', waitMs, runMs };
      else result = { ok: true, fields, waitMs, runMs };
    }
    out.push(result);
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

/** An ACL question of a batch: its policy by index into the batch's `policies` (-1: none). */
export interface BatchedAclQuestion extends Omit<EvaluateAclInput, 'policy'> {
  readonly policyIndex: number;
}

/** The ACL questions of one turn in one task: each distinct policy snapshot sent once. */
export interface EvaluateAclsInput {
  readonly policies: readonly PolicySnapshot[];
  readonly items: readonly BatchedAclQuestion[];
}

let compiled: { generation: number; policy: CompiledPolicy } | undefined;

/** One decision per question, in order (evaluateAcl for each). */
export function evaluateAcls(input: EvaluateAclsInput): EvaluateAclOutput[] {
  return input.items.map(({ policyIndex, subject, action, topic, submittedAtMs }) => {
    const policy = policyIndex < 0 ? null : input.policies[policyIndex];
    // a question naming a policy the batch lacks is a bug on the main thread: an error, never "no policy"
    if (policy === undefined) return { ok: false, error: `batch has no policy ${policyIndex}`, waitMs: 0, runMs: 0 };
    return evaluateAcl({ policy, subject, action, topic, submittedAtMs });
  });
}

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

// Authorization at the moment of every send (PUBLISH, SUBSCRIBE, every delivery, and a will
// when it fires). Deliveries have their own main-thread verdict tables (receive-verdicts.ts).
//
// `check` answers synchronously from a main-thread verdict cache; only a miss goes to the
// pool (the misses of one turn in one evaluateAcls task), and concurrent misses for the same
// question share one evaluation. The cache is keyed by the Identity object (WeakMap), so a
// session that re-authenticates gets a new Identity and naturally starts from an empty cache,
// and a closed session's verdicts are garbage with it. A policy reload or a revocation flushes everything (bumps `generation`).
//
// Authorization uses the identity snapshot proven at CONNECT plus the *current* policy and
// revocation list. It does not look at the token again: a will firing after the token expired
// or after its signing key was rotated out is judged on who the client was and what the
// policy allows now — which is exactly the question the seed issue asks to get right.
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { clientIdDecision, evaluate, type AclDecision, type AclSubject } from './acl.js';
import { ReceiveTables } from './receive-verdicts.js';
import type { AclPolicyFile, LoadedPolicy } from './acl-file.js';
import type { AuthPool } from './pool.js';
import type { RevocationList } from './revocation.js';
import type { AuthAction, Authorizer, Identity, ReceiveVerdicts, Verdict } from './types.js';
import { preciseNowMs } from './worker.js';

export interface PolicyAuthorizerOptions {
  readonly pool: AuthPool;
  /** Null: no policy file. Then `allowAll` decides (none mode) or only token acl claims grant (jwt mode). */
  readonly policyFile: AclPolicyFile | null;
  readonly allowAll: boolean;
  readonly revocations: RevocationList;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** Verdicts kept per identity before its cache is cleared. */
  readonly maxVerdictsPerIdentity?: number;
  /** Verdicts kept in all before every cache is cleared. */
  readonly maxVerdicts?: number;
}

interface IdentityVerdicts {
  version: number;
  /** Keyed by topic (publish) or filter (subscribe): one map per action keeps the hit path free of string building. */
  readonly publish: Map<string, Verdict>;
  readonly subscribe: Map<string, Verdict>;
  readonly pending: Map<string, Promise<Verdict>>;
}

const ALLOWED: Verdict = Object.freeze({ allowed: true });
const REVOKED: Verdict = Object.freeze({ allowed: false, reason: 'revoked' });

export class PolicyAuthorizer implements Authorizer {
  private readonly cache = new WeakMap<Identity, IdentityVerdicts>();
  private readonly maxPerIdentity: number;
  private readonly maxTotal: number;
  private readonly unsubscribe: (() => void)[] = [];
  private policyGeneration: number;
  private revocationsSeen = 0;
  /** Every cached verdict of an older version is stale; bumped by generation changes and overflow. */
  private version = 0;
  private cachedVerdicts = 0;
  private readonly receive: ReceiveTables;
  private readonly cacheHits: { inc(): void };
  private readonly cacheMisses: { inc(): void };

  constructor(private readonly options: PolicyAuthorizerOptions) {
    this.cacheHits = options.metrics.aclVerdictCacheTotal.bind({ result: 'hit' });
    this.cacheMisses = options.metrics.aclVerdictCacheTotal.bind({ result: 'miss' });
    this.maxPerIdentity = options.maxVerdictsPerIdentity ?? 1000;
    this.maxTotal = options.maxVerdicts ?? 200_000;
    this.policyGeneration = options.policyFile?.current.generation ?? 0;
    const evaluations = options.metrics.aclDeliveryEvaluationsTotal;
    this.receive = new ReceiveTables({
      policy: () => this.policy()?.policy ?? null,
      isRevoked: (identity) => options.revocations.isRevoked(identity),
      evaluated: () => evaluations.inc(),
    });
    if (options.policyFile) {
      this.unsubscribe.push(options.policyFile.onReload((p) => {
        this.policyGeneration = p.generation;
        this.flush();
        this.receive.flush();
      }));
    }
    this.unsubscribe.push(options.revocations.onRevoked(() => {
      this.revocationsSeen++;
      this.flush();
      this.receive.flush();
    }));
  }

  get allowAll(): boolean {
    return this.options.allowAll && this.options.policyFile === null;
  }

  get generation(): number {
    return this.policyGeneration + this.revocationsSeen;
  }

  check(identity: Identity, action: AuthAction, topic: string): Verdict | Promise<Verdict> {
    if (this.options.revocations.isRevoked(identity)) return this.deny(action, REVOKED);
    if (this.allowAll) return ALLOWED;
    const entry = this.entryFor(identity);
    const hit = (action === 'publish' ? entry.publish : entry.subscribe).get(topic);
    if (hit) {
      this.cacheHits.inc();
      return hit.allowed ? hit : this.deny(action, hit);
    }
    this.cacheMisses.inc();
    const key = action === 'publish' ? `p${topic}` : `s${topic}`;
    const pending = entry.pending.get(key);
    if (pending) return pending;

    const policy = this.policy();
    const version = this.version;
    const subject = toSubject(identity);
    if (this.options.pool.saturated) {
      // The pool is for keeping the main thread free, not a reason to refuse: evaluate here.
      return this.settle(entry, key, version, action, evaluate(policy?.policy ?? null, subject, action, topic));
    }
    const task = this.options.pool
      .evaluateAcl({
        policy: policy ? { generation: policy.generation, json: policy.json } : null,
        subject,
        action,
        topic,
        submittedAtMs: preciseNowMs(),
      })
      .then(
        (out) => {
          if (out.ok) return out.decision;
          this.options.logger.error({ err: out.error }, 'evaluateAcl failed in the pool; evaluating on the main thread');
          return evaluate(policy?.policy ?? null, subject, action, topic);
        },
        (err) => {
          this.options.logger.error({ err: String(err) }, 'auth pool unavailable; evaluating on the main thread');
          return evaluate(policy?.policy ?? null, subject, action, topic);
        },
      )
      .then((decision) => this.settle(entry, key, version, action, decision))
      .finally(() => {
        if (entry.pending.get(key) === task) entry.pending.delete(key);
      });
    entry.pending.set(key, task);
    return task;
  }

  receiveVerdicts(identity: Identity): ReceiveVerdicts | null {
    return this.allowAll ? null : this.receive.forIdentity(identity);
  }

  /** The policy's client-id rules at CONNECT (docs/acl.md, "Client ids"): a few string compares, on this thread. */
  clientIdAllowed(identity: Identity, clientId: string): boolean {
    const policy = this.policy()?.policy ?? null;
    if (policy === null) return true; // no policy, no client-id rules: nothing to build for every CONNECT
    return clientIdDecision(policy, toSubject(identity), clientId).allowed;
  }

  /**
   * The full decision with the rule that made it, evaluated on the main thread and never
   * cached: for the admin API's explain view and for tests.
   */
  explain(identity: Identity, action: AuthAction, topic: string): AclDecision & { readonly generation: number } {
    const generation = this.generation;
    if (this.options.revocations.isRevoked(identity)) return { allowed: false, reason: 'revoked', generation };
    if (this.allowAll) return { allowed: true, reason: 'allow_all', generation };
    return { ...evaluate(this.policy()?.policy ?? null, toSubject(identity), action, topic), generation };
  }

  /** Drops the cached verdicts of one identity (e.g. its session's grants changed). */
  forget(identity: Identity): void {
    this.cache.delete(identity);
  }

  /** Drops every cached verdict. */
  flush(): void {
    this.version++;
    this.cachedVerdicts = 0;
  }

  async close(): Promise<void> {
    for (const off of this.unsubscribe) off();
    this.flush();
  }

  // -------------------------------------------------------------------------------------

  private policy(): LoadedPolicy | null {
    return this.options.policyFile?.current ?? null;
  }

  private entryFor(identity: Identity): IdentityVerdicts {
    let entry = this.cache.get(identity);
    if (!entry) {
      entry = { version: this.version, publish: new Map(), subscribe: new Map(), pending: new Map() };
      this.cache.set(identity, entry);
    } else if (entry.version !== this.version) {
      entry.version = this.version;
      entry.publish.clear();
      entry.subscribe.clear();
      // Evaluations in flight answer their own callers; later checks must ask the new policy.
      entry.pending.clear();
    }
    return entry;
  }

  private settle(entry: IdentityVerdicts, key: string, version: number, action: AuthAction, decision: AclDecision): Verdict {
    const verdict: Verdict = decision.allowed ? ALLOWED : Object.freeze({ allowed: false, reason: decision.reason });
    // A verdict computed against an older policy answers the check that asked, but is not kept.
    if (version === this.version && entry.version === version) {
      if (entry.publish.size + entry.subscribe.size >= this.maxPerIdentity) {
        this.cachedVerdicts -= entry.publish.size + entry.subscribe.size;
        entry.publish.clear();
        entry.subscribe.clear();
      }
      if (this.cachedVerdicts >= this.maxTotal) this.flush();
      else {
        (action === 'publish' ? entry.publish : entry.subscribe).set(key.slice(1), verdict);
        this.cachedVerdicts++;
      }
    }
    if (!verdict.allowed) {
      this.options.logger.debug({ action, topic: key.slice(1), reason: decision.reason, rule: decision.rule }, 'authorization denied');
      return this.deny(action, verdict);
    }
    return verdict;
  }

  private deny(action: AuthAction, verdict: Verdict): Verdict {
    this.options.metrics.aclDeniesTotal.inc({ action });
    return verdict;
  }
}

function toSubject(identity: Identity): AclSubject {
  return { username: identity.username, clientId: identity.clientId, certSubject: identity.certSubject, roles: identity.roles, tokenAcl: identity.tokenAcl };
}

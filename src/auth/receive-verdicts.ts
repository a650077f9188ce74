// Delivery-time authorization: "may this subscriber receive this concrete topic now?", asked
// for every message matched to a subscription (docs/acl.md "Delivery").
//
// It is answered on the main thread, never in the pool: a delivery cannot wait for a worker
// round trip (a publish fanned out to 10,000 subscribers would stall on it), and the policy is
// compiled, so a miss costs one `evaluateReceive` over a handful of rules. Verdicts are kept
// per *identity class*: identities that the subscribe rules cannot tell apart (same roles, same
// token claim, and — only when a rule they meet substitutes %u/%c/%s — same username, client
// id and certificate subject) share one table, so a fan-out to many devices of one role costs
// one Map lookup each and one evaluation per topic in all. A policy reload or a revocation
// bumps the version: every table goes stale at once and sessions ask for a fresh one at their
// next delivery, so existing subscriptions follow the policy in force now.
import { evaluateReceive, receiveRulesTemplated, type CompiledPolicy } from './acl.js';
import type { Identity, ReceiveVerdicts } from './types.js';

export interface ReceiveTablesOptions {
  /** The policy now (null: no policy file, jwt mode: only token claims grant). */
  readonly policy: () => CompiledPolicy | null;
  readonly isRevoked: (identity: Identity) => boolean;
  /** Counted once per evaluation (a topic new to a class). */
  readonly evaluated: () => void;
  /** Topics kept per class before its table is cleared. */
  readonly maxPerClass?: number;
  /** Verdicts kept in all before every table is dropped. */
  readonly maxTotal?: number;
  /** Classes remembered for sharing before the index is cleared (tables in use keep working). */
  readonly maxClasses?: number;
}

class ClassVerdicts implements ReceiveVerdicts {
  private readonly verdicts = new Map<string, boolean>();

  constructor(
    private readonly tables: ReceiveTables,
    private readonly version: number,
    private readonly decide: (topic: string) => boolean,
  ) {}

  get stale(): boolean {
    return this.version !== this.tables.version;
  }

  allows(topic: string): boolean {
    const known = this.verdicts.get(topic);
    if (known !== undefined) return known;
    const allowed = this.decide(topic);
    if (this.stale) return allowed; // judged on the policy now, but not kept in an old table
    if (this.verdicts.size >= this.tables.maxPerClass) {
      this.tables.forgotten(this.verdicts.size);
      this.verdicts.clear();
    }
    if (this.tables.kept()) this.verdicts.set(topic, allowed);
    return allowed;
  }
}

/** A revoked identity receives nothing until the revocation state changes again. */
class NothingAllowed implements ReceiveVerdicts {
  constructor(private readonly tables: ReceiveTables, private readonly version: number) {}

  get stale(): boolean {
    return this.version !== this.tables.version;
  }

  allows(): boolean {
    return false;
  }
}

export class ReceiveTables {
  /** Bumped by reloads, revocations and overflow: every table of an older version is stale. */
  version = 0;
  readonly maxPerClass: number;
  private readonly maxTotal: number;
  private readonly maxClasses: number;
  private readonly byClass = new Map<string, ClassVerdicts>();
  private total = 0;

  constructor(private readonly options: ReceiveTablesOptions) {
    this.maxPerClass = options.maxPerClass ?? 10_000;
    this.maxTotal = options.maxTotal ?? 200_000;
    this.maxClasses = options.maxClasses ?? 10_000;
  }

  /** The verdict table for this identity under the policy and revocations now. */
  forIdentity(identity: Identity): ReceiveVerdicts {
    if (this.options.isRevoked(identity)) return new NothingAllowed(this, this.version);
    const policy = this.options.policy();
    const key = classKey(policy, identity);
    let table = this.byClass.get(key);
    if (table === undefined) {
      const subject = { username: identity.username, clientId: identity.clientId, certSubject: identity.certSubject, roles: identity.roles, tokenAcl: identity.tokenAcl };
      table = new ClassVerdicts(this, this.version, (topic) => {
        this.options.evaluated();
        return evaluateReceive(this.options.policy(), subject, topic).allowed;
      });
      if (this.byClass.size >= this.maxClasses) this.byClass.clear();
      this.byClass.set(key, table);
    }
    return table;
  }

  /** Policy reloaded or revocation list changed: every table is stale. */
  flush(): void {
    this.version++;
    this.byClass.clear();
    this.total = 0;
  }

  /** Room for one more verdict? Past the total bound everything is flushed instead. */
  kept(): boolean {
    if (this.total >= this.maxTotal) {
      this.flush();
      return false;
    }
    this.total++;
    return true;
  }

  forgotten(n: number): void {
    this.total -= n;
  }
}

/**
 * Identities with the same key get the same verdict for every topic. The username, client id
 * and certificate subject are part of it only when a subscribe rule the identity can meet
 * substitutes them; otherwise a whole role shares one table.
 */
function classKey(policy: CompiledPolicy | null, identity: Identity): string {
  const roles = [...identity.roles].sort();
  const claim = identity.tokenAcl === undefined ? 0 : (identity.tokenAcl.subscribe ?? null);
  const personal = policy !== null && receiveRulesTemplated(policy, roles) ? [identity.username, identity.clientId, identity.certSubject ?? null] : 0;
  return JSON.stringify([roles, claim, personal]);
}

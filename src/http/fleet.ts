// What the console's fleet and will views show, and the paging rule both sources follow: ids
// in byte order, a page starts after a cursor (the last id of the previous page), a prefix
// bounds the range. A single node answers from its memory (fleet-local.ts), a cluster from
// the Redis index (cluster/fleet-index.ts); the admin API does not know which it holds.
import type { Identity, Verdict } from '../auth/types.js';
import type { WillRecord } from '../store/types.js';

export type FleetState = 'connected' | 'offline' | 'down';
export const FLEET_STATES: readonly FleetState[] = ['connected', 'offline', 'down'];

export interface FleetWill {
  /** attached: its connection is live; pending: the delay runs; fired / denied: decided. */
  readonly state: 'attached' | 'pending' | 'fired' | 'denied';
  readonly topic?: string;
  readonly dueAt?: string;
  /** pending: the node holding it (its owner); fired / denied: the node that decided. */
  readonly node?: string;
  readonly reason?: string;
  readonly rule?: string;
  readonly at?: string;
}

export interface FleetEntry {
  readonly clientId: string;
  readonly state: FleetState;
  readonly node: string;
  readonly username: string | null;
  /** The identity the session and its will belong to (auth/session-owner.ts: user:…, cert:…, anonymous), as recorded at the claim. */
  readonly owner: string | null;
  readonly roles: readonly string[];
  readonly protocolVersion: number | null;
  readonly connectedSince: string | null;
  readonly disconnectedSince: string | null;
  /** Persistent session stored (it outlives the connection). */
  readonly persistent: boolean;
  /** null: not known here (a clean session on another node). */
  readonly subscriptions: number | null;
  readonly queued: number | null;
  readonly will: FleetWill | null;
}

export interface FleetQuery {
  readonly prefix: string;
  readonly state?: FleetState;
  /** Exclusive: the page starts after this id. */
  readonly after?: string;
  readonly limit: number;
}

export interface FleetPage {
  readonly clients: FleetEntry[];
  /** Pass as `after` for the next page; null at the end. */
  readonly next: string | null;
  /** Ids looked at for this page (a state filter may skip many). */
  readonly scanned: number;
}

/** One will decision, as the node that made it recorded it (the `will explain` of a decided will). */
export interface WillDecision {
  readonly clientId: string;
  readonly outcome: 'fired' | 'denied';
  readonly reason: string;
  /** The policy rule that decided, or what decided when no rule did (default deny, revocation). */
  readonly rule: string;
  readonly explanation: string;
  readonly node: string;
  readonly at: string;
  readonly epoch: number;
  readonly will: { readonly topic: string; readonly qos: number; readonly retain: boolean; readonly delayS: number; readonly payloadBytes: number };
  readonly identity: { readonly username: string; readonly roles: readonly string[]; readonly jti: string | null; readonly kid: string | null; readonly authenticatedAt: string; readonly tokenExpiresAt: string | null };
  readonly policyGeneration: number;
  readonly willAuthz: string;
  /** The lease the deciding node held. */
  readonly lease: string;
}

/** A pending will as the wills view lists it. */
export interface PendingWillView {
  readonly clientId: string;
  readonly dueAt: string;
  readonly node: string;
  readonly topic?: string;
}

export interface FleetSource {
  page(query: FleetQuery): Promise<FleetPage>;
  /** One client, as its fleet row shows it; undefined when unknown. */
  entry(clientId: string): FleetEntry | undefined | Promise<FleetEntry | undefined>;
  pendingWills(limit: number): Promise<PendingWillView[]>;
  decisions(limit: number): Promise<WillDecision[]>;
  lastDecision(clientId: string): Promise<WillDecision | undefined>;
}

/** Explains a rule for a decision: the rule text, or what decided without one. */
export function describeRule(verdict: Verdict, explained: { rule?: string; reason: string } | undefined, topic: string): string {
  if (verdict.allowed) return explained?.rule ?? (explained?.reason === 'allow_all' ? 'allow all (no policy)' : 'granted');
  if (verdict.reason === 'revoked') return 'revocation list: the subject or token id is revoked';
  if (explained?.rule) return explained.rule;
  if (verdict.reason === 'no_grant' || explained?.reason === 'no_grant') return `default deny: no rule grants publish on ${topic}`;
  return verdict.reason;
}

const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());

export function decisionOf(
  record: WillRecord,
  verdict: Verdict,
  ctx: { node: string; lease: string; nowMs: number; rule: string; explanation: string; policyGeneration: number; willAuthz: string },
): WillDecision {
  const id: Identity = record.identity;
  return {
    clientId: record.clientId,
    outcome: verdict.allowed ? 'fired' : 'denied',
    reason: verdict.allowed ? 'allowed' : verdict.reason,
    rule: ctx.rule,
    explanation: ctx.explanation,
    node: ctx.node,
    at: new Date(ctx.nowMs).toISOString(),
    epoch: record.epoch,
    will: { topic: record.message.topic, qos: record.message.qos, retain: record.message.retain, delayS: record.delayS, payloadBytes: record.message.payload.length },
    identity: { username: id.username, roles: [...id.roles], jti: id.jti ?? null, kid: id.kid ?? null, authenticatedAt: new Date(id.authenticatedAtMs).toISOString(), tokenExpiresAt: iso(id.expiresAtMs) },
    policyGeneration: ctx.policyGeneration,
    willAuthz: ctx.willAuthz,
    lease: ctx.lease,
  };
}

/** The `limit` smallest ids in (after, prefix-range), in order, from any iterable: one pass, no full sort. */
export function smallestIds(ids: Iterable<string>, query: Pick<FleetQuery, 'prefix' | 'after'>, limit: number, keep: (id: string) => boolean = () => true): string[] {
  const out: string[] = [];
  for (const id of ids) {
    if (!id.startsWith(query.prefix)) continue;
    if (query.after !== undefined && compareIds(id, query.after) <= 0) continue;
    if (out.length === limit && compareIds(id, out[limit - 1]) >= 0) continue;
    // insertion into a short sorted array (an id may come from several sources: once only)
    let i = out.length;
    while (i > 0 && compareIds(out[i - 1], id) > 0) i--;
    if (i > 0 && out[i - 1] === id) continue;
    if (!keep(id)) continue;
    out.splice(i, 0, id);
    if (out.length > limit) out.pop();
  }
  return out;
}

/**
 * UTF-16 code unit order: the byte order of the UTF-8 encodings (Redis ZRANGEBYLEX) for every
 * id below U+E000, cheap enough for one pass over 100,000 ids. A single node pages by this
 * order throughout, so its cursors stay consistent.
 */
export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

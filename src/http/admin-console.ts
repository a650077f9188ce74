// The admin API endpoints the console uses (and scripts can use the same way), cluster-wide:
// the fleet, wills and their decisions, retained messages, identity state and the cluster.
// Mounted by admin.ts behind the same bearer token; every answer is bounded in size (limits
// on every list) and every request in time (admin.ts). docs/admin-api.md documents each one.
import type http from 'node:http';
import type { RevocationEntry, RevocationKind } from '../auth/revocation.js';
import type { Logger } from '../log.js';
import type { WillExplanation } from './admin.js';
import { FLEET_STATES, type FleetSource, type FleetState, type WillDecision } from './fleet.js';

export const MAX_PAGE = 500;
const MAX_PREFIX = 1024;

export interface RetainedView {
  readonly topic: string;
  readonly payloadBytes: number;
  /** text: valid UTF-8 without control characters; otherwise hex of the first bytes. */
  readonly preview: { readonly kind: 'text' | 'hex'; readonly value: string; readonly truncated: boolean };
  readonly qos: number;
  /** Client id of the publisher ('' for the broker: $SYS, or an unfenced admin write). */
  readonly publisher: string;
  readonly publisherUsername: string | null;
  /** Session incarnation of the publisher when it was written (retained fencing), null if unfenced. */
  readonly epoch: number | null;
  readonly expiresAt: string | null;
}

export interface IdentityView {
  readonly mode: string;
  readonly algorithms: readonly string[];
  readonly keys: readonly { kid: string | null; alg: string | null; kty: string; thumbprint: string; state: string; since: string; retiredAt: string | null; verifiesUntil: string | null }[];
  readonly jwks: { readonly source: string | null; readonly lastError: { at: string; message: string } | null };
  readonly acl: { readonly file: string | null; readonly generation: number; readonly loadedAt: string | null; readonly roles: readonly string[]; readonly allowAll: boolean; readonly lastError: { at: string; message: string } | null };
  readonly willAuthz: string;
}

export interface ClusterView {
  readonly node: string;
  readonly mode: 'single' | 'cluster';
  readonly now: string;
  readonly members: readonly { member: string; node: string; leaseExpiresAt: string; live: boolean; self: boolean; rates: unknown[] | null }[];
  readonly reaps: readonly unknown[];
  readonly redis: { readonly status: string; readonly pingMs: number | null; readonly version: string | null; readonly usedMemory: string | null; readonly keys: number | null; readonly error: string | null } | null;
  readonly sampleIntervalMs: number;
}

export interface ConsoleDeps {
  readonly fleet: FleetSource;
  explainWill(clientId: string): Promise<WillExplanation | undefined>;
  retained(q: { prefix: string; after?: string; limit: number }): Promise<{ messages: RetainedView[]; next: string | null }>;
  /** false when nothing is retained on the topic. */
  deleteRetained(topic: string): Promise<boolean>;
  identity(): IdentityView;
  revocations(): RevocationEntry[];
  unrevoke(kind: RevocationKind, value: string): Promise<boolean>;
  cluster(): Promise<ClusterView>;
}

export class ConsoleHttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

function intParam(params: URLSearchParams, name: string, dflt: number, max: number): number {
  const raw = params.get(name);
  if (raw === null || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new ConsoleHttpError(400, `"${name}" must be a whole number from 1 to ${max}`);
  return n;
}

function strParam(params: URLSearchParams, name: string): string {
  const v = params.get(name) ?? '';
  if (v.length > MAX_PREFIX) throw new ConsoleHttpError(400, `"${name}" is longer than ${MAX_PREFIX} characters`);
  return v;
}

function optional(params: URLSearchParams, name: string): string | undefined {
  const v = strParam(params, name);
  return v === '' ? undefined : v;
}

/** Answers the console endpoints; undefined when the path is not one of them. */
export async function routeConsole(
  req: http.IncomingMessage,
  url: URL,
  seg: readonly string[],
  deps: ConsoleDeps,
  log?: Logger,
): Promise<{ status: number; body: unknown } | undefined> {
  const method = req.method ?? 'GET';
  const p = url.searchParams;
  const only = (m: string) => {
    if (method !== m) throw new ConsoleHttpError(405, 'method not allowed');
  };

  if (seg.length === 1 && seg[0] === 'fleet') {
    only('GET');
    const state = optional(p, 'state');
    if (state !== undefined && !FLEET_STATES.includes(state as FleetState)) throw new ConsoleHttpError(400, `"state" must be one of ${FLEET_STATES.join(', ')}`);
    const page = await deps.fleet.page({ prefix: strParam(p, 'prefix'), state: state as FleetState | undefined, after: optional(p, 'after'), limit: intParam(p, 'limit', 50, MAX_PAGE) });
    return { status: 200, body: page };
  }
  if (seg.length === 1 && seg[0] === 'wills') {
    only('GET');
    const limit = intParam(p, 'limit', 100, MAX_PAGE);
    const [pending, decisions] = await Promise.all([deps.fleet.pendingWills(limit), deps.fleet.decisions(limit)]);
    return { status: 200, body: { pending, decisions } };
  }
  if (seg.length === 2 && seg[0] === 'wills') {
    only('GET');
    const clientId = seg[1];
    const [explain, lastDecision] = await Promise.all([deps.explainWill(clientId), deps.fleet.lastDecision(clientId)]);
    if (!explain && !lastDecision) throw new ConsoleHttpError(404, 'no will stored or decided for this client');
    return { status: 200, body: { clientId, explain: explain ?? null, lastDecision: (lastDecision as WillDecision | undefined) ?? null } };
  }
  if (seg.length === 1 && seg[0] === 'retained') {
    only('GET');
    return { status: 200, body: await deps.retained({ prefix: strParam(p, 'prefix'), after: optional(p, 'after'), limit: intParam(p, 'limit', 50, MAX_PAGE) }) };
  }
  if (seg.length === 2 && seg[0] === 'retained') {
    only('DELETE');
    const topic = seg[1];
    if (topic === '' || topic.length > 65535 || /[#+\u0000]/.test(topic)) throw new ConsoleHttpError(400, 'not a topic name');
    if (!(await deps.deleteRetained(topic))) throw new ConsoleHttpError(404, 'nothing retained on this topic');
    log?.info({ topic, remote: req.socket.remoteAddress }, 'admin API: retained message deleted');
    return { status: 200, body: { topic, deleted: true } };
  }
  if (seg.length === 1 && seg[0] === 'identity') {
    only('GET');
    return { status: 200, body: deps.identity() };
  }
  if (seg.length === 1 && seg[0] === 'revocations') {
    only('GET');
    return { status: 200, body: { revocations: deps.revocations().slice(0, intParam(p, 'limit', 500, 10_000)) } };
  }
  if (seg.length === 3 && seg[0] === 'revocations') {
    only('DELETE');
    const kind = seg[1];
    if (kind !== 'subject' && kind !== 'jti') throw new ConsoleHttpError(400, 'kind must be subject or jti');
    if (!(await deps.unrevoke(kind, seg[2]))) throw new ConsoleHttpError(404, 'no such revocation');
    log?.info({ kind, value: seg[2], remote: req.socket.remoteAddress }, 'admin API: revocation lifted');
    return { status: 200, body: { kind, value: seg[2], lifted: true } };
  }
  if (seg.length === 1 && seg[0] === 'cluster') {
    only('GET');
    return { status: 200, body: await deps.cluster() };
  }
  return undefined;
}

/** Text when the bytes are UTF-8 without control characters (tab, newlines allowed), else hex. */
export function previewPayload(payload: Buffer, max = 256): RetainedView['preview'] {
  const head = payload.subarray(0, max);
  const truncated = payload.length > max;
  const text = head.toString('utf8');
  // a cut in the middle of a character is not a reason for hex: allow a trailing replacement
  const body = truncated ? text.replace(/\uFFFD+$/, '') : text;
  if (!body.includes('\uFFFD') && !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(body)) return { kind: 'text', value: body, truncated };
  return { kind: 'hex', value: head.toString('hex').replace(/(..)(?!$)/g, '$1 '), truncated };
}

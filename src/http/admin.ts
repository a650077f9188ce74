// The admin API under /admin/, mounted in the node's HTTP server. It reaches the broker only
// through AdminDeps, so it can be tested with a fake and runs the same on one node or many.
// No token configured = every /admin path answers 404, as if the API did not exist.
import { createHash, timingSafeEqual } from 'node:crypto';
import type http from 'node:http';
import type { Identity, Verdict } from '../auth/types.js';
import type { Logger } from '../log.js';
import type { WillRecord } from '../store/types.js';
import { ConsoleHttpError, routeConsole, type ConsoleDeps } from './admin-console.js';

export type RevocationKind = 'subject' | 'jti';

/** One connected client as GET /admin/clients lists it. */
export interface ClientInfo {
  readonly clientId: string;
  readonly node: string;
  readonly username: string;
  readonly roles: readonly string[];
  readonly protocolVersion: 3 | 4 | 5;
  readonly subscriptions: number;
  /** ISO 8601. */
  readonly connectedSince: string;
  readonly listener?: string;
  readonly remoteAddress?: string;
}

/** What GET /admin/wills/{clientId}/explain answers. Built by explainWillRecord. */
export interface WillExplanation {
  readonly clientId: string;
  /** pending: the owner is gone and the delay runs; attached: its connection is live. */
  readonly state: 'pending' | 'attached';
  readonly will: {
    readonly topic: string;
    readonly qos: 0 | 1 | 2;
    readonly retain: boolean;
    readonly delayS: number;
    readonly payloadBytes: number;
    readonly messageExpiryS: number | null;
    readonly protocolVersion: 3 | 4 | 5;
  };
  readonly authorization: {
    readonly username: string;
    readonly roles: readonly string[];
    readonly jti: string | null;
    readonly kid: string | null;
    readonly certSubject: string | null;
    readonly authenticatedAt: string;
    readonly tokenExpiresAt: string | null;
    /** Informational: an expired token does not stop a will (the identity was proven at CONNECT). */
    readonly tokenExpired: boolean;
  };
  readonly decisionIfFiredNow: {
    readonly allowed: boolean;
    readonly reason: string;
    readonly explanation: string;
    /** VIGIL_WILL_AUTHZ in force. */
    readonly willAuthz: string;
  };
  readonly pending: { readonly dueAt: string; readonly dueInMs: number } | null;
  readonly attachedTo: { readonly node: string; readonly listener?: string; readonly remoteAddress?: string; readonly connectedSince?: string } | null;
  readonly owner: { readonly node: string; readonly lease: string; readonly leaseExpiresAt?: string | null };
}

/** Everything the admin API needs from a node. server.ts implements it (see admin-local.ts). */
export interface AdminDeps {
  listClients(): ClientInfo[] | Promise<ClientInfo[]>;
  /** Disconnects a client (5.0: DISCONNECT 0x98 Administrative action); false when it is not connected here. */
  kick(clientId: string): boolean | Promise<boolean>;
  revoke(kind: RevocationKind, value: string, ttlS?: number): void | Promise<void>;
  /** undefined when no will is stored for the client. */
  explainWill(clientId: string): WillExplanation | undefined | Promise<WillExplanation | undefined>;
  /** The cluster-wide endpoints the console uses (admin-console.ts). */
  readonly console?: ConsoleDeps;
}

export interface AdminOptions {
  /** VIGIL_ADMIN_TOKEN; '' = admin API off. */
  readonly token: string;
  readonly deps: AdminDeps;
  readonly log?: Logger;
  /** Largest request body read, bytes. */
  readonly maxBodyBytes?: number;
  /** Longest an admin request may take before it answers 504 (default 5000 ms). */
  readonly timeoutMs?: number;
}

/** Handles a request when its path is /admin or below it; resolves false otherwise, so the caller answers. */
export type AdminHandler = (req: http.IncomingMessage, res: http.ServerResponse) => Promise<boolean>;

const MAX_VALUE_LENGTH = 1024;

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly headers: Record<string, string> = {}) {
    super(message);
  }
}

export function isAdminPath(pathname: string): boolean {
  return pathname === '/admin' || pathname.startsWith('/admin/');
}

/** Compares a presented bearer token with the configured one without leaking where they differ. */
export function tokenMatches(presented: string, expected: string): boolean {
  // hashing first gives equal lengths, so timingSafeEqual never short-circuits on length
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b) && expected.length > 0;
}

function bearer(req: http.IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(.+)$/i.exec(h.trim());
  return m ? m[1].trim() : undefined;
}

export function createAdminHandler(options: AdminOptions): AdminHandler {
  const { token, deps, log } = options;
  const maxBody = options.maxBodyBytes ?? 16 * 1024;

  return async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (!isAdminPath(url.pathname)) return false;
    try {
      if (!token) throw new HttpError(404, 'not found');
      const presented = bearer(req);
      if (presented === undefined || !tokenMatches(presented, token)) {
        log?.warn({ remote: req.socket.remoteAddress, path: url.pathname }, 'admin API: unauthorized request');
        throw new HttpError(401, 'unauthorized', { 'www-authenticate': 'Bearer realm="vigil-admin"' });
      }
      const segments = url.pathname.split('/').slice(2).map(decodeSegment);
      const result = await withTimeout(route(req, url, segments, deps, maxBody, log), options.timeoutMs ?? 5000);
      send(res, result.status, result.body);
    } catch (err) {
      if (err instanceof HttpError || err instanceof ConsoleHttpError) {
        send(res, err.status, { error: err.message }, err instanceof HttpError ? err.headers : {});
      } else {
        log?.error({ err: (err as Error).message, path: url.pathname }, 'admin API: handler failed');
        send(res, 500, { error: 'internal error' });
      }
    }
    return true;
  };
}

function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new HttpError(400, 'malformed percent-encoding in path');
  }
}

function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new HttpError(504, `admin request took longer than ${ms} ms`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

async function route(req: http.IncomingMessage, url: URL, seg: string[], deps: AdminDeps, maxBody: number, log?: Logger): Promise<{ status: number; body: unknown }> {
  const method = req.method ?? 'GET';
  const allow = (...methods: string[]) => {
    if (!methods.includes(method)) throw new HttpError(405, 'method not allowed', { allow: methods.join(', ') });
  };

  // GET /admin/clients
  if (seg.length === 1 && seg[0] === 'clients') {
    allow('GET');
    const clients = await deps.listClients();
    return { status: 200, body: { count: clients.length, clients } };
  }
  // POST /admin/clients/{id}/kick
  if (seg.length === 3 && seg[0] === 'clients' && seg[2] === 'kick') {
    allow('POST');
    const clientId = seg[1];
    const kicked = await deps.kick(clientId);
    if (!kicked) throw new HttpError(404, 'client not connected on this node');
    log?.info({ clientId, remote: req.socket.remoteAddress }, 'admin API: client kicked');
    return { status: 200, body: { clientId, kicked: true } };
  }
  // POST /admin/revoke
  if (seg.length === 1 && seg[0] === 'revoke') {
    allow('POST');
    const { kind, value, ttlS } = parseRevocation(await readJson(req, maxBody));
    await deps.revoke(kind, value, ttlS);
    log?.info({ kind, value, ttlS, remote: req.socket.remoteAddress }, 'admin API: revoked');
    return { status: 200, body: { revoked: { kind, value, ttlS: ttlS ?? null } } };
  }
  // GET /admin/wills/{clientId}/explain
  if (seg.length === 3 && seg[0] === 'wills' && seg[2] === 'explain') {
    allow('GET');
    const explanation = await deps.explainWill(seg[1]);
    if (!explanation) throw new HttpError(404, 'no will stored for this client');
    return { status: 200, body: explanation };
  }
  const answered = deps.console ? await routeConsole(req, url, seg, deps.console, log) : undefined;
  if (answered) return answered;
  throw new HttpError(404, 'not found');
}

async function readJson(req: http.IncomingMessage, maxBody: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBody) throw new HttpError(413, `body larger than ${maxBody} bytes`);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'body is not valid JSON');
  }
}

/** `{"subject": "..."}` or `{"jti": "..."}`, optionally with `"ttlS": seconds`. */
export function parseRevocation(body: unknown): { kind: RevocationKind; value: string; ttlS?: number } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'expected a JSON object');
  const b = body as Record<string, unknown>;
  const kinds = (['subject', 'jti'] as const).filter((k) => b[k] !== undefined);
  if (kinds.length !== 1) throw new HttpError(400, 'give exactly one of "subject" or "jti"');
  const kind = kinds[0];
  const value = b[kind];
  if (typeof value !== 'string' || value === '' || value.length > MAX_VALUE_LENGTH) {
    throw new HttpError(400, `"${kind}" must be a non-empty string of at most ${MAX_VALUE_LENGTH} characters`);
  }
  let ttlS: number | undefined;
  if (b.ttlS !== undefined && b.ttlS !== null) {
    if (typeof b.ttlS !== 'number' || !Number.isInteger(b.ttlS) || b.ttlS <= 0) throw new HttpError(400, '"ttlS" must be a positive whole number of seconds');
    ttlS = b.ttlS;
  }
  return { kind, value, ttlS };
}

function send(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers }).end(JSON.stringify(body));
}

// ---- will explanations ---------------------------------------------------------------------

export interface WillExplainInput {
  readonly record: WillRecord;
  /** Set when the will is waiting for its delay (its connection is gone). */
  readonly pendingDueAtMs?: number;
  /** Set when the will's connection is live. */
  readonly attachedTo?: { readonly node: string; readonly listener?: string; readonly remoteAddress?: string; readonly connectedSinceMs?: number };
  /** The decision the will would get if it fired now (willAuthorizedAtFire). */
  readonly verdict: Verdict;
  readonly willAuthz: string;
  readonly owner: { readonly node: string; readonly lease: string; readonly leaseExpiresAtMs?: number };
  readonly nowMs: number;
}

const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());

/** Why a will would or would not be published now, from the stored record only (never its payload). */
export function explainWillRecord(input: WillExplainInput): WillExplanation {
  const { record, verdict, nowMs } = input;
  const id: Identity = record.identity;
  const m = record.message;
  return {
    clientId: record.clientId,
    state: input.pendingDueAtMs !== undefined ? 'pending' : 'attached',
    will: {
      topic: m.topic,
      qos: m.qos,
      retain: m.retain,
      delayS: record.delayS,
      payloadBytes: m.payload.length,
      messageExpiryS: record.messageExpiryS ?? null,
      protocolVersion: record.protocolVersion,
    },
    authorization: {
      username: id.username,
      roles: [...id.roles],
      jti: id.jti ?? null,
      kid: id.kid ?? null,
      certSubject: id.certSubject ?? null,
      authenticatedAt: new Date(id.authenticatedAtMs).toISOString(),
      tokenExpiresAt: iso(id.expiresAtMs),
      tokenExpired: id.expiresAtMs !== undefined && id.expiresAtMs <= nowMs,
    },
    decisionIfFiredNow: {
      allowed: verdict.allowed,
      reason: verdict.allowed ? 'allowed' : verdict.reason,
      explanation: explainVerdict(verdict, input.willAuthz),
      willAuthz: input.willAuthz,
    },
    pending: input.pendingDueAtMs === undefined ? null : { dueAt: new Date(input.pendingDueAtMs).toISOString(), dueInMs: Math.max(0, input.pendingDueAtMs - nowMs) },
    attachedTo: input.attachedTo
      ? { node: input.attachedTo.node, listener: input.attachedTo.listener, remoteAddress: input.attachedTo.remoteAddress, connectedSince: iso(input.attachedTo.connectedSinceMs) ?? undefined }
      : null,
    owner: { node: input.owner.node, lease: input.owner.lease, leaseExpiresAt: iso(input.owner.leaseExpiresAtMs) },
  };
}

export function explainVerdict(verdict: Verdict, willAuthz: string): string {
  if (verdict.allowed) {
    return willAuthz === 'connect'
      ? 'would be published: VIGIL_WILL_AUTHZ=connect checks the will only at CONNECT, and the identity is not revoked'
      : 'would be published: the identity proven at CONNECT is not revoked and the current policy allows publishing to the will topic';
  }
  switch (verdict.reason) {
    case 'revoked':
      return 'would NOT be published: the subject or token id (jti) of the identity has been revoked';
    case 'authorization_error':
      return 'would NOT be published: the policy could not be evaluated';
    default:
      return `would NOT be published: the current policy denies publishing to the will topic (${verdict.reason})`;
  }
}

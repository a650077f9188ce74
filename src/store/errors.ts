// Lua script statuses and the typed failures of the state stores, in one place. Every script
// answers with a status string as the first element of its reply. SCRIPT_OUTCOMES lists, per
// script, the statuses that are ordinary outcomes ('fire', 'scheduled', 'none', ...): the
// caller gets them back as a typed union (scriptStatus) and handles each. Every other status
// is a failure, thrown as one of the errors below (statusError), and caught where it means
// something: StaleEpochError by the cluster side (the session moved on), LeaseReapedError /
// LeaseLapsedError by the membership (rejoin as a new member), RetainedFencedError by the
// retained store (an old incarnation's write, counted and ignored), ClientIdHeldError at
// CONNECT (0x85).

export class StoreError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** The caller's incarnation (epoch) is no longer the owner: another CONNECT claimed the client. */
export class StaleEpochError extends StoreError {
  constructor(readonly clientId: string, readonly epoch: number) {
    super('stale_epoch', `client ${clientId}: epoch ${epoch} is no longer the owner`);
  }
}

/** This node's lease was reaped by a survivor: it owns nothing and must rejoin as a new member. */
export class LeaseReapedError extends StoreError {
  constructor(readonly member: string) {
    super('lease_reaped', `node lease ${member} was reaped`);
  }
}

/** This node's lease expired before the renewal reached Redis: treated exactly like a reap. */
export class LeaseLapsedError extends StoreError {
  constructor(readonly member: string) {
    super('lease_lapsed', `node lease ${member} lapsed before renewal`);
  }
}

/** A retained write from an older incarnation of the client that wrote the current message. */
export class RetainedFencedError extends StoreError {
  constructor(readonly topic: string, readonly clientId: string, readonly epoch: number) {
    super('retained_fenced', `retained ${topic}: write by ${clientId} epoch ${epoch} is older than the stored one`);
  }
}

/** Another identity's connection, session or pending will holds the client id: the claim changed nothing. */
export class ClientIdHeldError extends StoreError {
  constructor(readonly clientId: string) {
    super('not_owner', `client ${clientId} is held by another identity`);
  }
}

/** A script answered with a status this code does not know (script and code out of step). */
export class UnexpectedScriptReplyError extends StoreError {
  constructor(readonly script: string, readonly reply: unknown) {
    super('unexpected_reply', `script ${script} answered ${JSON.stringify(reply)}`);
  }
}

/** Per script: the statuses that are outcomes for its caller (everything else is a failure). */
export const SCRIPT_OUTCOMES = {
  'bus-reopen': ['created', 'exists', 'gone'],
  'claim-client': ['ok'],
  'claim-due-will': ['fire', 'not_due', 'none'],
  'leave-cluster': ['ok', 'gone'],
  'orphan-client': ['not_owner', 'none', 'fire', 'scheduled'],
  'reap-node': ['won', 'alive', 'gone'],
  'rehome-client': ['ok', 'moved'],
  'renew-lease': ['ok'],
  'route-change': ['ok'],
  'route-snapshot': ['ok'],
  'will-disconnect': ['none', 'fire', 'scheduled'],
  'will-normal-disconnect': ['cancelled', 'none'],
  'retain-set': ['ok'],
  'session-change': ['ok'],
  'session-delete': ['ok'],
  'session-fence': ['ok', 'none'],
  'session-load': ['ok', 'none'],
  'session-pending': ['ok', 'dup', 'none'],
  'session-save': ['ok'],
} as const satisfies Record<string, readonly string[]>;

export type ScriptName = keyof typeof SCRIPT_OUTCOMES;
/** The statuses of a script its caller handles as results. */
export type ScriptOutcome<S extends ScriptName> = (typeof SCRIPT_OUTCOMES)[S][number];
/** The statuses that are failures, whichever script answers them. */
export type FailureStatus = 'stale' | 'reaped' | 'lapsed' | 'fenced' | 'not_owner' | 'error';

export interface StatusContext {
  readonly clientId?: string;
  readonly epoch?: number;
  readonly member?: string;
  readonly topic?: string;
}

/**
 * The status of a script's reply as its typed outcome; a failing status throws its error, one
 * this code does not expect throws UnexpectedScriptReplyError. `only` narrows the outcomes
 * further for one use of a multi-purpose script (session-pending: an append answers ok or dup).
 */
export function scriptStatus<S extends ScriptName, O extends ScriptOutcome<S> = ScriptOutcome<S>>(script: S, reply: unknown, ctx: StatusContext = {}, only?: readonly O[]): O {
  const first: unknown = Array.isArray(reply) ? reply[0] : undefined;
  const status = Buffer.isBuffer(first) ? first.toString('utf8') : String(first ?? '');
  const allowed: readonly string[] = only ?? SCRIPT_OUTCOMES[script];
  if (allowed.includes(status)) return status as O;
  // an outcome of the script that this use of it does not expect is as wrong as an unknown one
  const failure = (SCRIPT_OUTCOMES[script] as readonly string[]).includes(status) ? undefined : statusError(script, status as FailureStatus, ctx);
  throw failure ?? new UnexpectedScriptReplyError(script, reply);
}

/** The error for a failing script status. */
function statusError(script: string, status: FailureStatus, ctx: StatusContext = {}): StoreError | undefined {
  switch (status) {
    case 'stale':
      return new StaleEpochError(ctx.clientId ?? '?', ctx.epoch ?? -1);
    case 'reaped':
      return new LeaseReapedError(ctx.member ?? '?');
    case 'lapsed':
      return new LeaseLapsedError(ctx.member ?? '?');
    case 'fenced':
      return new RetainedFencedError(ctx.topic ?? '?', ctx.clientId ?? '?', ctx.epoch ?? -1);
    case 'not_owner':
      return new ClientIdHeldError(ctx.clientId ?? '?');
    case 'error':
      return new UnexpectedScriptReplyError(script, status);
    default:
      return undefined; // not a failure status this code knows: the caller reports the reply
  }
}

// Typed failures of the state stores. The Lua scripts answer with a status string as the
// first element of their reply; statusError() below is the one place that turns the failing
// statuses into these errors. Statuses that are ordinary outcomes ('fire', 'scheduled',
// 'none', 'lost', ...) are results, not errors, and are handled by each caller.

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

export interface StatusContext {
  readonly clientId?: string;
  readonly epoch?: number;
  readonly member?: string;
  readonly topic?: string;
}

/** The error for a failing script status, or undefined when the status is a normal outcome. */
export function statusError(script: string, status: string, ctx: StatusContext = {}): StoreError | undefined {
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
      return undefined;
  }
}

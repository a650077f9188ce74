// Wills: held while their delay runs, then published — or not, and then always with a log
// line and a metric saying why. Every will decision goes through willAuthorizedAtFire: the
// identity proven at authentication, the policy in force now and the revocation list. The
// token is never verified again, so a rotated key or an expired token cannot lose a will.
import type { Authenticator, Authorizer, Verdict } from '../auth/types.js';
import type { WillRecord, StoredMessage } from '../store/types.js';
import type { Clock } from '../clock.js';
import { LineBudget, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';

export type WillAuthzMode = 'connect+fire' | 'fire' | 'connect';

export interface WillDeps {
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly authorizer: Authorizer;
  readonly authenticator: Authenticator;
  readonly willAuthz: WillAuthzMode;
  /** Publishes; `epoch` is the will's session incarnation (retained fencing in a cluster). */
  publish(message: StoredMessage, epoch: number): void;
  /** Every decision, published or denied (the console's recent-decisions list). Must not throw. */
  onDecision?(record: WillRecord, verdict: Verdict): void;
}

/** The decision for a will about to fire. Pure apart from reading current policy. */
export function willAuthorizedAtFire(record: WillRecord, deps: Pick<WillDeps, 'authorizer' | 'authenticator' | 'willAuthz'>): Verdict | Promise<Verdict> {
  if (deps.authenticator.isRevoked(record.identity)) return { allowed: false, reason: 'revoked' };
  if (deps.willAuthz === 'connect' || deps.authorizer.allowAll) return { allowed: true };
  return deps.authorizer.check(record.identity, 'publish', record.message.topic);
}

/** "will published" lines a node writes per second before it sums up the rest. */
const PUBLISHED_LINES_PER_S = 100;

interface PendingWill {
  readonly record: WillRecord;
  readonly timer: { cancel(): void };
  readonly dueAtMs: number;
}

export class WillManager {
  private readonly pending = new Map<string, PendingWill>();

  /** Per-will "will published" lines of the current second, and the ones left out (see logPublished). */
  private readonly publishedLines = new LineBudget(PUBLISHED_LINES_PER_S);
  private publishedLeftOut = 0;

  constructor(private readonly deps: WillDeps) {}

  get pendingCount(): number {
    return this.pending.size;
  }

  pendingFor(clientId: string): { record: WillRecord; dueAtMs: number } | undefined {
    return this.pending.get(clientId);
  }

  /** Client ids with a will waiting for its delay (the console's fleet and will views). */
  pendingIds(): IterableIterator<string> {
    return this.pending.keys();
  }

  /**
   * The connection ended without a normal DISCONNECT: the will goes at the earlier of its
   * delay and the end of the session [MQTT-3.1.3-9].
   */
  disconnected(record: WillRecord, sessionExpiryS: number): void {
    this.cancel(record.clientId, 'replaced');
    // the 3.1.1 grace (VIGIL_WILL_GRACE_MS) is Vigil's, not the session's: it is not cut short by the session ending
    const delayS = record.protocolVersion === 5 ? Math.min(record.delayS, sessionExpiryS) : record.delayS;
    if (delayS <= 0) {
      void this.fire(record);
      return;
    }
    const ms = delayS * 1000;
    const timer = this.deps.clock.setTimeout(() => {
      this.pending.delete(record.clientId);
      this.deps.metrics.willsPending.set(this.pending.size);
      void this.fire(record);
    }, ms);
    this.pending.set(record.clientId, { record, timer, dueAtMs: this.deps.clock.now() + ms });
    this.deps.metrics.willsPending.set(this.pending.size);
  }

  /** A new connection to the session before the delay ended: the will is not sent. */
  cancel(clientId: string, cause: 'reconnect' | 'replaced' | 'normal'): boolean {
    const p = this.pending.get(clientId);
    if (!p) return false;
    p.timer.cancel();
    this.pending.delete(clientId);
    this.deps.metrics.willsPending.set(this.pending.size);
    if (cause !== 'replaced') {
      this.deps.metrics.willsCancelledTotal.inc({ cause });
      this.deps.log.info({ clientId, cause }, 'will cancelled');
    }
    return true;
  }

  /** The session ended (expiry, or replaced by a clean start): a pending will goes now. */
  sessionEnded(clientId: string): void {
    const p = this.pending.get(clientId);
    if (!p || p.record.protocolVersion !== 5) return;
    p.timer.cancel();
    this.pending.delete(clientId);
    this.deps.metrics.willsPending.set(this.pending.size);
    void this.fire(p.record);
  }

  /** Fires every pending will now (shutdown keeps nothing pending on a single node). */
  flushAll(): Promise<void>[] {
    const all = [...this.pending.values()];
    this.pending.clear();
    return all.map((p) => {
      p.timer.cancel();
      return this.fire(p.record);
    });
  }

  /**
   * Decides the will (willAuthorizedAtFire) and publishes it or logs and counts the denial,
   * after the caller's turn: a connection closing fires its will once its own teardown is done.
   */
  async fire(record: WillRecord): Promise<void> {
    await undefined;
    return this.fireNow(record);
  }

  /**
   * fire(), deciding at once: a promise only while the verdict is computed off the main thread
   * (a cached verdict, allow-all or connect-only decide synchronously). For callers with nothing
   * of their own in progress — a reaper publishing 10,000 wills from Redis replies saves a
   * promise and a microtask each. Exactly as fire() otherwise.
   */
  fireNow(record: WillRecord): void | Promise<void> {
    let verdict: Verdict | Promise<Verdict>;
    try {
      verdict = willAuthorizedAtFire(record, this.deps);
    } catch (err) {
      verdict = Promise.reject(err);
    }
    if (typeof (verdict as Promise<Verdict>).then !== 'function') return this.decided(record, verdict as Verdict);
    return (verdict as Promise<Verdict>).then(
      (v) => this.decided(record, v),
      (err: unknown) => {
        this.deps.log.error({ clientId: record.clientId, err: (err as Error).message }, 'will authorization failed');
        this.decided(record, { allowed: false, reason: 'authorization_error' });
      },
    );
  }

  private decided(record: WillRecord, verdict: Verdict): void {
    const m = record.message;
    this.deps.onDecision?.(record, verdict);
    if (!verdict.allowed) {
      this.deps.metrics.willsDeniedTotal.inc({ reason: verdict.reason });
      this.deps.log.warn({ clientId: record.clientId, username: record.identity.username, topic: m.topic, reason: verdict.reason }, 'will denied');
      return;
    }
    this.deps.metrics.willsFiredTotal.inc();
    this.logPublished(record);
    // the Message Expiry Interval of a will counts from when it is published (MQTT 5 §3.1.3.2.4)
    const expiresAtMs = record.messageExpiryS === undefined ? undefined : this.deps.clock.now() + record.messageExpiryS * 1000;
    // a literal of the shape a client's PUBLISH gets (handlers/publish.ts), not a spread: the
    // delivery path (routing, queue, encoder) then sees one object shape for both, where a
    // spread copy, grown afterwards by the cluster's message id, cost a reaper per will
    const message: StoredMessage = { topic: m.topic, payload: m.payload, qos: m.qos, retain: m.retain, properties: m.properties, expiresAtMs, origin: m.origin };
    if (m.id !== undefined) message.id = m.id;
    if (m.publisher !== undefined) message.publisher = m.publisher;
    this.deps.publish(message, record.epoch);
  }

  /**
   * One info line per will, up to PUBLISHED_LINES_PER_S a second; past that, one line at the
   * end of the second says how many more were published. A node reaping 10,000 wills of a
   * dead node spent about 8 % of its CPU writing a line for each; the metric
   * (vigil_wills_fired_total) and the console still count every one. Denied wills are
   * always logged one by one (there are few, and each says why).
   */
  private logPublished(record: WillRecord): void {
    const now = this.deps.clock.now();
    if (this.publishedLines.take(now)) {
      this.deps.log.info({ clientId: record.clientId, username: record.identity.username, topic: record.message.topic }, 'will published');
      return;
    }
    if (this.publishedLeftOut++ === 0) {
      this.deps.clock.setTimeout(() => {
        this.deps.log.info({ count: this.publishedLeftOut }, 'more wills published (one line per will is kept to the first 100 a second)');
        this.publishedLeftOut = 0;
      }, this.publishedLines.msLeft(now));
    }
  }
}

// Trying again something whose only copy is ours: a will nobody will send again, a dead node's
// undelivered message. The attempt runs after `firstMs`, then twice as long each time up to
// `maxDelayMs`, while it fails, until the next try would end past `forMs` after the first
// failure; then the caller hears it gave up (and counts and logs the loss).
import type { Clock } from '../clock.js';

export interface Backoff {
  readonly firstMs: number;
  readonly maxDelayMs: number;
  readonly forMs: number;
}

export interface RetryEvents {
  /** A try is scheduled `delayMs` from now (the first one: delayMs === firstMs). */
  retrying?(err: unknown, delayMs: number): void;
  /** A try succeeded, `afterMs` after the first failure. */
  succeeded?(afterMs: number): void;
  gaveUp(err: unknown, forMs: number): void;
}

/** `attempt` failed with `err` just now: tries it again as above. */
export function retryWithBackoff(clock: Clock, backoff: Backoff, attempt: () => void | Promise<void>, err: unknown, events: RetryEvents): void {
  const firstFailedAtMs = clock.now();
  const failed = (e: unknown, delayMs: number): void => {
    const elapsed = clock.now() - firstFailedAtMs;
    if (elapsed + delayMs > backoff.forMs) return events.gaveUp(e, elapsed);
    events.retrying?.(e, delayMs);
    clock.setTimeout(() => {
      let again: void | Promise<void>;
      try {
        again = attempt();
      } catch (thrown) {
        again = Promise.reject(thrown);
      }
      Promise.resolve(again).then(
        () => events.succeeded?.(clock.now() - firstFailedAtMs),
        (next: unknown) => failed(next, Math.min(delayMs * 2, backoff.maxDelayMs)),
      );
    }, delayMs);
  };
  failed(err, backoff.firstMs);
}

// Bounded per-key limiters for hostile traffic: a token bucket for new connections per
// source address, and a failure counter with exponential back-off for authentication
// failures per address and per username. Both keep at most `maxKeys` keys (oldest first
// out), so a flood of distinct addresses cannot grow memory without bound.

/** A Map used as an LRU: re-inserting a key moves it to the end; the first key is the oldest. */
class BoundedMap<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly maxKeys: number) {}

  get(key: string): V | undefined {
    return this.map.get(key);
  }

  set(key: string, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.maxKeys) this.map.delete(this.map.keys().next().value as string);
  }

  delete(key: string): void {
    this.map.delete(key);
  }

  get size(): number {
    return this.map.size;
  }
}

interface Bucket {
  tokens: number;
  atMs: number;
}

/** Token bucket per key: `ratePerS` sustained, `burst` at once. A rate of 0 turns it off. */
export class RateLimiter {
  private readonly buckets: BoundedMap<Bucket>;

  constructor(private readonly ratePerS: number, private readonly burst: number, maxKeys = 100_000) {
    this.buckets = new BoundedMap(maxKeys);
  }

  get trackedKeys(): number {
    return this.buckets.size;
  }

  /** False when the limit is off: callers may skip working out the key. */
  get enabled(): boolean {
    return this.ratePerS > 0;
  }

  /** Takes one token; false when the key is over its rate. */
  take(key: string, nowMs: number): boolean {
    if (this.ratePerS <= 0) return true;
    const b = this.buckets.get(key) ?? { tokens: this.burst, atMs: nowMs };
    b.tokens = Math.min(this.burst, b.tokens + ((nowMs - b.atMs) / 1000) * this.ratePerS);
    b.atMs = nowMs;
    const ok = b.tokens >= 1;
    if (ok) b.tokens -= 1;
    this.buckets.set(key, b);
    return ok;
  }
}

interface FailureState {
  failures: number;
  windowStartMs: number;
  blockedUntilMs: number;
  /** Consecutive blocks: each doubles the back-off. */
  strikes: number;
}

/**
 * Authentication failures per key. More than `maxFailures` within `windowMs` blocks the key
 * for `baseBlockMs`, doubling with each further block up to `maxBlockMs`; a success clears it.
 */
export class FailureLimiter {
  private readonly state: BoundedMap<FailureState>;

  constructor(
    private readonly maxFailures: number,
    private readonly windowMs = 60_000,
    private readonly baseBlockMs = 1_000,
    private readonly maxBlockMs = 300_000,
    maxKeys = 100_000,
  ) {
    this.state = new BoundedMap(maxKeys);
  }

  get trackedKeys(): number {
    return this.state.size;
  }

  /** False when no key can be blocked now (off, or no failures tracked): callers may skip working out the key. */
  get active(): boolean {
    return this.maxFailures > 0 && this.state.size > 0;
  }

  /** Milliseconds the key stays blocked, 0 when it may try. */
  blockedFor(key: string, nowMs: number): number {
    if (this.maxFailures <= 0) return 0;
    const s = this.state.get(key);
    return s && s.blockedUntilMs > nowMs ? s.blockedUntilMs - nowMs : 0;
  }

  failed(key: string, nowMs: number): void {
    if (this.maxFailures <= 0) return;
    const s = this.state.get(key) ?? { failures: 0, windowStartMs: nowMs, blockedUntilMs: 0, strikes: 0 };
    if (nowMs - s.windowStartMs > this.windowMs) {
      s.failures = 0;
      s.windowStartMs = nowMs;
    }
    s.failures++;
    if (s.failures > this.maxFailures) {
      s.blockedUntilMs = nowMs + Math.min(this.maxBlockMs, this.baseBlockMs * 2 ** s.strikes);
      s.strikes++;
      s.failures = 0;
      s.windowStartMs = nowMs;
    }
    this.state.set(key, s);
  }

  succeeded(key: string): void {
    this.state.delete(key);
  }
}

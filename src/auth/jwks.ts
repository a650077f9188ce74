// The verification key set, from a JWKS file (watched) or URL (cached, refreshed).
//
// Keys are chosen by kid. A key that disappears from the set is *retired*: it keeps verifying
// for jwksRetiredGraceS so tokens signed just before a rotation still work, then it is removed
// and listeners (the verified-token cache) drop what it vouched for. An unknown kid triggers one
// refetch — single-flight, at most once per jwksMinRefreshS — before the token is refused, so a
// key published by the IdP after our last load is picked up without a restart, and a flood of
// tokens with made-up kids cannot turn into a flood of fetches.
//
// A new document that cannot be read or parsed never replaces a good one: the old keys stay
// and the failure is logged and counted.
import { readFile } from 'node:fs/promises';
import { unwatchFile, watchFile, type Stats } from 'node:fs';
import type { JWK } from 'jose';
import { JwksError, parseJwks, readCapped } from './jwks-document.js';
import type { Metrics } from '../metrics.js';
import type { Logger } from '../log.js';
import { keyFitsAlgorithm } from './jwt.js';

export type JwksKeyState = 'active' | 'retired';
export type JwksTrigger = 'startup' | 'file_change' | 'unknown_kid' | 'schedule' | 'manual';

/** The explain view of one key (no key material). */
export interface JwksKeyView {
  readonly kid?: string;
  readonly kty: string;
  readonly alg?: string;
  readonly crv?: string;
  readonly thumbprint: string;
  readonly state: JwksKeyState;
  readonly addedAtMs: number;
  readonly retiredAtMs?: number;
  /** Retired keys: when they stop verifying. */
  readonly verifiesUntilMs?: number;
}

export interface JwksKey extends JwksKeyView {
  readonly jwk: JWK;
}

export type KeySelection =
  | { readonly ok: true; readonly key: JwksKey }
  | { readonly ok: false; readonly reason: 'unknown_kid' | 'missing_kid' | 'alg_not_allowed' };

export interface JwksStoreOptions {
  /** File path, or http(s) URL. */
  readonly source: string;
  readonly minRefreshS: number;
  readonly retiredGraceS: number;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly now?: () => number;
  /** File polling interval (fs.watchFile survives editors that replace the file by rename). */
  readonly watchIntervalMs?: number;
  /** URL: the whole fetch, headers and body, must end within this. */
  readonly fetchTimeoutMs?: number;
  /** URL: largest body read (VIGIL_JWKS_MAX_BYTES); the fetch is abandoned past it. */
  readonly maxBytes?: number;
  /** URL: refresh period when the response has no Cache-Control max-age. */
  readonly refreshIntervalS?: number;
}

const DEFAULT_MAX_JWKS_BYTES = 1024 * 1024;
const MAX_REFRESH_S = 3600;
export class JwksStore {
  /** All known keys by thumbprint. */
  private readonly keys = new Map<string, JwksKey>();
  /** No retired key stops verifying before this (Infinity: none retired); select() runs per CONNECT. */
  private nextExpiryMs = Number.POSITIVE_INFINITY;
  private readonly removedListeners = new Set<(key: JwksKeyView) => void>();
  /** The last load that failed (the previous keys stayed), cleared by the next success; for the console. */
  lastError: { readonly atMs: number; readonly message: string } | undefined;
  private readonly now: () => number;
  private readonly isUrl: boolean;
  private loadedOnce = false;
  private inflight: Promise<boolean> | undefined;
  private rerunFileLoad = false;
  private unknownKidFetch: Promise<void> | undefined;
  private lastUnknownKidFetchMs: number | undefined;
  private etag: string | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private retireTimer: NodeJS.Timeout | undefined;
  private urlFailures = 0;
  private closed = false;
  private readonly onFileChange = (curr: Stats, prev: Stats) => {
    if (curr.mtimeMs !== prev.mtimeMs || curr.size !== prev.size || curr.ino !== prev.ino) void this.reload('file_change');
  };

  private constructor(private readonly options: JwksStoreOptions) {
    this.now = options.now ?? Date.now;
    this.isUrl = /^https?:\/\//i.test(options.source);
  }

  /**
   * Loads the key set. A file that cannot be loaded at start throws (fail fast on a typo); a
   * URL that cannot be fetched at start is logged and retried — the broker comes up and
   * refuses tokens with jwks_unavailable until the IdP answers.
   */
  static async open(options: JwksStoreOptions): Promise<JwksStore> {
    const store = new JwksStore(options);
    if (store.isUrl) {
      await store.reload('startup');
    } else {
      const error = await store.loadFile('startup');
      if (error) throw new JwksError(`VIGIL_JWKS ${options.source}: ${error}`);
      watchFile(options.source, { interval: options.watchIntervalMs ?? 1000, persistent: false }, store.onFileChange);
    }
    return store;
  }

  /** At least one key set has been loaded since start. */
  get loaded(): boolean {
    return this.loadedOnce;
  }

  /** Chooses the key for a token header. Never fetches; see refreshForUnknownKid. */
  select(kid: string | undefined, alg: string): KeySelection {
    this.expireRetired();
    if (kid === undefined) {
      const fitting = [...this.keys.values()].filter((k) => keyFitsAlgorithm(k.jwk, alg));
      if (fitting.length === 1) return { ok: true, key: fitting[0]! };
      return { ok: false, reason: fitting.length === 0 ? 'unknown_kid' : 'missing_kid' };
    }
    let sawKid = false;
    let retiredFit: JwksKey | undefined;
    for (const key of this.keys.values()) {
      if (key.kid !== kid) continue;
      sawKid = true;
      if (!keyFitsAlgorithm(key.jwk, alg)) continue;
      if (key.state === 'active') return { ok: true, key };
      retiredFit ??= key;
    }
    if (retiredFit) return { ok: true, key: retiredFit };
    return { ok: false, reason: sawKid ? 'alg_not_allowed' : 'unknown_kid' };
  }

  /** Whether a key (by thumbprint) still verifies: active, or retired within its grace. */
  isVerifying(thumbprint: string): boolean {
    this.expireRetired();
    return this.keys.has(thumbprint);
  }

  /**
   * Refetches once for an unknown kid. Concurrent callers share one fetch; after a fetch,
   * further calls within jwksMinRefreshS return at once without fetching.
   */
  refreshForUnknownKid(): Promise<void> {
    if (this.unknownKidFetch) return this.unknownKidFetch;
    const now = this.now();
    if (this.lastUnknownKidFetchMs !== undefined && now - this.lastUnknownKidFetchMs < this.options.minRefreshS * 1000) {
      return Promise.resolve();
    }
    this.lastUnknownKidFetchMs = now;
    this.unknownKidFetch = this.reload('unknown_kid').then(
      () => undefined,
      () => undefined,
    ).finally(() => {
      this.unknownKidFetch = undefined;
    });
    return this.unknownKidFetch;
  }

  /** Reloads now (admin API, SIGHUP). Resolves true when a new key set was applied. */
  reload(trigger: JwksTrigger = 'manual'): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (this.inflight) {
      // A file changed while we were reading it: read it again once the current load ends.
      if (!this.isUrl && trigger === 'file_change') this.rerunFileLoad = true;
      return this.inflight;
    }
    const run = async (): Promise<boolean> => {
      let applied = false;
      do {
        this.rerunFileLoad = false;
        applied = this.isUrl ? await this.loadUrl(trigger) : (await this.loadFile(trigger)) === undefined;
      } while (this.rerunFileLoad && !this.closed);
      return applied;
    };
    this.inflight = run().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  onKeyRemoved(listener: (key: JwksKeyView) => void): () => void {
    this.removedListeners.add(listener);
    return () => this.removedListeners.delete(listener);
  }

  describe(): JwksKeyView[] {
    this.expireRetired();
    return [...this.keys.values()].map(({ jwk: _jwk, ...view }) => view);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (!this.isUrl) unwatchFile(this.options.source, this.onFileChange);
    clearTimeout(this.refreshTimer);
    clearTimeout(this.retireTimer);
    this.removedListeners.clear();
    await this.inflight?.catch(() => undefined);
  }

  // -------------------------------------------------------------------------------------

  /** Returns an error message, or undefined when the file was applied. */
  private async loadFile(trigger: JwksTrigger): Promise<string | undefined> {
    const { metrics, logger, source } = this.options;
    try {
      const text = await readFile(source, 'utf8');
      await this.apply(text, trigger);
      metrics.jwksRefreshesTotal.inc({ trigger, outcome: 'ok' });
      this.lastError = undefined;
      return undefined;
    } catch (err) {
      const message = err instanceof JwksError ? err.message : (err as NodeJS.ErrnoException).code ?? String(err);
      this.lastError = { atMs: this.now(), message };
      metrics.jwksRefreshesTotal.inc({ trigger, outcome: 'error' });
      logger.error({ jwks: source, trigger, err: message, keptKeys: this.keys.size }, 'JWKS file not loaded; keeping the previous keys');
      return message;
    }
  }

  private async loadUrl(trigger: JwksTrigger): Promise<boolean> {
    const { metrics, logger, source } = this.options;
    let nextRefreshS = Math.min(MAX_REFRESH_S, Math.max(this.options.minRefreshS, this.options.refreshIntervalS ?? 300));
    let applied = false;
    try {
      const response = await fetch(source, {
        headers: this.etag ? { 'if-none-match': this.etag, accept: 'application/json' } : { accept: 'application/json' },
        // A redirect could leave https or loopback; the operator should configure the final URL.
        redirect: 'error',
        signal: AbortSignal.timeout(this.options.fetchTimeoutMs ?? 5000),
      });
      const maxAge = /max-age=(\d+)/i.exec(response.headers.get('cache-control') ?? '')?.[1];
      if (maxAge !== undefined) nextRefreshS = Math.min(MAX_REFRESH_S, Math.max(this.options.minRefreshS, Number(maxAge), 1));
      if (response.status === 304) {
        metrics.jwksRefreshesTotal.inc({ trigger, outcome: 'not_modified' });
        await response.body?.cancel();
      } else {
        if (!response.ok) {
          await response.body?.cancel();
          throw new JwksError(`HTTP ${response.status}`);
        }
        const text = await readCapped(response, this.options.maxBytes ?? DEFAULT_MAX_JWKS_BYTES);
        await this.apply(text, trigger);
        this.etag = response.headers.get('etag') ?? undefined;
        metrics.jwksRefreshesTotal.inc({ trigger, outcome: 'ok' });
        applied = true;
      }
      this.urlFailures = 0;
      this.lastError = undefined;
    } catch (err) {
      this.urlFailures++;
      // Retry sooner after a failure, backing off: 5 s, 10 s, 20 s ... up to the normal period.
      nextRefreshS = Math.min(nextRefreshS, 5 * 2 ** Math.min(this.urlFailures - 1, 10));
      const message = err instanceof JwksError ? err.message : (err as Error).name === 'TimeoutError' ? 'timed out' : String((err as Error).cause ?? err);
      this.lastError = { atMs: this.now(), message };
      metrics.jwksRefreshesTotal.inc({ trigger, outcome: 'error' });
      logger.error({ jwks: source, trigger, err: message, keptKeys: this.keys.size, retryInS: nextRefreshS }, 'JWKS fetch failed; keeping the previous keys');
    }
    if (!this.closed) {
      clearTimeout(this.refreshTimer);
      this.refreshTimer = setTimeout(() => void this.reload('schedule'), nextRefreshS * 1000).unref();
    }
    return applied;
  }

  private async apply(text: string, trigger: JwksTrigger): Promise<void> {
    const { keys: parsed, skipped } = await parseJwks(text);
    const { logger, source, retiredGraceS } = this.options;
    for (const reason of skipped) logger.warn({ jwks: source, reason }, 'JWKS key ignored');
    // an empty set (an IdP mid-deploy, a truncated file) would refuse every token at once:
    // it is a failed load like a parse error, and the keys in use stay
    if (parsed.length === 0) throw new JwksError(skipped.length > 0 ? `no usable signing key (${skipped.length} ignored)` : 'no signing keys');
    const now = this.now();
    const incoming = new Map(parsed.map((k) => [k.thumbprint, k]));
    const removed: JwksKey[] = [];
    for (const [thumbprint, key] of this.keys) {
      if (incoming.has(thumbprint)) continue;
      if (key.state === 'retired') continue; // already counting down
      if (retiredGraceS > 0) {
        this.keys.set(thumbprint, { ...key, state: 'retired', retiredAtMs: now, verifiesUntilMs: now + retiredGraceS * 1000 });
      } else {
        this.keys.delete(thumbprint);
        removed.push(key);
      }
    }
    for (const { jwk, thumbprint } of parsed) {
      const existing = this.keys.get(thumbprint);
      if (existing?.state === 'active') continue;
      this.keys.set(thumbprint, {
        kid: jwk.kid,
        kty: jwk.kty!,
        alg: jwk.alg,
        crv: jwk.crv,
        thumbprint,
        jwk,
        state: 'active',
        addedAtMs: existing?.addedAtMs ?? now,
      });
    }
    this.loadedOnce = true;
    logger.info({ jwks: source, trigger, keys: this.describeForLog() }, 'JWKS loaded');
    for (const key of removed) this.emitRemoved(key);
    this.scheduleRetirement();
    this.updateGauges();
  }

  private describeForLog(): string[] {
    return [...this.keys.values()].map((k) => `${k.kid ?? k.thumbprint}:${k.state}`);
  }

  private expireRetired(): void {
    const now = this.now();
    // the common case, no retired key due: a clock read, not a walk over the keys per CONNECT
    if (now < this.nextExpiryMs) return;
    let changed = false;
    let next = Number.POSITIVE_INFINITY;
    for (const [thumbprint, key] of this.keys) {
      if (key.state !== 'retired' || key.verifiesUntilMs === undefined) continue;
      if (key.verifiesUntilMs <= now) {
        this.keys.delete(thumbprint);
        this.emitRemoved(key);
        changed = true;
      } else {
        next = Math.min(next, key.verifiesUntilMs);
      }
    }
    this.nextExpiryMs = next;
    if (changed) this.updateGauges();
  }

  private scheduleRetirement(): void {
    clearTimeout(this.retireTimer);
    const until = [...this.keys.values()].map((k) => k.verifiesUntilMs ?? Infinity);
    const next = Math.min(...until);
    this.nextExpiryMs = next;
    if (!Number.isFinite(next) || this.closed) return;
    this.retireTimer = setTimeout(() => {
      this.expireRetired();
      this.scheduleRetirement();
    }, Math.max(0, next - this.now()) + 10).unref();
  }

  private emitRemoved(key: JwksKey): void {
    this.options.logger.info({ jwks: this.options.source, kid: key.kid, thumbprint: key.thumbprint }, 'JWKS key removed; it no longer verifies');
    const { jwk: _jwk, ...view } = key;
    for (const listener of this.removedListeners) listener(view);
  }

  private updateGauges(): void {
    let active = 0;
    let retired = 0;
    for (const key of this.keys.values()) {
      if (key.state === 'active') active++;
      else retired++;
    }
    this.options.metrics.jwksKeys.set({ state: 'active' }, active);
    this.options.metrics.jwksKeys.set({ state: 'retired' }, retired);
  }
}

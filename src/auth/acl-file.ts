// The ACL policy file (VIGIL_ACL): YAML or JSON, validated and compiled on load, watched and
// hot-reloaded. A file that fails to load at start stops the broker (fail fast on a typo); a
// file that fails on reload keeps the previous policy, logs the error and counts
// vigil_acl_reloads_total{outcome="error"}.
import { readFile } from 'node:fs/promises';
import { unwatchFile, watchFile, type Stats } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { AclPolicyError, compilePolicy, type CompiledPolicy } from './acl.js';

export interface LoadedPolicy {
  /** Starts at 1, +1 per successful reload. */
  readonly generation: number;
  readonly policy: CompiledPolicy;
  /** The validated document as JSON, for the worker pool to compile its own copy. */
  readonly json: string;
  readonly loadedAtMs: number;
}

export interface AclPolicyFileOptions {
  readonly path: string;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly watchIntervalMs?: number;
}

export function parsePolicyText(path: string, text: string): { policy: CompiledPolicy; json: string } {
  let doc: unknown;
  try {
    doc = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new AclPolicyError(`not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message.split('\n')[0]}`);
  }
  const policy = compilePolicy(doc);
  return { policy, json: JSON.stringify(doc ?? {}) };
}

export class AclPolicyFile {
  private loaded: LoadedPolicy;
  private readonly listeners = new Set<(policy: LoadedPolicy) => void>();
  private inflight: Promise<boolean> | undefined;
  private rerun = false;
  private closed = false;
  /** The last reload that failed (the previous policy stayed), cleared by the next success; for the console. */
  lastError: { readonly atMs: number; readonly message: string } | undefined;
  private readonly onFileChange = (curr: Stats, prev: Stats) => {
    if (curr.mtimeMs !== prev.mtimeMs || curr.size !== prev.size || curr.ino !== prev.ino) void this.reload();
  };

  private constructor(private readonly options: AclPolicyFileOptions, first: LoadedPolicy) {
    this.loaded = first;
  }

  static async open(options: AclPolicyFileOptions): Promise<AclPolicyFile> {
    let parsed: { policy: CompiledPolicy; json: string };
    try {
      parsed = parsePolicyText(options.path, await readFile(options.path, 'utf8'));
    } catch (err) {
      options.metrics.aclReloadsTotal.inc({ outcome: 'error' });
      throw new AclPolicyError(`VIGIL_ACL ${options.path}: ${describeError(err)}`);
    }
    options.metrics.aclReloadsTotal.inc({ outcome: 'ok' });
    const file = new AclPolicyFile(options, { generation: 1, ...parsed, loadedAtMs: Date.now() });
    options.logger.info({ acl: options.path, roles: Object.keys(parsed.policy.roles) }, 'ACL policy loaded');
    watchFile(options.path, { interval: options.watchIntervalMs ?? 1000, persistent: false }, file.onFileChange);
    return file;
  }

  get current(): LoadedPolicy {
    return this.loaded;
  }

  onReload(listener: (policy: LoadedPolicy) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Reads the file again (also called by the watcher). Resolves true when a new policy was applied. */
  reload(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (this.inflight) {
      this.rerun = true;
      return this.inflight;
    }
    const run = async (): Promise<boolean> => {
      let applied = false;
      do {
        this.rerun = false;
        applied = await this.loadOnce();
      } while (this.rerun && !this.closed);
      return applied;
    };
    this.inflight = run().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  async close(): Promise<void> {
    this.closed = true;
    unwatchFile(this.options.path, this.onFileChange);
    this.listeners.clear();
    await this.inflight?.catch(() => undefined);
  }

  private async loadOnce(): Promise<boolean> {
    const { path, logger, metrics } = this.options;
    try {
      const parsed = parsePolicyText(path, await readFile(path, 'utf8'));
      this.loaded = { generation: this.loaded.generation + 1, ...parsed, loadedAtMs: Date.now() };
    } catch (err) {
      metrics.aclReloadsTotal.inc({ outcome: 'error' });
      this.lastError = { atMs: Date.now(), message: describeError(err) };
      logger.error({ acl: path, err: describeError(err), keptGeneration: this.loaded.generation }, 'ACL policy not reloaded; keeping the previous policy');
      return false;
    }
    metrics.aclReloadsTotal.inc({ outcome: 'ok' });
    this.lastError = undefined;
    logger.info({ acl: path, generation: this.loaded.generation, roles: Object.keys(this.loaded.policy.roles) }, 'ACL policy reloaded');
    for (const listener of this.listeners) listener(this.loaded);
    return true;
  }
}

function describeError(err: unknown): string {
  if (err instanceof AclPolicyError) return err.message;
  return (err as NodeJS.ErrnoException).code ?? String(err);
}

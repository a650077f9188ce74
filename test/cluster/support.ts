// Shared bits of the cluster tests: Redis connections with a random key prefix, waiting
// for a condition, collecting what must be closed.
import { VigilRedis, type RedisTarget } from '../../src/redis/connection.js';
import { ClusterKeys } from '../../src/cluster/keys.js';
import { createMetrics } from '../../src/metrics.js';
import { randomPrefix } from '../helpers/redis.js';
import type { StoredMessage, WillRecord } from '../../src/store/types.js';

export class Closer {
  private readonly fns: (() => unknown)[] = [];
  add<T>(value: T, close: (v: T) => unknown): T {
    this.fns.push(() => close(value));
    return value;
  }
  redis(target: RedisTarget): VigilRedis {
    return this.add(new VigilRedis({ target, metrics: createMetrics('test', { processMetrics: false }), commandTimeoutMs: 5000 }), (r) => r.close());
  }
  async closeAll(): Promise<void> {
    for (const fn of this.fns.splice(0).reverse()) {
      try {
        await fn();
      } catch {
        // best effort
      }
    }
  }
}

export function newKeys(name = 't'): ClusterKeys {
  return new ClusterKeys(randomPrefix(name));
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

export function message(topic: string, payload: string | Buffer, extra: Partial<StoredMessage> = {}): StoredMessage {
  return { topic, payload: Buffer.isBuffer(payload) ? payload : Buffer.from(payload), qos: 1, retain: true, origin: 'c1', ...extra };
}

export function will(clientId: string, delayS: number, payload = 'down'): WillRecord {
  return {
    clientId,
    message: { topic: `status/${clientId}`, payload: Buffer.from(payload), qos: 1, retain: true, origin: clientId },
    delayS,
    identity: { username: 'u', clientId, roles: ['device'], authenticatedAtMs: 1 },
    epoch: 0,
    protocolVersion: 5,
  };
}

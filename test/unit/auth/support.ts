// Shared bits of the identity unit tests: a private metrics registry, a logger whose lines
// can be inspected (to prove tokens never reach them), a polling wait and a config builder.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { createMetrics, type Metrics } from '../../../src/metrics.js';
import type { Logger } from '../../../src/log.js';
import type { IdentityConfig } from '../../../src/auth/index.js';

export function testMetrics(): Metrics {
  return createMetrics('test', { processMetrics: false });
}

export function captureLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { logger: pino({ level: 'trace' }, stream), lines };
}

export async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function identityConfig(overrides: Partial<IdentityConfig> = {}): IdentityConfig {
  return {
    auth: 'jwt',
    acl: '',
    authWorkers: 1,
    authQueueMax: 1000,
    authAdmissionMax: 50000,
    authAdmissionBytes: 67108864,
    jwks: '',
    jwtSecret: '',
    jwtIssuer: '',
    jwtAudience: '',
    jwtClockToleranceS: 30,
    jwtAlgorithms: ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'],
    jwtUsernameClaim: 'sub',
    jwtRolesClaim: 'roles',
    jwksMinRefreshS: 30,
    jwksRetiredGraceS: 0,
    jwksMaxBytes: 1048576,
    ...overrides,
  };
}

/** Reads one labelled value of a counter or gauge. */
export async function metricValue(metrics: Metrics, name: keyof Metrics, labels: Record<string, string> = {}): Promise<number> {
  const metric = metrics[name] as unknown as { get(): Promise<{ values: { labels: Record<string, string | number>; value: number }[] }> };
  const { values } = await metric.get();
  return values.filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)).reduce((sum, v) => sum + v.value, 0);
}

// Starts a real Vigil broker in this process on free loopback ports, for integration tests.
import { Writable } from 'node:stream';
import { VigilServer } from '../../src/server.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createLogger } from '../../src/log.js';

export interface TestBroker {
  readonly server: VigilServer;
  readonly port: number;
  readonly metricsPort: number;
  readonly url: string;
  /** Parsed JSON log lines, when started with captureLogs. */
  readonly logs: Record<string, unknown>[];
  /** Current value of a metric series (labels must match exactly those given), 0 when absent. */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  close(): Promise<void>;
}

export interface StartOptions {
  /** Keep log lines (level info and up) in `logs` instead of discarding them. */
  readonly captureLogs?: boolean;
}

export async function startBroker(overrides: Partial<Config> = {}, options: StartOptions = {}): Promise<TestBroker> {
  const config = loadConfig({
    env: {},
    overrides: { mqttPort: 0, metricsPort: 0, bind: '127.0.0.1', metricsBind: '127.0.0.1', logLevel: 'silent', sysIntervalS: 0, ...overrides },
  });
  const logs: Record<string, unknown>[] = [];
  let logger;
  if (options.captureLogs) {
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const line of chunk.toString().split('\n')) if (line.trim()) logs.push(JSON.parse(line));
        cb();
      },
    });
    logger = createLogger(overrides.logLevel && overrides.logLevel !== 'silent' ? overrides.logLevel : 'info', config.nodeId, sink);
  }
  const server = new VigilServer(config, { logger });
  await server.start();
  return {
    server,
    port: server.mqttPort,
    metricsPort: server.metricsPort,
    url: `mqtt://127.0.0.1:${server.mqttPort}`,
    logs,
    async metric(name, labels = {}) {
      const all = await server.metrics.registry.getMetricsAsJSON();
      const m = all.find((x) => x.name === name);
      if (!m) return 0;
      const want = Object.entries(labels);
      let sum = 0;
      for (const v of m.values as { value: number; labels: Record<string, string | number>; metricName?: string }[]) {
        if (v.metricName && v.metricName !== name && !v.metricName.endsWith('_count')) continue;
        if (want.every(([k, val]) => String(v.labels[k]) === val)) sum += v.value;
      }
      return sum;
    },
    close: () => server.stop(),
  };
}

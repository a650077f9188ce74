// Starts a real Vigil broker in this process on free loopback ports, for integration tests.
import { VigilServer } from '../../src/server.js';
import { loadConfig, type Config } from '../../src/config.js';

export interface TestBroker {
  readonly server: VigilServer;
  readonly port: number;
  readonly metricsPort: number;
  readonly url: string;
  close(): Promise<void>;
}

export async function startBroker(overrides: Partial<Config> = {}): Promise<TestBroker> {
  const config = loadConfig({
    env: {},
    overrides: { mqttPort: 0, metricsPort: 0, bind: '127.0.0.1', metricsBind: '127.0.0.1', logLevel: 'silent', sysIntervalS: 0, ...overrides },
  });
  const server = new VigilServer(config);
  await server.start();
  return {
    server,
    port: server.mqttPort,
    metricsPort: server.metricsPort,
    url: `mqtt://127.0.0.1:${server.mqttPort}`,
    close: () => server.stop(),
  };
}

// A ChannelContext built the way src/server.ts builds one (broker, metrics, anonymous
// authenticator, allow-all authorizer), for tests that drive a listener or the transport
// without a whole VigilServer.
import { FailureLimiter } from '../../src/limits/rate-limiter.js';
import type { Authenticator, Authorizer } from '../../src/auth/types.js';
import { Broker } from '../../src/broker/broker.js';
import { systemClock, type Clock } from '../../src/clock.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { createMetrics } from '../../src/metrics.js';
import type { ChannelContext } from '../../src/protocol/channel.js';
import { MemoryRetainedStore } from '../../src/store/memory/retained.js';

export interface TestContext {
  readonly ctx: ChannelContext;
  close(): void;
}

export function createTestContext(overrides: Partial<Config> = {}, options: { clock?: Clock } = {}): TestContext {
  const config = loadConfig({ env: {}, overrides: { mqttPort: 0, metricsPort: 0, bind: '127.0.0.1', logLevel: 'silent', sysIntervalS: 0, ...overrides } });
  const clock = options.clock ?? systemClock;
  const log = createLogger(config.logLevel, config.nodeId);
  const metrics = createMetrics(config.nodeId, { processMetrics: false });
  // like server.ts's anonymous authenticator, and keeps the certificate subject so tests can see it
  const authenticator: Authenticator = {
    mode: 'none',
    authenticate: (req) => ({
      ok: true,
      identity: { username: req.username ?? '', clientId: req.clientId, roles: ['anonymous'], certSubject: req.certSubject, authenticatedAtMs: clock.now() },
    }),
    isRevoked: () => false,
    close: async () => undefined,
  };
  const authorizer: Authorizer = { allowAll: true, generation: 0, check: () => ({ allowed: true }), receiveVerdicts: () => null, clientIdAllowed: () => true, close: async () => undefined };
  const broker = new Broker({ config, metrics, log, clock, authenticator, authorizer, retained: new MemoryRetainedStore() });
  broker.start();
  return {
    ctx: { broker, config, metrics, log, clock, authenticator, authorizer, limits: { authFailuresByAddress: new FailureLimiter(0) } },
    close: () => broker.stop(),
  };
}

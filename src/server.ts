// One Vigil node: listeners, the broker, identity, metrics and the HTTP endpoints.
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { createIdentity, type IdentityModule, type RevocationEntry } from './auth/index.js';
import { Broker } from './broker/broker.js';
import { systemClock, type Clock } from './clock.js';
import { SETTINGS, type Config } from './config.js';
import { createLogger, type Logger } from './log.js';
import { createMetrics, type Metrics } from './metrics.js';
import type { ChannelContext } from './protocol/channel.js';
import { RC } from './protocol/reason-codes.js';
import { FailureLimiter, RateLimiter } from './limits/rate-limiter.js';
import { ConcurrencyGate } from './limits/concurrency-gate.js';
import { MemoryRetainedStore } from './store/memory/retained.js';
import { ClusterNode } from './cluster/node.js';
import { ClusterBridge } from './cluster/bridge.js';
import { RedisRevocationList } from './cluster/revocations.js';
import { hasRedisTarget } from './redis/connection.js';
import { attachConnection, type ByteStream, type Untrack } from './transport/connection.js';
import { listenOn, listenersFromConfig, type MqttListener } from './transport/listeners.js';
import { createAdminHandler, type AdminHandler } from './http/admin.js';
import { localAdminDeps } from './http/admin-local.js';
import { willAuthorizedAtFire } from './broker/wills.js';
import { createConsole, type ConsoleParts } from './http/console-wiring.js';
import { createConsoleHandler, type ConsoleHandler } from './http/console-static.js';
import type { Channel } from './protocol/channel.js';

export interface ServerOptions {
  readonly clock?: Clock;
  readonly logger?: Logger;
}

export class VigilServer {
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly clock: Clock;
  broker!: Broker;
  private ctx!: ChannelContext;
  private mqttServer?: net.Server;
  private httpServer?: http.Server;
  private readonly sockets = new Set<Duplex>();
  private listeners: { listener: MqttListener; port: number }[] = [];
  private admin!: AdminHandler;
  private consolePages!: ConsoleHandler;
  private console?: ConsoleParts;
  private draining = false;
  private connectRate!: RateLimiter;
  identity!: IdentityModule;
  cluster?: ClusterNode;
  private bridge?: ClusterBridge;
  private revocations?: RedisRevocationList;

  constructor(readonly config: Config, options: ServerOptions = {}) {
    this.clock = options.clock ?? systemClock;
    this.log = options.logger ?? createLogger(config.logLevel, config.nodeId);
    this.metrics = createMetrics(config.nodeId);
  }

  get mqttPort(): number {
    return (this.mqttServer?.address() as AddressInfo | null)?.port ?? 0;
  }

  get metricsPort(): number {
    return (this.httpServer?.address() as AddressInfo | null)?.port ?? 0;
  }

  /** Port of the TLS / WebSocket listener, 0 when off. */
  listenerPort(name: 'tls' | 'ws'): number {
    return this.listeners.find((l) => l.listener.name === name)?.listener.port ?? 0;
  }

  /** Accepting clients: listeners up, not draining, and in a cluster a lease-holding owner with Redis reachable. */
  get ready(): boolean {
    if (this.draining || !this.mqttServer?.listening) return false;
    return !this.cluster || (this.cluster.membership.owner && this.cluster.redis.client.status === 'ready');
  }

  /** Lost the lease (Redis unreachable, or reaped): this node must not act for any client now. */
  private ownerChanged(owner: boolean, reason: string): void {
    this.log.warn({ owner, reason }, owner ? 'cluster ownership regained' : 'cluster ownership lost, closing every connection');
    if (owner) {
      // the lease came back without lapsing (no new member): settle what was closed meanwhile
      if (reason === 'renewed') void this.bridge?.rejoined(this.cluster!.member, this.cluster!.member);
      return;
    }
    // persistent sessions stay here, offline, with their routes: the rejoin keeps them unless
    // a reaper took them first (then it decides the wills and adopts them)
    this.bridge?.leaseLost();
    for (const c of [...this.broker.connections]) c.supersede(RC.SERVER_BUSY, 'node lost its cluster lease', true);
  }

  async start(): Promise<void> {
    const { config, log } = this;
    if (config.auth === 'none') log.warn('VIGIL_AUTH=none: anonymous clients are allowed');
    if (config.authFailuresPerUsername !== SETTINGS.authFailuresPerUsername.default) log.warn('VIGIL_AUTH_FAILURES_PER_USERNAME is deprecated and ignored: failures are limited per source address only (README, "Hostile traffic")');
    if (config.auth === 'jwt' && config.sessionTakeover === 'any') log.warn('VIGIL_SESSION_TAKEOVER=any: any authenticated client may take over another identity\'s client id, session and will');
    // cluster mode: built first so identity can share its revocation list; started below
    if (hasRedisTarget(config)) {
      this.cluster = new ClusterNode({
        config,
        metrics: this.metrics,
        log: log.child({ component: 'cluster' }),
        hooks: {
          // called with Redis's reply to a claim: nothing else is in progress, decide at once
          fireWill: (will) => this.broker.wills.fireNow(will),
          onOwnerChange: (owner, reason) => this.ownerChanged(owner, reason),
        },
      });
      this.revocations = new RedisRevocationList({
        redis: this.cluster.redis,
        keys: this.cluster.keys,
        log,
        onRevokedMetric: (kind) => this.metrics.revocationsTotal.inc({ kind }),
      });
      await this.revocations.start();
    }
    this.identity = await createIdentity(config, this.metrics, log, { revocations: this.revocations });
    const { authenticator, authorizer } = this.identity;
    this.identity.revocations.onRevoked((entry) => this.disconnectRevoked(entry));
    this.broker = new Broker({
      config,
      metrics: this.metrics,
      log,
      clock: this.clock,
      authenticator,
      authorizer,
      retained: this.cluster?.retained ?? new MemoryRetainedStore(),
    });
    if (this.cluster) {
      // the bridge attaches itself to the broker and to the cluster node (bus, reaping, rejoin)
      this.bridge = new ClusterBridge(this.broker, this.cluster, log.child({ component: 'cluster' }), this.metrics);
      await this.cluster.start();
    }
    this.ctx = {
      broker: this.broker,
      config,
      metrics: this.metrics,
      log,
      clock: this.clock,
      authenticator,
      authorizer,
      limits: {
        authFailuresByAddress: new FailureLimiter(config.authFailuresPerAddress),
        clusterConnects: this.cluster ? new ConcurrencyGate(config.clusterConnectsInFlight) : undefined,
      },
    };
    this.connectRate = new RateLimiter(config.connectRatePerAddress, config.connectRatePerAddress * 2);
    this.broker.start();
    const revocations = this.identity.revocations;
    // the console (fleet, wills, retained, identity, cluster): only with the admin API on
    this.console = config.adminToken ? createConsole({ config, broker: this.broker, clock: this.clock, identity: this.identity, cluster: this.cluster, log }) : undefined;
    const local = localAdminDeps({
      broker: this.broker,
      nodeId: config.nodeId,
      clock: this.clock,
      willAuthz: config.willAuthz,
      decide: (record) => willAuthorizedAtFire(record, { authenticator, authorizer, willAuthz: config.willAuthz }),
      revoke: (kind, value, ttlS) => {
        const options = { untilMs: ttlS ? this.clock.now() + ttlS * 1000 : undefined, note: 'admin API' };
        return kind === 'subject' ? revocations.revokeSubject(value, options) : revocations.revokeJti(value, options);
      },
      storedWill: this.console?.storedWill,
    });
    this.admin = createAdminHandler({ token: config.adminToken, log, deps: this.console ? this.console.withConsole(local) : local });
    this.consolePages = createConsoleHandler(config.adminToken !== '');
    // throws naming the file when a TLS certificate, key or CA cannot be read
    this.listeners = listenersFromConfig(config, { ctx: this.ctx, admit: (stream, name) => this.admit(stream, name), untrack: this.untrack });

    // noDelay: TCP_NODELAY set on the handle at accept, before the socket's JS setter exists
    this.mqttServer = net.createServer({ noDelay: true }, (socket) => this.acceptSocket(socket, 'tcp'));
    this.mqttServer.maxConnections = config.maxConnections;
    this.httpServer = http.createServer((req, res) => void this.handleHttp(req, res));
    await listenOn(this.mqttServer, config.mqttPort, config.bind, config.listenBacklog);
    for (const { listener, port } of this.listeners) await listener.listen(port, config.bind);
    await listenOn(this.httpServer, config.metricsPort, config.metricsBind);
    log.info({ mqttPort: this.mqttPort, metricsPort: this.metricsPort, auth: config.auth, cluster: hasRedisTarget(config) }, 'vigil listening');
  }

  /** Runs the MQTT protocol over any byte stream (a test's in-memory duplex, a WebSocket stream). */
  attachStream(stream: ByteStream, listener: string, certSubject?: string): Channel {
    return attachConnection(stream, this.ctx, listener, certSubject);
  }

  private acceptSocket(socket: net.Socket, listener: string): void {
    if (!this.admit(socket, listener)) {
      socket.destroy();
      return;
    }
    attachConnection(socket, this.ctx, listener, undefined, this.untrack);
  }

  /**
   * Every listener asks here: no new connections while draining or at the limit; tracked for
   * stop() until the transport, which every admitted stream is attached to, calls untrack.
   */
  private admit(stream: Duplex, _listener: string): boolean {
    if (this.draining) return false;
    // the address costs a getpeername call: only when the rate limit is on
    if (this.connectRate.enabled && !this.connectRate.take((stream as { remoteAddress?: string }).remoteAddress ?? 'unknown', this.clock.now())) {
      this.metrics.connectionsRefusedTotal.inc({ reason: 'connect_rate' });
      this.metrics.limitHitsTotal.inc({ limit: 'connect_rate' });
      return false;
    }
    if (this.sockets.size >= this.config.maxConnections) {
      this.metrics.connectionsRefusedTotal.inc({ reason: 'max_connections' });
      this.metrics.limitHitsTotal.inc({ limit: 'max_connections' });
      return false;
    }
    this.sockets.add(stream);
    return true;
  }

  /** Called by the transport when an admitted stream closes: one function for every stream, not a closure per connection. */
  private readonly untrack: Untrack = (stream) => void this.sockets.delete(stream);

  private async handleHttp(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    try {
      if (url.pathname === '/metrics') {
        const body = await this.metrics.registry.metrics();
        res.writeHead(200, { 'content-type': this.metrics.registry.contentType }).end(body);
      } else if (url.pathname === '/healthz') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'ok' }));
      } else if (url.pathname === '/readyz') {
        const ready = this.ready;
        res.writeHead(ready ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify({ ready }));
      } else if (this.consolePages(req, res, url.pathname)) {
        // the console's static files (/console/...)
      } else if (await this.admin(req, res)) {
        // answered by the admin API (/admin/...)
      } else {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'not found' }));
      }
    } catch (err) {
      this.log.error({ err: (err as Error).message, path: url.pathname }, 'http handler failed');
      if (!res.headersSent) res.writeHead(500).end();
    }
  }

  /** Graceful stop: refuse new sockets, tell 5.0 clients 0x8B, let writes flush, close. */
  async stop(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    this.mqttServer?.close();
    for (const c of [...this.broker.connections]) c.close(RC.SERVER_SHUTTING_DOWN, 'server shutting down');
    const deadline = Date.now() + this.config.shutdownGraceMs;
    while (this.sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.listeners.map(({ listener }) => listener.close()));
    if (this.bridge) await this.bridge.settle();
    else await Promise.all(this.broker.wills.flushAll());
    this.broker.stop();
    this.console?.stop();
    await this.revocations?.close();
    await this.cluster?.stop({ leave: true });
    await new Promise<void>((resolve) => (this.httpServer ? this.httpServer.close(() => resolve()) : resolve()));
    this.httpServer?.closeAllConnections();
    await this.identity.close();
  }

  /** A revoked subject or token loses its live connections; its wills are then denied at fire time. */
  private disconnectRevoked(entry: RevocationEntry): void {
    if (entry.kind === 'subject' && this.config.revokedRetained === 'drop') {
      const dropped = this.broker.dropRetainedOf(entry.value);
      this.log.info({ username: entry.value, dropped }, 'identity revoked, its retained messages deleted (VIGIL_REVOKED_RETAINED=drop)');
    }
    for (const c of [...this.broker.connections]) {
      const id = c.identity;
      if (!id) continue;
      if ((entry.kind === 'subject' && id.username === entry.value) || (entry.kind === 'jti' && id.jti === entry.value)) {
        this.log.info({ clientId: c.clientId, username: id.username, kind: entry.kind }, 'identity revoked, disconnecting');
        c.close(RC.NOT_AUTHORIZED, 'identity revoked');
      }
    }
  }
}
